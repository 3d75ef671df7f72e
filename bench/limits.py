"""Scenario ``limits``: what a per-type concurrency limit costs when it does not bind.

No-op tasks submitted over HTTP and run to their completed status by one worker, of a type
with no limit and of the same type with a limit far above the worker's max_jobs, rounds
interleaved (and their order rotated) in one run. A limited start is one transaction of its
own (advisory lock, count, append) where unlimited starts share the event log's batches.
"""

import os
import time
from typing import Any

from bench.common import (
    Outcome,
    Row,
    Run,
    backend_pids,
    count_status,
    cpu_seconds,
    median,
    ratio,
    submit_many,
    wait_for,
)
from bench.ticks import NOOP_FREE, NOOP_LIMITED, UNBINDING_LIMIT


async def _round(run: Run, url: str, task_type: str, n: int, concurrency: int
                 ) -> dict[str, Any]:
    pool = await run.pool()
    try:
        async def done() -> bool:
            return await count_status(pool, "completed") >= n

        t0 = time.perf_counter()
        ids, _, _ = await submit_many(url, [{"type": task_type, "params": {}}] * n,
                                      concurrency)
        ok = await wait_for(done, 300, 0.005)
        seconds = time.perf_counter() - t0
        completed = await count_status(pool, "completed")
        waited = await pool.fetchval("SELECT count(*) FROM task_events WHERE type = 'waiting'")
        return {"seconds": seconds, "done": completed, "submitted": len(ids), "waited": waited,
                "ok": ok and completed == n and len(ids) == n and waited == 0}
    finally:
        await pool.close()


async def limits(run: Run) -> Outcome:
    env, sz, out = run.env, run.sizes, Outcome()
    n, c = sz.throughput_tasks, sz.submit_concurrency
    web = await env.web("web-limits")
    workers = await env.workers(1, "worker-limits")
    rates: dict[str, list[float]] = {NOOP_FREE: [], NOOP_LIMITED: []}
    cpus: dict[str, list[float]] = {NOOP_FREE: [], NOOP_LIMITED: []}
    pool = await run.pool()
    try:
        for r in range(max(2, sz.rounds)):
            order = [NOOP_FREE, NOOP_LIMITED] if r % 2 == 0 else [NOOP_LIMITED, NOOP_FREE]
            for task_type in order:
                await env.reset()
                # CPU of every process doing the work: steadier than the rate on a busy host.
                pids = [web.pid, *(p.pid for p in workers), os.getpid(),
                        *await backend_pids(pool, wal_writers=True)]
                cpu0 = cpu_seconds(pids)
                res = await _round(run, web.url, task_type, n, c)
                late = [p for p in await backend_pids(pool, wal_writers=True) if p not in pids]
                res["cpu_us_per_task"] = (cpu_seconds(pids) - cpu0 + cpu_seconds(late)) / n * 1e6
                cpus[task_type].append(res["cpu_us_per_task"])
                res.update(type=task_type, round=r, tasks=n, tasks_per_s=n / res["seconds"])
                out.rounds.append(res)
                out.check(f"limits {task_type}: every task done, none waited", res["ok"])
                rates[task_type].append(res["tasks_per_s"])
                run.log(f"limits {task_type} round {r}: {res['tasks_per_s']:.0f} tasks/s")
    finally:
        await pool.close()
        env.stop([*workers, web])
    lim, free = median(rates[NOOP_LIMITED]), median(rates[NOOP_FREE])
    cpu_lim, cpu_free = median(cpus[NOOP_LIMITED]), median(cpus[NOOP_FREE])
    out.rows += [
        Row("7 limits", f"no-op tasks/s, limit {UNBINDING_LIMIT} (not binding), 1 worker",
            lim, "tasks/s", "no limit", free, ratio(lim, free), ">= 0.9x no limit",
            (ratio(lim, free) or 0) >= 0.9),
        Row("7 limits", "CPU per task, all processes, 1 worker", cpu_lim, "us", "no limit",
            cpu_free, ratio(cpu_lim, cpu_free)),
    ]
    out.notes.append("the same no-op task with and without a per-type limit, rounds "
                     "interleaved; POST /tasks over HTTP until completed in PostgreSQL")
    return out
