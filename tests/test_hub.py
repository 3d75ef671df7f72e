"""The hub's per-stream buffer: a slow consumer's progress is thinned (its stream reads what
was skipped from the database), then cut off — never blocks."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis

from service.deadlines import GRANULARITY
from service.hub import RESYNC, Hub, Subscription
from service.streams import StreamSpec, follow
from taskstream.core.events import Event
from taskstream.core.live import TextTracker, TokenFrame
from taskstream.core.settings import Settings


def ev(seq: int, etype: str = "progress", task: str = "t") -> Event:
    return Event(task, seq, seq, etype, "running", float(seq), None, None, 1,
                 datetime.now(UTC))


def hub_of(sub: Subscription) -> Hub:
    """A hub whose one subscription is ``sub``: a test pushes into it what Redis would."""

    class OneSubscription:
        @contextlib.asynccontextmanager
        async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
            yield sub

    return cast(Hub, OneSubscription())


async def test_progress_is_thinned_when_the_buffer_is_full() -> None:
    sub = Subscription("c", limit=3)
    for i in range(1, 4):
        sub.push(ev(i))
    sub.push(ev(4))
    sub.push(ev(5))  # both replace the newest queued progress event
    assert not sub.overflowed and len(sub) == 3
    got = [await sub.get() for _ in range(3)]
    assert [g.seq for g in got if isinstance(g, Event)] == [1, 2, 5]


async def test_lifecycle_event_that_does_not_fit_overflows_the_stream() -> None:
    sub = Subscription("c", limit=2)
    sub.push(ev(1))
    sub.push(ev(2))
    sub.push(ev(3, "completed"))  # never dropped silently: the stream closes instead
    assert sub.overflowed
    sub.push(ev(4))
    assert len(sub) == 2


async def test_resync_marker_is_delivered_in_order() -> None:
    sub = Subscription("c", limit=5)
    sub.push(ev(1))
    sub.push(RESYNC)
    assert [await sub.get(), await sub.get()][1] == RESYNC


async def test_follow_marks_each_burst_so_sse_writes_it_at_once() -> None:
    """``follow(flush=True)`` yields FLUSH only when the subscription's queue is empty: the
    frames that came in one burst are written together (one send), never held back."""
    sub = Subscription("c", limit=100)

    async def fetch(cursor: int, limit: int) -> list[Event]:
        return []

    spec = StreamSpec("c", 0, "seq", fetch, ends_on_terminal=True, keepalive=5,
                      tracker=TextTracker(cast(Redis, None), "ns"))  # no gap: no I/O
    for i in range(3):
        sub.push(TokenFrame("t", "s", 1, i, "x"))
    it = follow(hub_of(sub), spec, flush=True)
    got = [type(await anext(it)).__name__ for _ in range(4)]
    assert got == ["TokenFrame", "TokenFrame", "TokenFrame", "Flush"]
    for i in range(3, 5):
        sub.push(TokenFrame("t", "s", 1, i, "x"))
    sub.push(Event("t", 1, 1, "completed", "completed", 1.0, None, None, 1, datetime.now(UTC)))
    got = [type(x).__name__ async for x in it]
    assert got == ["TokenFrame", "TokenFrame", "Event"]  # the end follows at once


async def test_a_stream_reads_the_progress_its_full_buffer_skipped() -> None:
    """A burst of one task's progress fills the buffer: the stream still yields every event
    once, in order, reading those the buffer skipped from the database (a burst is not a
    reason to lose events; the chaos run's tenant streams hit this)."""
    sub = Subscription("c", limit=3)
    stored = [ev(i) for i in range(1, 4)]

    async def fetch(cursor: int, limit: int) -> list[Event]:
        return [e for e in stored if e.seq > cursor][:limit]

    spec = StreamSpec("c", 0, "seq", fetch, ends_on_terminal=True, keepalive=5)
    it = follow(hub_of(sub), spec)
    assert [e.seq for e in [await anext(it) for _ in range(3)]] == [1, 2, 3]  # replayed
    burst = [ev(i) for i in range(4, 9)]
    stored += burst  # durable before published
    for e in burst:  # 4..8 arrive at once; the buffer holds 3: 4, 5, then 8 (for 6, 7, 8)
        sub.push(e)
    assert len(sub) == 3 and not sub.overflowed
    assert [e.seq for e in [await anext(it) for _ in range(5)]] == [4, 5, 6, 7, 8]
    stored.append(Event("t", 9, 9, "completed", "completed", 9.0, None, None, 1,
                        datetime.now(UTC)))
    sub.push(stored[-1])
    assert [e.seq async for e in it] == [9]


async def test_an_idle_wait_ends_after_its_own_deadline_across_waits() -> None:
    """The idle deadline of each wait counts, not the first one registered: an item that
    ends a wait early leaves that wait's deadline behind, and the next wait still lasts
    its full ``idle`` (never shorter, at most a deadline bucket longer)."""
    loop = asyncio.get_running_loop()
    sub = Subscription("c", limit=3)
    t0 = loop.time()
    assert await sub.get(0.15) is None
    assert 0.15 <= loop.time() - t0 <= 0.15 + GRANULARITY + 0.1
    loop.call_later(0.05, sub.push, RESYNC)
    assert await sub.get(0.3) == RESYNC  # an item ends the wait early
    t1 = loop.time()
    assert await sub.get(0.4) is None  # its first deadline (t1 - 0.05 + 0.3) has passed by
    assert 0.4 <= loop.time() - t1 <= 0.4 + GRANULARITY + 0.1
    sub.close()


async def test_the_hub_counts_ended_subscriptions(settings: Settings) -> None:
    """What the heap freezer counts ended streams by: every closed subscription, however it
    ended."""
    hub = Hub(lambda: Redis.from_url(settings.redis_url),
              control_channel=f"{settings.namespace}:hubtest:control")
    await hub.start()
    try:
        channel = f"{settings.namespace}:hubtest:count"
        async with hub.subscribe(channel), hub.subscribe(channel):
            assert hub.ended == 0
        with contextlib.suppress(RuntimeError):
            async with hub.subscribe(channel):
                raise RuntimeError("a stream that failed")
        assert hub.ended == 3
    finally:
        await hub.close()
