"""The heartbeat does not wait for the sweep: a sweep that re-queues many tasks appends an
event per task, and a heartbeat queued behind it let a live worker's leases expire (the chaos
run failed a task as worker_lost three times while its worker was alive)."""

import asyncio
from typing import Any, cast

import asyncpg
import pytest
from arq.connections import ArqRedis

from taskstream.core.eventlog import EventLog
from taskstream.core.settings import Settings
from worker import sweeper
from worker.runtime import Runtime


async def test_heartbeats_go_on_while_a_sweep_is_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    beats = 0
    sweeps: list[bool] = []
    stuck, ten_beats = asyncio.Event(), asyncio.Event()

    async def heartbeat(pool: Any, runtime: Any, settings: Any) -> int:
        nonlocal beats
        beats += 1
        if beats >= 10:
            ten_beats.set()
        return 0

    async def sweep(pool: Any, arq: Any, eventlog: Any, settings: Any, *,
                    leases: bool = True) -> sweeper.SweepReport:
        sweeps.append(leases)
        await stuck.wait()  # never returns while the test watches
        return sweeper.SweepReport()

    monkeypatch.setattr(sweeper, "heartbeat_once", heartbeat)
    monkeypatch.setattr(sweeper, "sweep_once", sweep)
    settings = Settings(heartbeat_interval=0.01, sweep_interval=0.01, lease_seconds=2)
    loops = asyncio.create_task(sweeper.run_forever(
        cast(asyncpg.Pool, None), cast(ArqRedis, None), cast(EventLog, None),
        cast(Runtime, None), settings))
    try:
        await asyncio.wait_for(ten_beats.wait(), 10)
        assert sweeps == [False]  # one sweep, stuck; leases not judged before contact settled
    finally:
        loops.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loops
