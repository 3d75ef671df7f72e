"""A per-stream send timeout without a timer per send.

A stream's client that takes no bytes for ``timeout`` seconds (its TCP window full) is cut
off so it resumes with Last-Event-ID. Arming a timeout around every send (asyncio.timeout,
anyio's move_on_after) costs a timer handle per frame — about a fifth of a fan-out burst's
CPU at thousands of streams — although a send only ever waits when the server's write buffer
is full. The guard keeps one timer per stream instead, re-armed only when it fires: then, if
a send has been waiting for ``timeout`` seconds, it cancels the sending task and the send
raises ``SendTimeout`` in place of the cancellation.
"""

import asyncio

from starlette.types import Message, Send


class SendTimeout(TimeoutError):
    """The client did not take a frame within the send timeout."""


class SendGuard:
    __slots__ = ("_fired", "_send", "_since", "_task", "_timeout", "_timer")

    def __init__(self, send: Send, timeout: float) -> None:
        self._send = send
        self._timeout = timeout
        self._since: float | None = None  # when the send under way started
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    async def __call__(self, message: Message) -> None:
        loop = asyncio.get_running_loop()
        self._since = since = loop.time()
        if self._timer is None:
            self._task = asyncio.current_task()
            self._timer = loop.call_at(since + self._timeout, self._check)
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

    def _check(self) -> None:
        self._timer = None
        since = self._since
        if since is None or self._task is None:
            return  # no send waiting: the next send arms the timer again
        loop = asyncio.get_running_loop()
        if loop.time() >= since + self._timeout:
            self._fired = True
            self._task.cancel()
        else:
            self._timer = loop.call_at(since + self._timeout, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
