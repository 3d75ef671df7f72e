"""The hub's per-stream buffer: a slow consumer is coalesced, then cut off — never blocks."""

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis

from service.hub import RESYNC, Hub, Subscription
from service.streams import StreamSpec, follow
from taskstream.core.events import Event
from taskstream.core.live import TextTracker, TokenFrame


def ev(seq: int, etype: str = "progress", task: str = "t") -> Event:
    return Event(task, seq, seq, etype, "running", float(seq), None, None, 1,
                 datetime.now(UTC))


async def test_progress_is_coalesced_when_the_buffer_is_full() -> None:
    sub = Subscription("c", limit=3)
    for i in range(1, 4):
        sub.push(ev(i))
    sub.push(ev(4))
    sub.push(ev(5))  # both replace the newest queued progress event
    assert not sub.overflowed and len(sub) == 3
    got = [await sub.get() for _ in range(3)]
    assert [(g[0].seq, g[1]) for g in got if not isinstance(g, str)] == [
        (1, False), (2, False), (5, True)]


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

    class FakeHub:
        @contextlib.asynccontextmanager
        async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
            yield sub

    async def fetch(cursor: int, limit: int) -> list[Event]:
        return []

    spec = StreamSpec("c", 0, "seq", fetch, ends_on_terminal=True, keepalive=5,
                      tracker=TextTracker(cast(Redis, None), "ns"))  # no gap: no I/O
    for i in range(3):
        sub.push(TokenFrame("t", "s", 1, i, "x"))
    it = follow(cast(Hub, FakeHub()), spec, flush=True)
    got = [type(await anext(it)).__name__ for _ in range(4)]
    assert got == ["TokenFrame", "TokenFrame", "TokenFrame", "Flush"]
    for i in range(3, 5):
        sub.push(TokenFrame("t", "s", 1, i, "x"))
    sub.push(Event("t", 1, 1, "completed", "completed", 1.0, None, None, 1, datetime.now(UTC)))
    got = [type(x).__name__ async for x in it]
    assert got == ["TokenFrame", "TokenFrame", "Event"]  # the end follows at once
