"""The hub's per-stream buffer: a slow consumer is coalesced, then cut off — never blocks."""

from datetime import UTC, datetime

from service.hub import RESYNC, Subscription
from taskstream.core.events import Event


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
