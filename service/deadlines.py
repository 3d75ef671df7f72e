"""Many deadlines on one timer: a stream's keep-alive wait and its send timeout.

Each open stream waited with a timer of its own (its subscription's idle wait, its send
guard), and a timer on uvloop is a ``TimerHandle`` plus a libuv handle: ~1.2 KB of the ~25 KB
an idle ``lean`` stream holds (tracemalloc, 2,000 streams). Here the deadlines of a process
share one loop timer: they are kept in buckets of ``GRANULARITY`` seconds, and the timer is
armed for the earliest bucket. A deadline fires up to ``GRANULARITY`` late, never early.

An item stays registered until its deadline passes or it is discarded; moving a deadline
within its bucket costs a dict lookup. ``expire()`` is called once the time has come; it
decides for itself whether that still matters (its wait may have ended since).
"""

import asyncio
import logging
import math
from typing import Protocol

log = logging.getLogger(__name__)

#: Seconds per bucket: how late a deadline may fire.
GRANULARITY = 0.1


class Expiring(Protocol):
    def expire(self) -> None: ...


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._bucket_of: dict[Expiring, int] = {}
        self._buckets: dict[int, set[Expiring]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed = math.inf  # the bucket the timer is armed for

    def __len__(self) -> int:
        return len(self._bucket_of)

    def add(self, item: Expiring, when: float) -> None:
        """``item.expire()`` at ``when`` (loop time), or up to GRANULARITY later; replaces
        the item's earlier deadline."""
        key = math.ceil(when / GRANULARITY)
        old = self._bucket_of.get(item)
        if old == key:
            return
        if old is not None:
            self._leave(item, old)
        self._bucket_of[item] = key
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = bucket = set()
        bucket.add(item)
        if key < self._armed:
            self._arm(key)

    def ensure(self, item: Expiring, when: float) -> None:
        """Like ``add``, but an item already registered keeps its deadline: for deadlines
        that only move later (a stream's next wait, its next send), whose ``expire`` adds
        the item again when it fires early. One dict lookup per frame instead of a move
        between buckets."""
        if item not in self._bucket_of:
            self.add(item, when)

    def discard(self, item: Expiring) -> None:
        key = self._bucket_of.pop(item, None)
        if key is not None:
            self._leave(item, key)

    def _leave(self, item: Expiring, key: int) -> None:
        bucket = self._buckets[key]
        bucket.discard(item)
        if not bucket:
            del self._buckets[key]

    def _arm(self, key: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = key
        self._timer = self.loop.call_at(key * GRANULARITY, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed = -math.inf  # while firing, adds do not arm: the earliest is armed below
        now = self.loop.time()
        for key in sorted(k for k in self._buckets if k * GRANULARITY <= now):
            for item in self._buckets.pop(key):
                del self._bucket_of[item]
                try:
                    item.expire()  # may add the item again, to a later bucket
                except Exception:  # one item's bug must not cost the others their wake-up
                    log.exception("deadline of %r", item)
        self._armed = math.inf
        if self._buckets:
            self._arm(min(self._buckets))


_current: Deadlines | None = None


def of_running_loop() -> Deadlines:
    """The running loop's deadlines (one per process in a server; tests run several loops
    one after another)."""
    global _current
    loop = asyncio.get_running_loop()
    if _current is None or _current.loop is not loop:
        _current = Deadlines(loop)
    return _current
