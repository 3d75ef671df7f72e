"""Keep the cyclic garbage collector's full collections off the web process's live streams.

CPython 3.11 runs a full collection whenever a quarter more objects than at the last one have
reached the oldest generation, and a full collection walks every tracked object. A web
process holding thousands of streams holds hundreds of thousands of them, so opening or
churning streams set off pauses that grow with the streams held: at 5,000 lean streams each
full collection took 300-400 ms, during which no stream got a byte (bench latency scenario,
a tick's p99 of 457 ms). Most of those objects live for as long as their stream and die by
reference counting, which needs no collection.

So every ``interval`` seconds whatever is alive is frozen (``gc.freeze``, O(1)): collections
then walk only what was made since. A frozen object that later dies in a reference cycle
is not reclaimed while it stays frozen, so every ``full_interval`` seconds, and after every
``full_after`` ended streams, everything is unfrozen and collected once — one pause, logged
with what it freed.

Measured with 3 x 5,000 streams ended (bench/streams.py's tasks, then a full collection):
the lean response left 220 objects in cycles in all; sse-starlette's left ~200,000 per
5,000 streams (its task group's cancellations: tracebacks, frames, cells; ~5.4 KB by
``sys.getsizeof`` per ended stream: 54 MB after 10,000, collected in 1.6 s with
``gc.DEBUG_SAVEALL`` on). With sse-starlette the count of ended streams therefore bounds what
freezing holds back (the setting's default: 5,000 streams; with the lean response, off).
"""

import asyncio
import gc
import logging
import time
from collections.abc import Callable

from service.periodic import Periodic

log = logging.getLogger(__name__)


class HeapFreezer(Periodic):
    def __init__(self, interval: float, full_interval: float, *,
                 ended: Callable[[], int] = lambda: 0, full_after: int = 0) -> None:
        """``ended``: how many streams have ended so far (the hub's count); with
        ``full_after`` > 0, a full collection follows every that many of them."""
        super().__init__("heap-freezer", interval)
        self._full_interval = full_interval
        self._next_full: float | None = None  # loop time of the next full collection
        self._ended = ended
        self._full_after = full_after
        self._ended_at_full = 0  # ``ended()`` at the last full collection
        self.full_collections = 0
        #: What the last full collection freed: cycles that died while frozen.
        self.last_freed = 0

    def start(self) -> None:
        if self._full_interval > 0:
            self._next_full = asyncio.get_running_loop().time() + self._full_interval
        self._ended_at_full = self._ended()
        super().start()

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        due = self._next_full is not None and loop.time() >= self._next_full
        if not due and self._full_after > 0:
            due = self._ended() - self._ended_at_full >= self._full_after
        if due:
            self.collect_all()
        gc.freeze()

    def collect_all(self) -> int:
        """Unfreeze and collect everything (one full pause); returns the objects freed."""
        t0 = time.perf_counter()
        held = gc.get_freeze_count()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        if self._next_full is not None:  # the schedule starts again from this pause
            self._next_full = asyncio.get_running_loop().time() + self._full_interval
        self._ended_at_full = self._ended()
        self.full_collections += 1
        self.last_freed = freed
        log.info("full collection: %d objects were frozen, %d unreachable freed, %.0f ms",
                 held, freed, (time.perf_counter() - t0) * 1e3)
        return freed
