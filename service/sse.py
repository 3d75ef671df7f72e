"""The SSE wire format, and the response that writes it (``TASKSTREAM_SSE_RESPONSE``).

Every stream is an async iterator of ready-made frames (bytes): unnamed messages whose
``data:`` is the event JSON and whose ``id:`` is a sequence number, id-only messages, and
keep-alive comments. sse-starlette's ``ServerSentEvent`` encodes them with ``\\n`` line ends
(what curl and EventSource clients read). An event that the hub fans out to many
streams is encoded once per id field: encoding costs ~2 µs, passing bytes on ~0.15 µs.

Both responses send those bytes as they are, so they are the same on the wire:

* ``starlette`` (default): sse-starlette's ``EventSourceResponse`` — its disconnect and
  shutdown watchers — with its ping task off (``ping=0``): the keep-alive comes from the
  stream's own wait, which times out every ``stream_keepalive``. The send timeout is
  ``service.send_guard`` around the ASGI send (one timer per stream, not one per send).
* ``lean``: ``service.sse_lean``, one watcher task per stream: ~16 KB less per idle stream
  (35 vs 51 KB in the capacity bench), for processes that hold many thousands of streams.
"""

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import AppStatus, SendTimeoutError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.send_guard import SendGuard, SendTimeout
from service.sse_lean import LeanEventStream
from taskstream.core.events import Event, IdField
from taskstream.core.live import TOKEN_EVENT, TokenFrame
from taskstream.core.settings import Settings

log = logging.getLogger(__name__)

SEP = "\n"
KEEPALIVE = ServerSentEvent(comment="keep-alive", sep=SEP).encode()


def message(event_id: int, data: str | None = None) -> bytes:
    """An unnamed SSE message (an EventSource's ``onmessage`` receives it); id-only without
    data."""
    return ServerSentEvent(data, id=str(event_id), sep=SEP).encode()


@dataclass(slots=True)
class HubEvent(Event):
    """An event as the hub decodes it once and hands to every stream on its channel."""

    # Frames by id field ("seq" / "tenant_seq"), built once however many streams send it.
    frames: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)


def frame(ev: Event, id_field: IdField) -> bytes:
    """``ev`` as an unnamed SSE message whose id is its ``seq`` or its ``tenant_seq``."""
    if not isinstance(ev, HubEvent):
        return message(ev.position(id_field), ev.encode())  # a replayed row: one stream's
    cached = ev.frames.get(id_field)
    if cached is None:
        cached = ev.frames[id_field] = message(ev.position(id_field), ev.encode())
    return cached


def token_frame(frame: TokenFrame) -> bytes:
    """A token frame as a *named* SSE message (``event: token``) without an id: an
    ``onmessage`` listener never sees it, and the browser's Last-Event-ID stays the last
    durable event's."""
    if not frame.sse:
        frame.sse = ServerSentEvent(frame.encode(), event=TOKEN_EVENT, sep=SEP).encode()
    return frame.sse


def any_frame(item: Event | TokenFrame | None, id_field: IdField) -> bytes:
    if item is None:
        return KEEPALIVE
    if isinstance(item, TokenFrame):
        return token_frame(item)
    return frame(item, id_field)


class StarletteEventStream(EventSourceResponse):
    """sse-starlette's response with no ping task; a client that stops reading is cut off
    after ``send_timeout`` seconds (its TCP window full) and resumes with Last-Event-ID.

    The timeout is ours (``SendGuard`` around the ASGI send), not sse-starlette's
    ``send_timeout``, which arms a timer for every send."""

    media_type = "text/event-stream"  # read by FastAPI for the OpenAPI document

    def __init__(self, frames: AsyncIterator[bytes], status_code: int = 200,
                 send_timeout: float | None = None) -> None:
        super().__init__(frames, status_code=status_code, ping=0, sep=SEP)
        self.guard_timeout = send_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guard = None if self.guard_timeout is None else SendGuard(send, self.guard_timeout)
        try:
            await super().__call__(scope, receive, guard or send)
        except (SendTimeout, SendTimeoutError):
            # Returning with the response unfinished makes the server close the connection.
            log.warning("SSE client stopped reading for %ss; closing its stream",
                        self.guard_timeout)
        finally:
            if guard is not None:
                guard.close()


def server_exiting() -> None:
    """The server is shutting down: sse-starlette's shutdown watcher ends its streams (within
    its 0.5 s poll). Its own hooks miss here: uvicorn binds its signal handler before it
    imports a ``--factory`` app (so sse-starlette's patch of that handler comes too late), and
    ``service.app`` wraps the handler, which hides the server from its introspection."""
    AppStatus.should_exit = True


def event_stream(frames: AsyncIterator[bytes], settings: Settings) -> Response:
    """The configured SSE response for a stream's frames."""
    timeout = settings.stream_send_timeout or None
    if settings.sse_response == "lean":
        return LeanEventStream(frames, send_timeout=timeout)
    return StarletteEventStream(frames, send_timeout=timeout)
