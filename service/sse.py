"""A lean Server-Sent Events response: one task per stream plus one that waits for the
client to go away — instead of sse-starlette's task group of four per stream (stream, ping,
disconnect and shutdown watchers, on anyio). Measured by ``python -m bench`` (push latency with
thousands of streams, memory per idle stream).

The body is an async iterator of ready-made frames (``core.events.sse_message``,
``KEEPALIVE``). The
keep-alive comes from the iterator itself (the stream's own wait times out), so an idle
stream costs one sleeping coroutine and no timer task. When the server shuts down, uvicorn's
graceful-shutdown timeout cancels open streams; clients resume with Last-Event-ID.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

KEEPALIVE = b": keep-alive\n\n"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # tell nginx-style proxies not to buffer
]


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, frames: AsyncIterator[bytes], status_code: int = 200) -> None:
        # status_code is in the signature for FastAPI's OpenAPI generator, which reads it.
        super().__init__(status_code=status_code)
        self.frames = frames

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": HEADERS})
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
            async for chunk in self.frames:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise  # the server is shutting down: let it
            me.uncancel()  # the client left; that is a normal end for a stream
        finally:
            watcher.cancel()
            aclose = getattr(self.frames, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
