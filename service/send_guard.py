"""A per-stream send timeout without a timer per send.

A stream's client that takes no bytes for ``timeout`` seconds (its TCP window full) is cut
off so it resumes with Last-Event-ID. Arming a timeout around every send (asyncio.timeout,
anyio's move_on_after) costs a timer handle per frame — about a fifth of a fan-out burst's
CPU at thousands of streams — although a send only ever waits when the server's write buffer
is full. The guard registers each send's deadline with the process's deadlines
(``service.deadlines``: no timer of its own, ~0.5 KB less per stream); when one passes while
that send is still waiting, it cancels the sending task and the send raises ``SendTimeout``
in place of the cancellation.
"""

import asyncio

from starlette.types import Message, Send

from service.deadlines import Deadlines, of_running_loop


class SendTimeout(TimeoutError):
    """The client did not take a frame within the send timeout."""


class SendGuard:
    __slots__ = ("_deadlines", "_fired", "_send", "_since", "_task", "_timeout")

    def __init__(self, send: Send, timeout: float) -> None:
        self._send = send
        self._timeout = timeout
        self._since: float | None = None  # when the send under way started
        self._deadlines: Deadlines | None = None
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    async def __call__(self, message: Message) -> None:
        deadlines = self._deadlines
        if deadlines is None:
            self._deadlines = deadlines = of_running_loop()
            self._task = asyncio.current_task()
        self._since = since = deadlines.loop.time()
        deadlines.ensure(self, since + self._timeout)  # only moves later: expire re-adds
        try:
            await self._send(message)
        except asyncio.CancelledError:
            if not self._fired:
                raise
            self._fired = False
            assert self._task is not None
            self._task.uncancel()  # our cancellation, not the server's: it ends here
            raise SendTimeout from None
        finally:
            self._since = None

    def expire(self) -> None:
        since = self._since
        if since is None or self._task is None or self._deadlines is None:
            return  # no send waiting: the next send registers its deadline again
        if self._deadlines.loop.time() >= since + self._timeout:
            self._fired = True
            self._task.cancel()
        else:  # a later send's deadline, or a bucket's time rounded below it: again
            self._deadlines.add(self, since + self._timeout)

    def close(self) -> None:
        if self._deadlines is not None:
            self._deadlines.discard(self)
