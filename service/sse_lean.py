"""A lean Server-Sent Events response (``TASKSTREAM_SSE_RESPONSE=lean``): one task per stream
plus one that waits for the client to go away, instead of sse-starlette's anyio task group
(stream, disconnect and shutdown watchers). ``python -m bench --scenario capacity`` measures
the memory per idle stream of both.

It sends the frames of ``service.sse`` as they come, with sse-starlette's headers, so the two
responses are the same on the wire. An idle stream costs one sleeping coroutine and no timer
task: the keep-alive comes from the iterator (the stream's own wait times out). On SIGTERM the
hub ends every stream (``service.app``); clients resume with Last-Event-ID.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.send_guard import SendGuard, SendTimeout

log = logging.getLogger(__name__)

# What sse-starlette's EventSourceResponse sends, in its order.
HEADERS = [
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),  # tell nginx-style proxies not to buffer
    (b"content-type", b"text/event-stream; charset=utf-8"),
]


class LastChunk(bytes):
    """A stream's last bytes: the response ends the body with them, in one write instead of
    two (at the end of a task, N streams end at once; each write is a syscall)."""


class LeanEventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, frames: AsyncIterator[bytes], status_code: int = 200,
                 send_timeout: float | None = None) -> None:
        # status_code is in the signature for FastAPI's OpenAPI generator, which reads it.
        super().__init__(status_code=status_code)
        self.frames = frames
        self.send_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": HEADERS})
        guard = None if self.send_timeout is None else SendGuard(send, self.send_timeout)
        send = guard or send
        me = asyncio.current_task()
        assert me is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            me.cancel()

        watcher = asyncio.create_task(watch())
        try:
            last = b""
            async for chunk in self.frames:
                if type(chunk) is LastChunk:
                    last = chunk  # the iterator ends after it: aclose below finishes it
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                del chunk  # sent: an idle stream need not hold its last chunk (~0.5 KB)
            await send({"type": "http.response.body", "body": last, "more_body": False})
            # The teardown below waits behind the other streams woken with this one: when a
            # task ends, its N streams' last writes go out first, not one per teardown.
            await asyncio.sleep(0)
        except SendTimeout:
            # Returning with the response unfinished makes the server close the connection.
            log.warning("SSE client stopped reading for %ss; closing its stream",
                        self.send_timeout)
        except asyncio.CancelledError:
            if not gone:
                raise  # the server is shutting down: let it
            me.uncancel()  # the client left; that is a normal end for a stream
        finally:
            watcher.cancel()
            if guard is not None:
                guard.close()
            aclose = getattr(self.frames, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
