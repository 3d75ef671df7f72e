"""The TTL cache behind the API-key cache and the in-flight gauge."""

import pytest

from taskstream.core import ttlcache
from taskstream.core.ttlcache import TtlCache


def test_entries_expire_keep_their_expiry_on_replace_and_the_cache_stays_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(ttlcache.time, "monotonic", lambda: now[0])
    c: TtlCache[str, int] = TtlCache(ttl=1.0, max_entries=3)
    c.put("a", 1)
    assert c.get("a") == 1 and c.get("b") is None
    now[0] += 0.6
    c.replace("a", 2)
    c.replace("b", 5)  # not cached: nothing
    assert c.get("a") == 2 and c.get("b") is None
    now[0] += 0.6  # 1.2 s after the put: expired, although replaced since
    assert c.get("a") is None
    for k in "wxyz":
        c.put(k, 0)
    c.put("last", 9)  # past max_entries: cleared, then stored
    assert c.get("w") is None and c.get("last") == 9


async def test_the_inflight_gauge_reads_once_for_concurrent_submissions() -> None:
    """At an expiry, the submissions that arrive while the count is read share that one
    read, and each admission then counts on top of it."""
    import asyncio

    from service.limits import InflightGauge

    reads = 0

    async def read(tenant: str) -> int:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return 7

    gauge = InflightGauge(ttl=60)
    counts = await asyncio.gather(*(gauge.count("t", read) for _ in range(32)))
    assert counts == [7] * 32 and reads == 1
    gauge.admitted("t", 2)
    assert await gauge.count("t", read) == 9 and reads == 1
