"""The fault schedule, and a sampler that knows which worker runs which attempt.

Within the chaos window of ``duration`` seconds: a random worker is SIGKILLed every
``kill_every`` seconds and restarted; at fixed fractions of the window Redis restarts (its
data, the queue included, is lost), PostgreSQL stops (fast) for ``pg_down`` seconds, PostgreSQL
crashes (``pg_ctl stop -m immediate``, then recovery on start), and one busy worker is
SIGSTOPped past its lease, then resumed, and one web process is SIGKILLed with streams open
and restarted on its port. Workers and web processes that exit without being told to are
noticed (and restarted) every half second.
"""

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg

from chaos.deployment import Deployment


@dataclass(slots=True)
class FaultPlan:
    kill_every: tuple[float, float] | None = (2.0, 5.0)
    max_kills: int | None = None
    kill_from: float = 0.05  # fractions of the window
    redis_restart_at: float | None = 0.25
    redis_down: float = 2.0
    pg_stop_at: float | None = 0.45
    pg_down: float = 5.0
    pg_crash_at: float | None = 0.62
    pause_at: float | None = 0.78
    pause_for: float = 4.5  # > lease (2 s) + a sweep (0.5 s), with margin
    web_kill_at: float | None = 0.55  # SIGKILL a web process with streams open
    web_down: float = 1.0


@dataclass
class Sampler:
    """Polls PostgreSQL for running tasks: (task_id, attempt) -> worker_id, as last seen."""

    pool: asyncpg.Pool
    owners: dict[tuple[str, int], str] = field(default_factory=dict)
    running: dict[str, tuple[int, str]] = field(default_factory=dict)  # task -> (attempt, wid)

    async def run(self, interval: float = 0.2) -> None:
        while True:
            with contextlib.suppress(Exception):  # PostgreSQL away: try again next tick
                rows = await self.pool.fetch(
                    "SELECT task_id, attempts, worker_id FROM tasks WHERE status = 'running'")
                self.running = {str(r["task_id"]): (r["attempts"], r["worker_id"] or "")
                                for r in rows}
                for tid, (attempt, wid) in self.running.items():
                    self.owners[(tid, attempt)] = wid
            await asyncio.sleep(interval)

    def busy_pids(self) -> dict[int, int]:
        """pid -> number of tasks it runs (worker ids are host:pid:random)."""
        out: dict[int, int] = {}
        for _, wid in self.running.values():
            pid = worker_pid(wid)
            if pid is not None:
                out[pid] = out.get(pid, 0) + 1
        return out


def worker_pid(worker_id: str) -> int | None:
    parts = worker_id.split(":")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


@dataclass
class Chaos:
    dep: Deployment
    plan: FaultPlan
    sampler: Sampler
    rng: random.Random
    notes: list[str] = field(default_factory=list)
    paused_attempts: list[tuple[str, int]] = field(default_factory=list)

    async def run(self, duration: float) -> None:
        t0 = time.monotonic()
        p = self.plan
        once: list[tuple[float | None, Callable[[], Awaitable[None]]]] = [
            (p.redis_restart_at, lambda: self.dep.restart_redis(p.redis_down)),
            (p.pg_stop_at, lambda: self.dep.stop_postgres("fast", p.pg_down)),
            (p.pg_crash_at, lambda: self.dep.stop_postgres("immediate", 0.0)),
            (p.pause_at, self._pause),
            (p.web_kill_at, lambda: self.dep.kill_web(0, p.web_down)),
        ]
        reaper = asyncio.create_task(self._reaper())
        try:
            async with asyncio.TaskGroup() as tg:
                for frac, fn in once:
                    if frac is not None:
                        tg.create_task(self._at(t0 + frac * duration, fn))
                tg.create_task(self._killer(t0, duration))
        finally:
            reaper.cancel()
            await asyncio.gather(reaper, return_exceptions=True)
        self.notes.extend(await self.dep.reap())

    async def _at(self, when: float, fn: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(max(0.0, when - time.monotonic()))
        await fn()

    async def _killer(self, t0: float, duration: float) -> None:
        p = self.plan
        if p.kill_every is None:
            return
        await asyncio.sleep(p.kill_from * duration)
        kills = 0
        while p.max_kills is None or kills < p.max_kills:
            slot = self._victim()
            if slot is not None:
                await self.dep.kill_worker(slot, self.rng.uniform(0.3, 1.0))
                kills += 1
            wait = self.rng.uniform(*p.kill_every)
            if time.monotonic() + wait > t0 + duration:
                return
            await asyncio.sleep(wait)

    def _victim(self, busy_only: bool = False) -> int | None:
        """A random live worker slot, preferring ones that are running tasks right now."""
        busy = self.sampler.busy_pids()
        slots = [s for s in range(len(self.dep.worker_procs))
                 if s not in self.dep.paused and self.dep.worker_pid(s) is not None]
        loaded = [s for s in slots if busy.get(self.dep.worker_pid(s) or -1)]
        if busy_only:
            return max(loaded, key=lambda s: busy[self.dep.worker_pid(s) or -1], default=None)
        pool = loaded or slots
        return self.rng.choice(pool) if pool else None

    async def _pause(self) -> None:
        slot = None
        for _ in range(50):  # wait (up to 5 s) for a worker with tasks in hand
            slot = self._victim(busy_only=True)
            if slot is not None:
                break
            await asyncio.sleep(0.1)
        if slot is None:
            self.notes.append("pause skipped: no worker was running a task")
            return
        pid = self.dep.worker_pid(slot)
        self.paused_attempts = [(tid, a) for tid, (a, wid) in self.sampler.running.items()
                                if worker_pid(wid) == pid]
        await self.dep.pause_worker(slot, self.plan.pause_for)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.notes.extend(await self.dep.reap())
