"""SSE routes: one task's progress, or every task of the caller on one connection.

Each message is an unnamed SSE event (an EventSource's ``onmessage`` receives it) whose
``data:`` is the event JSON — also a snapshot with ``task_id, status, progress, result`` —
and whose ``id:`` is a short sequence number, so a reconnecting EventSource resumes with
Last-Event-ID.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, WebSocket

from service import sse
from service.auth import Credentials, Owner, TicketQuery, stream_caller
from service.deps import Res, Resources
from service.errors import BadRequest, Unavailable
from service.hub import HubUnavailable
from service.routes.tasks import ERRORS
from service.schemas import TicketOut, TicketRequest
from service.sse import StarletteEventStream
from service.sse_lean import LastChunk
from service.stale import TASK_SOURCE, TENANT_SOURCE
from service.streams import Fetch, Flush, Snapshot, StreamSpec, follow
from service.tasks import load_task
from service.websocket import Connection, authenticate
from taskstream.core import auth, live, store
from taskstream.core.constants import task_channel, tenant_channel
from taskstream.core.db import TRANSIENT_DB_ERRORS
from taskstream.core.events import Event, IdField
from taskstream.core.states import is_terminal

router = APIRouter(tags=["streams"])

#: A stream writes what it has gathered once this much is waiting (or its queue is empty).
BATCH_BYTES = 32 * 1024

LastEventIdHeader = Annotated[str | None, Header(alias="Last-Event-ID")]
TokensQuery = Annotated[
    str | None,
    Query(description='Token cursor: the model text you already hold, as JSON '
                      '`{"<stream>": [attempt, offset]}`; the stream sends each text from there '
                      'on. Without it a live text is sent from offset 0 (the text so far).',
          max_length=4000),
]
LastEventIdQuery = Annotated[
    str | None,
    Query(description="For clients that cannot set headers (a native EventSource's first "
                      "connect). The Last-Event-ID header wins when both are present."),
]
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
          "description": "An SSE stream of task events."},
    204: {"description": "Nothing more to send: the task finished and the client has it all."},
    **ERRORS,
}


def cursor_from(header: str | None, query: str | None) -> int:
    """The resume cursor: a Last-Event-ID is a short decimal sequence number we sent."""
    raw = header if header is not None else query
    if raw is None or raw == "":
        return 0
    if len(raw) > 19 or not raw.isascii() or not raw.isdigit():
        raise BadRequest("Last-Event-ID must be a decimal event sequence number")
    return int(raw)


def open_stream(res: Resources, tenant: str, spec: StreamSpec, id_field: IdField, *,
                announce_cursor: bool = False) -> Response:
    """The SSE response for one stream; 503 or 429 before it starts if it cannot be held."""
    if not res.hub.connected:
        raise Unavailable("live updates are briefly unavailable; retry")
    res.streams.check(tenant)

    async def frames() -> AsyncIterator[bytes]:
        with res.streams.hold(tenant):
            if announce_cursor:
                # An id-only message: no onmessage fires, but the browser (and our client)
                # records it, so a drop before the first event resumes from here, not "now".
                yield sse.message(spec.cursor)
            # Frames that came in one burst go out in one write: at 1,000 streams x 20 token
            # frames/s a send per frame (ASGI send, cancel scope, syscall) is most of the
            # web's CPU, and a stream that fell behind catches up in a few writes.
            buf: list[bytes] = []
            size = 0
            try:
                async with contextlib.aclosing(follow(res.hub, spec, flush=True)) as events:
                    async for ev in events:
                        if isinstance(ev, Flush):
                            if buf:
                                yield b"".join(buf)
                                buf.clear()
                                size = 0
                            continue
                        frame = sse.any_frame(ev, id_field)
                        buf.append(frame)
                        size += len(frame)
                        if isinstance(ev, Event) and spec.ends_with(ev):
                            # The stream's end goes out while its subscription is still
                            # open: the unsubscribe (for a channel's last stream, a write to
                            # Redis) comes after the write, not before it. When a task ends,
                            # its N streams' writes then come before their N teardowns.
                            yield LastChunk(b"".join(buf))
                            # sse-starlette asks for more (the lean response closes the
                            # iterator instead, and waits as this does): the other streams
                            # woken with this one write their ends before it tears down.
                            await asyncio.sleep(0)
                            return
                        if size >= BATCH_BYTES:
                            yield b"".join(buf)
                            buf.clear()
                            size = 0
            except HubUnavailable:
                pass  # Redis went away as we subscribed: end; the client resumes
            except TRANSIENT_DB_ERRORS:
                pass  # PostgreSQL went away during a catch-up: end; the client resumes
            if buf:
                yield LastChunk(b"".join(buf))

    return sse.event_stream(frames(), res.settings)


@router.get("/tasks/{task_id}/stream", response_class=StarletteEventStream,
            responses=SSE_RESPONSE)
async def task_stream(task_id: str, res: Res, creds: Credentials,
                      last_event_id_header: LastEventIdHeader = None,
                      last_event_id: LastEventIdQuery = None,
                      ticket: TicketQuery = None, tokens: TokensQuery = None) -> Response:
    """Live events of one task; ends after its terminal event. Model output comes as named
    ``token`` events (``{task_id, stream, attempt, offset, delta}``, no id) between them."""
    owner = (await stream_caller(res, creds, ticket, task_id)).tenant
    cursor = cursor_from(last_event_id_header, last_event_id)
    spec = await task_spec(res, owner, task_id, cursor, tokens)
    if spec is None:
        return Response(status_code=204)  # stops a reconnecting EventSource for good
    return open_stream(res, owner, spec, IdField.SEQ)


async def task_spec(res: Resources, owner: str, task_id: str, cursor: int,
                    tokens: str | None) -> StreamSpec | None:
    """One task's stream from ``cursor`` (None: it finished and the client has it all)."""
    task = await load_task(res, owner, task_id)
    if cursor > task.last_seq:
        raise BadRequest(f"Last-Event-ID {cursor} is ahead of this task's last event")
    if is_terminal(task.status) and cursor >= task.last_seq:
        return None
    tracker, snapshot = token_lane(res, task.task_id, task.attempts, tokens)
    pool = res.pool

    async def fetch(after: int, limit: int) -> list[Event]:
        return await store.events_after(pool, task.task_id, after, limit)

    return _spec(res, channel=task_channel(res.settings.namespace, task.task_id),
                 cursor=cursor, id_field=IdField.SEQ, fetch=fetch, ends_on_terminal=True,
                 tracker=tracker, snapshot=snapshot, source=(TASK_SOURCE, task.task_id))


def _spec(res: Resources, *, channel: str, cursor: int, id_field: IdField, fetch: Fetch,
          ends_on_terminal: bool, tracker: live.TextTracker, source: tuple[str, str],
          snapshot: Snapshot | None = None) -> StreamSpec:
    return StreamSpec(
        channel=channel, cursor=cursor, id_field=id_field, fetch=fetch,
        ends_on_terminal=ends_on_terminal, page=res.settings.stream_replay_page,
        lifetime=res.settings.stream_max_lifetime, keepalive=res.settings.stream_keepalive,
        tracker=tracker, snapshot=snapshot, source=source,
    )


def token_lane(res: Resources, task_id: str, attempt: int,
               tokens: str | None) -> tuple[live.TextTracker, Snapshot]:
    """A stream's token tracker (seeded with the client's token cursor) and the snapshot of
    the task's live texts."""
    try:
        held = live.parse_cursor(tokens)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    ns = res.settings.namespace
    tracker = live.TextTracker(res.arq, ns)
    tracker.seed_attempt(task_id, attempt)
    for stream, (att, offset) in held.items():
        tracker.seed(task_id, stream, att, offset)

    async def snapshot() -> list[live.TokenFrame]:
        return await live.snapshot(res.arq, ns, task_id, attempt)

    return tracker, snapshot


@router.get("/stream", response_class=StarletteEventStream, responses=SSE_RESPONSE)
async def tenant_stream(res: Res, creds: Credentials,
                        last_event_id_header: LastEventIdHeader = None,
                        last_event_id: LastEventIdQuery = None,
                        ticket: TicketQuery = None) -> Response:
    """Every event of every task of the caller, on one connection (ids: ``tenant_seq``),
    with the token frames of their text streams (a text already under way is sent from
    offset 0 at its next frame).

    Without a Last-Event-ID it starts from now; with one it resumes after it.
    """
    owner = (await stream_caller(res, creds, ticket, "*")).tenant
    cursor = cursor_from(last_event_id_header, last_event_id)
    from_now = last_event_id_header is None and last_event_id is None
    spec = await tenant_spec(res, owner, None if from_now else cursor)
    return open_stream(res, owner, spec, IdField.TENANT_SEQ, announce_cursor=from_now)


async def tenant_spec(res: Resources, owner: str, cursor: int | None) -> StreamSpec:
    """The tenant's stream after ``cursor`` (None: from now)."""
    pool = res.pool
    last = await store.tenant_last_seq(pool, owner)
    if cursor is None:
        cursor = last
    elif cursor > last:
        raise BadRequest(f"Last-Event-ID {cursor} is ahead of your last event")

    async def fetch(after: int, limit: int) -> list[Event]:
        return await store.tenant_events_after(pool, owner, after, limit)

    async def attempt_of(task_id: str) -> int | None:
        return await store.task_attempt(pool, task_id, owner)

    # Frames of a task it has seen no attempt of wait for its attempt (live.TextTracker).
    tracker = live.TextTracker(res.arq, res.settings.namespace, attempt_of)
    return _spec(res, channel=tenant_channel(res.settings.namespace, owner), cursor=cursor,
                 id_field=IdField.TENANT_SEQ, fetch=fetch, ends_on_terminal=False,
                 tracker=tracker, source=(TENANT_SOURCE, owner))


@router.post("/stream-tickets", response_model=TicketOut, responses=ERRORS)
async def stream_ticket(body: TicketRequest, res: Res, owner: Owner) -> dict[str, Any]:
    """A short-lived signed ticket that lets a browser's EventSource (which cannot send
    headers) open one task's stream, or the tenant stream: ``?ticket=...``."""
    if body.task_id is not None:
        task = await load_task(res, owner, body.task_id)
        scope, url = task.task_id, f"/tasks/{task.task_id}/stream"
    else:
        scope, url = "*", "/stream"
    ttl = res.settings.stream_ticket_ttl
    ticket = auth.mint_ticket(res.signing_key, owner, scope, ttl)
    return {"ticket": ticket, "expires_in": ttl, "stream_url": f"{url}?ticket={ticket}"}


@router.websocket("/ws")
async def websocket(ws: WebSocket) -> None:
    """Several tasks' streams (or the tenant's) on one WebSocket, with commands; see
    ``service.websocket`` for the messages."""
    res: Resources = ws.app.state.resources
    who = await authenticate(ws, res)
    if who is None:
        return
    await ws.accept()
    await Connection(ws, res, who[0], who[1], task_spec, tenant_spec).run()
