"""Live event streams: subscribe, then replay, then forward — missing nothing, repeating nothing.

One algorithm serves both the per-task stream (cursor = the task's ``seq``) and the
tenant-wide stream (cursor = the tenant's ``tenant_seq``); both counters are gap-free and
follow commit order, so a gap in what arrives live means a lost pub/sub message, filled from
PostgreSQL. While a stream waits it holds no database connection and runs no query.

Token frames of the live lane (``core.live``) ride the same channels; a stream with a
``tracker`` passes each character on once (gaps filled from the lane's text so far) and, with
a ``snapshot``, starts with the text so far of the task's live text streams.
"""

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from service.hub import CLOSE, RESYNC, Hub
from taskstream.core.events import Event, IdField
from taskstream.core.live import TextTracker, TokenFrame

log = logging.getLogger(__name__)

Fetch = Callable[[int, int], Awaitable[list[Event]]]
Snapshot = Callable[[], Awaitable[list[TokenFrame]]]


class Flush:
    """Yielded by ``follow(..., flush=True)`` when nothing more is queued: the caller may
    write what it has gathered in one send (one write per burst, not per frame)."""

    __slots__ = ()


FLUSH = Flush()


@dataclass(slots=True)
class StreamSpec:
    channel: str
    cursor: int
    id_field: IdField  # the SSE id and resume cursor
    fetch: Fetch  # events after a cursor, from PostgreSQL, in order
    ends_on_terminal: bool
    page: int = 1000
    lifetime: float | None = None  # then end; the client resumes with Last-Event-ID
    keepalive: float = 15.0  # yield None after this long without an event
    tracker: TextTracker | None = None  # None: token frames are not sent
    snapshot: Snapshot | None = None  # the text so far, sent after the catch-up
    #: ("task", task_id) or ("tenant", owner): what ``service.stale`` compares with the
    #: database's last position.
    source: tuple[str, str] | None = None

    def key(self, ev: Event) -> int:
        return ev.position(self.id_field)

    def ends_with(self, ev: Event) -> bool:
        """Whether ``ev`` is the stream's last event (a task stream ends at its terminal)."""
        return self.ends_on_terminal and ev.terminal


async def follow(hub: Hub, spec: StreamSpec, *, flush: bool = False
                 ) -> AsyncGenerator[Event | TokenFrame | Flush | None, None]:
    """Yield events in order, and None when the stream has been idle for ``keepalive``
    seconds; returns after a terminal event (task streams), on overflow, or at the end of
    its lifetime. With ``flush``, also ``FLUSH`` whenever the subscription's queue is empty
    (before waiting for more), so the caller can batch what came in one burst."""
    cursor = spec.cursor
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.lifetime if spec.lifetime else None
    async with hub.subscribe(spec.channel) as sub:
        sub.source = spec.source
        # Catch up from the database: anything committed before the subscription took hold.
        async for ev in _fill(spec, cursor):
            if isinstance(ev, TokenFrame):
                yield ev
                continue
            cursor = spec.key(ev)
            yield ev
            if spec.ends_with(ev):
                return
        async for frame in _snapshot(spec):
            yield frame
        while True:
            wait = spec.keepalive
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    return
            if flush and not len(sub):
                yield FLUSH
            sub.position = cursor
            item = await sub.get(wait)
            if item is None:
                yield None  # idle: the response writes a keep-alive comment
                continue
            if item == CLOSE:
                return
            if sub.overflowed:
                log.info("stream on %s overflowed; closing so the client resumes",
                         spec.channel)
                return
            if isinstance(item, TokenFrame):
                if spec.tracker is not None:
                    frames = spec.tracker.take(item)  # no I/O unless there is a gap
                    for frame in frames if frames is not None else \
                            await spec.tracker.accept(item):
                        yield frame
                continue
            if item == RESYNC:
                live: list[Event] = []
            else:
                assert isinstance(item, Event)
                ev = item
                pos = spec.key(ev)
                if pos <= cursor:
                    continue  # already sent (replay overlap or duplicate)
                if pos == cursor + 1:
                    live = [ev]
                else:  # a gap (a lost message, or progress dropped from a full buffer):
                    live = []  # fetch from the database instead
            if not live:
                async for ev in _fill(spec, cursor):
                    if isinstance(ev, TokenFrame):
                        yield ev
                        continue
                    cursor = spec.key(ev)
                    yield ev
                    if spec.ends_with(ev):
                        return
                if item == RESYNC:  # token frames may have been lost too
                    async for frame in _snapshot(spec):
                        yield frame
                continue
            for ev in live:
                cursor = spec.key(ev)
                if spec.tracker is not None:
                    rest = spec.tracker.seen_event(ev.task_id, ev.type, ev.attempt, ev.data)
                    if rest is not None:
                        yield rest
                yield ev
                if spec.ends_with(ev):
                    return


async def _snapshot(spec: StreamSpec) -> AsyncIterator[TokenFrame]:
    if spec.tracker is None or spec.snapshot is None:
        return
    try:
        frames = await spec.snapshot()
    except (RedisError, OSError) as exc:
        log.warning("live lane snapshot failed (%s); tokens continue from the next frame", exc)
        return
    for frame in frames:
        for out in await spec.tracker.accept(frame):
            yield out


async def _fill(spec: StreamSpec, cursor: int) -> AsyncIterator[Event | TokenFrame]:
    while True:
        events = await spec.fetch(cursor, spec.page)
        for ev in events:
            cursor = spec.key(ev)
            if spec.tracker is not None:
                rest = spec.tracker.seen_event(ev.task_id, ev.type, ev.attempt, ev.data)
                if rest is not None:
                    yield rest
            yield ev
        if len(events) < spec.page:
            return
