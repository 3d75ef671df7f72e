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
is not reclaimed while it stays frozen, so every ``full_interval`` seconds everything is
unfrozen and collected once — one pause, on a schedule, logged with what it freed.

Measured with 3 x 5,000 streams ended (bench/streams.py's tasks, then a full collection):
the lean response left 220 objects in cycles in all; sse-starlette's left ~200,000 per
5,000 streams (its task group's cancellations: exceptions, tracebacks, frames), which is why
the setting's default freezes only with the lean response.
"""

import asyncio
import gc
import logging
import time

from service.periodic import Periodic

log = logging.getLogger(__name__)


class HeapFreezer(Periodic):
    def __init__(self, interval: float, full_interval: float) -> None:
        super().__init__("heap-freezer", interval)
        self._full_interval = full_interval
        self._next_full: float | None = None  # loop time of the next full collection
        self.full_collections = 0
        #: What the last full collection freed: cycles that died while frozen.
        self.last_freed = 0

    def start(self) -> None:
        if self._full_interval > 0:
            self._next_full = asyncio.get_running_loop().time() + self._full_interval
        super().start()

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        if self._next_full is not None and loop.time() >= self._next_full:
            self.collect_all()
            self._next_full = loop.time() + self._full_interval
        gc.freeze()

    def collect_all(self) -> int:
        """Unfreeze and collect everything (one full pause); returns the objects freed."""
        t0 = time.perf_counter()
        held = gc.get_freeze_count()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self.full_collections += 1
        self.last_freed = freed
        log.info("full collection: %d objects were frozen, %d unreachable freed, %.0f ms",
                 held, freed, (time.perf_counter() - t0) * 1e3)
        return freed
