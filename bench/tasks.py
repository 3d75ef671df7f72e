"""Scenarios 1, 2, 5, 6: throughput, progress events, submission, scale-out."""

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from arq.connections import RedisSettings, create_pool
from redis.asyncio import Redis

from bench import celery_env
from bench.common import (
    Outcome,
    Row,
    Run,
    backend_pids,
    count_status,
    cpu_seconds,
    host_port,
    median,
    percentile,
    quiet_gc,
    ratio,
    submit_many,
    wait_for,
)
from bench.env import BenchEnv
from bench.net import PubSubCounter, SSEPool
from bench.streams import WORKER_ENV, check_streams, start_ticks
from taskstream.core.settings import Settings
from taskstream.devservices.processes import ROOT, Proc

NOOP = {"type": "noop", "params": {}}


class CeleryPeer:
    """Celery in its own venv, driven over stdin/stdout (``bench.celery_peer``)."""

    def __init__(self, env: BenchEnv, workers: int) -> None:
        self.env, self.workers = env, workers
        self.prefix = f"bench:{env.namespace}:celery{workers}"
        self.p: subprocess.Popen[str] | None = None

    async def start(self) -> None:
        py = await asyncio.to_thread(celery_env.ensure)
        e = {k: v for k, v in self.env.env().items() if not k.startswith("VIRTUAL_ENV")}
        e.update(BENCH_CELERY_BROKER=self.env.baseline_redis_url,
                 BENCH_CELERY_PREFIX=self.prefix, BENCH_CELERY_WORKERS=str(self.workers),
                 BENCH_CELERY_POOL="threads",
                 BENCH_CELERY_CONCURRENCY=str(Settings().worker_max_jobs))
        self.p = await asyncio.to_thread(
            _spawn_peer, [str(py), "-m", "bench.celery_peer"], e,
            self.env.logdir / f"{self.env.db_name}-celery{self.workers}.log")
        await self._line(90)

    async def _line(self, within: float) -> dict[str, Any]:
        assert self.p is not None and self.p.stdout is not None
        while True:
            line = await asyncio.wait_for(asyncio.to_thread(self.p.stdout.readline), within)
            if not line:
                raise RuntimeError("celery peer exited; see its log in bench/results/logs")
            if line.startswith("{"):
                out: dict[str, Any] = json.loads(line)
                return out

    async def run(self, n: int) -> dict[str, Any]:
        assert self.p is not None and self.p.stdin is not None
        self.p.stdin.write(f"run {n}\n")
        self.p.stdin.flush()
        return await self._line(600)

    def close(self) -> None:
        if self.p is None or self.p.poll() is not None:
            return
        assert self.p.stdin is not None
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
            self.p.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()
            self.p.wait()


def _spawn_peer(args: list[str], env: dict[str, str], log: Path) -> "subprocess.Popen[str]":
    with open(log, "ab") as fh:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=fh, text=True,
                                start_new_session=True)


class ArqPeer:
    """Raw arq: a no-op job enqueued straight into Redis, the product's worker settings."""

    def __init__(self, env: BenchEnv, workers: int) -> None:
        self.env, self.workers = env, workers
        self.prefix = f"bench:{env.namespace}:arq{workers}"
        self.queue = f"{self.prefix}:queue"
        self.procs: list[Proc] = []
        self.redis = Redis.from_url(env.baseline_redis_url)

    async def start(self) -> None:
        s = Settings()
        self.procs = [self.env.spawn(
            f"arq{self.workers}-{i}",
            [self.env.python, "-m", "bench.entry", "arq-worker", self.env.baseline_redis_url,
             self.queue, self.prefix, str(s.worker_max_jobs), str(s.worker_poll_delay)])
            for i in range(self.workers)]
        self.arq = await create_pool(RedisSettings.from_dsn(self.env.baseline_redis_url))

        async def ready() -> bool:
            return all([await self.redis.exists(f"{self.prefix}:ready:{p.pid}")
                        for p in self.procs])

        if not await wait_for(ready, 60, 0.1):
            raise RuntimeError(f"arq workers not ready: {self.procs[0].tail()}")

    async def run(self, n: int, concurrency: int) -> dict[str, Any]:
        await self.redis.set(f"{self.prefix}:done", 0)
        it = iter(range(n))

        async def enqueue() -> None:
            for _ in it:
                await self.arq.enqueue_job("noop", _queue_name=self.queue)

        async def done() -> bool:
            return int(await self.redis.get(f"{self.prefix}:done") or 0) >= n

        t0 = time.perf_counter()
        await asyncio.gather(*(enqueue() for _ in range(concurrency)))
        t_enq = time.perf_counter() - t0
        ok = await wait_for(done, 300, 0.005)
        return {"seconds": time.perf_counter() - t0, "enqueue_seconds": t_enq,
                "done": int(await self.redis.get(f"{self.prefix}:done") or 0), "ok": ok}

    async def close(self) -> None:
        self.env.stop(self.procs)
        async for key in self.redis.scan_iter(match=f"{self.prefix}*", count=1000):
            await self.redis.delete(key)
        await self.arq.aclose()
        await self.redis.aclose()


async def _taskstream_round(run: Run, urls: list[str], n: int, concurrency: int
                            ) -> dict[str, Any]:
    pool = await run.pool()
    try:
        async def done() -> bool:
            return await count_status(pool, "completed") >= n

        t0 = time.perf_counter()
        per = [n // len(urls) + (1 if i < n % len(urls) else 0) for i in range(len(urls))]
        sub = asyncio.gather(*(submit_many(u, [NOOP] * k, concurrency // len(urls))
                               for u, k in zip(urls, per, strict=True)))
        submitted = await sub
        t_enq = time.perf_counter() - t0
        ok = await wait_for(done, 300, 0.005)
        seconds = time.perf_counter() - t0
        completed = await count_status(pool, "completed")
        ids = sum(len(s[0]) for s in submitted)
        return {"seconds": seconds, "enqueue_seconds": t_enq, "done": completed,
                "submitted": ids, "ok": ok and completed == n and ids == n}
    finally:
        await pool.close()


async def _redis_pid(url: str) -> int:
    r = Redis.from_url(url)
    try:
        return int((await r.info("server"))["process_id"])
    finally:
        await r.aclose()


async def throughput(run: Run) -> Outcome:
    """N no-op tasks submitted and run to a durable terminal status; 1 and 2 workers.

    Beside the rate, each Taskstream and raw-arq round records the CPU time all the processes
    doing the work used per task (web, workers, PostgreSQL backends, Redis, and this harness,
    which is the load generator): on this machine's cores that bounds the rate whatever the
    overlap."""
    env, sz, out = run.env, run.sizes, Outcome()
    n, c = sz.throughput_tasks, sz.submit_concurrency
    web = await env.web("web-throughput")
    redis_pid = await _redis_pid(env.redis_url)
    pool = await run.pool()
    try:
        for w in (1, 2):
            workers = await env.workers(w, f"worker-throughput{w}-")
            arq, celery = ArqPeer(env, w), CeleryPeer(env, w)
            await arq.start()
            if run.celery:
                await celery.start()
            rates: dict[str, list[float]] = {"taskstream": [], "raw arq": [], "celery": []}
            cpus: dict[str, list[float]] = {"taskstream": [], "raw arq": []}
            try:
                for r in range(sz.rounds):
                    order = ["taskstream", "raw arq", "celery"][:3 if run.celery else 2]
                    order = order[r % len(order):] + order[:r % len(order)]  # rotate
                    for system in order:
                        if system == "taskstream":
                            await env.reset()
                            pids = [web.pid, *(p.pid for p in workers), redis_pid, os.getpid(),
                                    *await backend_pids(pool, wal_writers=True)]
                            cpu0 = cpu_seconds(pids)
                            res = await _taskstream_round(run, [web.url], n, c)
                            late = [p for p in await backend_pids(pool, wal_writers=True)
                                    if p not in pids]
                            cpu = cpu_seconds(pids) - cpu0 + cpu_seconds(late)
                            res["cpu_us_per_task"] = cpu / n * 1e6
                        elif system == "raw arq":
                            pids = [*(p.pid for p in arq.procs), redis_pid, os.getpid()]
                            cpu0 = cpu_seconds(pids)
                            res = await arq.run(n, c)
                            res["cpu_us_per_task"] = (cpu_seconds(pids) - cpu0) / n * 1e6
                        else:
                            res = await celery.run(n)
                            res["ok"] = res["done"] >= n
                        res.update(system=system, workers=w, round=r, tasks=n,
                                   tasks_per_s=n / res["seconds"])
                        out.rounds.append(res)
                        out.check(f"throughput {system} x{w}: every task done", res["ok"])
                        rates[system].append(res["tasks_per_s"])
                        if "cpu_us_per_task" in res:
                            cpus[system].append(res["cpu_us_per_task"])
                        run.log(f"throughput {system} workers={w} round {r}: "
                                f"{res['tasks_per_s']:.0f} tasks/s")
            finally:
                celery.close()
                await arq.close()
                env.stop(workers)
            ts, ra, ce = (median(rates[k]) for k in ("taskstream", "raw arq", "celery"))
            arq_target = 1.0 if w == 1 else 0.8
            out.rows += [
                Row("1 throughput", f"no-op tasks/s, {w} worker(s)", ts, "tasks/s", "raw arq",
                    ra, ratio(ts, ra), f">= {arq_target:g}x raw arq",
                    (ratio(ts, ra) or 0) >= arq_target),
                # Celery no-op, persisting nothing: for reference; the persisting peer is the
                # tutorial's stack (scenario 'tutorial').
                Row("1 throughput", f"no-op tasks/s, {w} worker(s)", ts, "tasks/s", "celery",
                    ce, ratio(ts, ce)),
                Row("1 throughput", f"CPU per task, all processes, {w} worker(s)",
                    median(cpus["taskstream"]), "us", "raw arq", median(cpus["raw arq"]),
                    ratio(median(cpus["taskstream"]), median(cpus["raw arq"]))),
            ]
    finally:
        await pool.close()
        env.stop([web])
    out.notes.append("taskstream: POST /tasks over HTTP until the completed status is in "
                     "PostgreSQL; arq/celery: enqueue_job()/delay() straight into Redis until "
                     "the job has run (it INCRs a counter)")
    return out


async def events(run: Run) -> Outcome:
    """Tasks that each report E progress events: events/s persisted and published."""
    env, sz, out = run.env, run.sizes, Outcome()
    t, e = sz.event_tasks, sz.events_per_task
    rhost, rport = host_port(env.redis_url.replace("redis://", "http://"))
    web = await env.web("web-events")
    workers = await env.workers(1, "worker-events")
    ts_counter = await PubSubCounter.connect(rhost, rport, f"{env.namespace}:tenant:*",
                                             b'"type":"progress"')
    obo_channel = f"{env.namespace}:onebyone"
    obo_counter = await PubSubCounter.connect(rhost, rport, obo_channel, b'"type":"progress"')
    pool = await run.pool()
    rates: dict[str, list[float]] = {"taskstream": [], "one-by-one": []}
    cpus: list[float] = []
    s = Settings()
    try:
        for r in range(sz.rounds):
            await env.reset()
            ts_counter.reset()
            pids = [workers[0].pid, *await backend_pids(pool)]
            cpu0 = cpu_seconds(pids)
            t0 = time.perf_counter()
            await submit_many(web.url, [{"type": "noop", "params": {"events": e}}] * t, 20)

            async def all_seen() -> bool:
                return ts_counter.count >= t * e

            ok = await wait_for(all_seen, 300, 0.01)
            wall = time.perf_counter() - t0

            async def completed() -> bool:
                return await count_status(pool, "completed") >= t

            ok = ok and await wait_for(completed, 60, 0.05)
            pids = [workers[0].pid, *await backend_pids(pool)]
            cpu = (cpu_seconds(pids) - cpu0) / (t * e) * 1e6
            stored = await pool.fetchval("SELECT count(*) FROM task_events WHERE type = "
                                         "'progress'")
            out.check("events taskstream: every event persisted", stored == t * e)
            out.check("events taskstream: every event published", ts_counter.count == t * e)
            out.check("events taskstream: every task completed", ok)
            rates["taskstream"].append(ts_counter.rate)
            out.rounds.append({"system": "taskstream", "round": r, "events": ts_counter.count,
                               "events_per_s": ts_counter.rate, "wall_s": wall,
                               "cpu_us_per_event": cpu})
            cpus.append(cpu)
            run.log(f"events taskstream round {r}: {ts_counter.rate:.0f} events/s, "
                    f"{cpu:.0f} CPU-us/event (worker + its PostgreSQL backends)")

            obo_counter.reset()
            p = env.spawn(f"onebyone{r}", [env.python, "-m", "bench.entry", "onebyone",
                                           env.database_url, env.redis_url, obo_channel,
                                           str(t), str(e), str(s.worker_max_jobs),
                                           str(s.db_pool_max)])
            assert p.p is not None
            rc = await asyncio.to_thread(p.p.wait, 600)
            env.procs.remove(p)

            async def obo_seen() -> bool:
                return obo_counter.count >= t * e

            await wait_for(obo_seen, 10, 0.01)
            stored = await pool.fetchval("SELECT count(*) FROM bench_events")
            out.check("events one-by-one: every event persisted", rc == 0 and stored == t * e)
            out.check("events one-by-one: every event published", obo_counter.count == t * e)
            rates["one-by-one"].append(obo_counter.rate)
            out.rounds.append({"system": "one-by-one", "round": r, "events": obo_counter.count,
                               "events_per_s": obo_counter.rate})
            run.log(f"events one-by-one round {r}: {obo_counter.rate:.0f} events/s")
        ts, ob = median(rates["taskstream"]), median(rates["one-by-one"])
        out.rows += [
            Row("2 progress events", "events/s persisted + published", ts, "events/s",
                target=">= 40,000", met=(ts or 0) >= 40_000),
            Row("2 progress events", "events/s persisted + published", ts, "events/s",
                "one-by-one", ob, ratio(ts, ob), ">= 5x one-by-one", (ratio(ts, ob) or 0) >= 5),
            Row("2 progress events", "CPU per event (worker + PostgreSQL)", median(cpus),
                "us"),
        ]
        out.notes.append(f"{t} tasks x {e} events, 1 worker process (max_jobs "
                         f"{s.worker_max_jobs}); one-by-one: {s.worker_max_jobs} concurrent "
                         f"producers, pool of {s.db_pool_max}, INSERT then PUBLISH per event")
    finally:
        ts_counter.close()
        obo_counter.close()
        await pool.close()
        env.stop([*workers, web])
    return out


async def _purge_queue(env: BenchEnv, ids: list[str]) -> None:
    """Drop the jobs of tasks no worker will run (submission runs without workers)."""
    r = Redis.from_url(env.redis_url)
    try:
        await r.delete(f"{env.namespace}:queue")
        for i in range(0, len(ids), 500):
            await r.delete(*[f"arq:job:{t}:1" for t in ids[i:i + 500]])
    finally:
        await r.aclose()


async def submission(run: Run) -> Outcome:
    """POST /tasks requests/s and latency on one web process (no workers: the web alone)."""
    env, sz, out = run.env, run.sizes, Outcome()
    m = sz.submission_requests
    web = await env.web("web-submission")
    pool = await run.pool()
    try:
        for c in sz.submission_concurrency:
            rps: list[float] = []
            p50: list[float] = []
            p99: list[float] = []
            for r in range(sz.rounds):
                await env.reset()
                warm, _, _ = await submit_many(web.url, [NOOP] * min(200, m), c)
                ids, lat, wall = await submit_many(web.url, [NOOP] * m, c)
                stored = await count_status(pool, "pending")
                out.check(f"submission c={c}: every request 202 and stored",
                          len(ids) == m and stored == m + len(warm))
                await _purge_queue(env, warm + ids)
                row = {"concurrency": c, "round": r, "requests": m, "rps": m / wall,
                       "p50_ms": (percentile(lat, 50) or 0) * 1000,
                       "p99_ms": (percentile(lat, 99) or 0) * 1000}
                out.rounds.append(row)
                run.log(f"submission c={c} round {r}: {row['rps']:.0f} req/s, p99 "
                        f"{row['p99_ms']:.1f} ms")
                rps.append(row["rps"])
                p50.append(row["p50_ms"])
                p99.append(row["p99_ms"])
            rate, tail = median(rps), median(p99)
            out.rows += [
                Row("5 submission", f"POST /tasks req/s, {c} concurrent", rate, "req/s",
                    target=">= 2,500" if c == 32 else "",
                    met=(rate or 0) >= 2500 if c == 32 else None),
                Row("5 submission", f"POST /tasks p50, {c} concurrent", median(p50), "ms"),
                Row("5 submission", f"POST /tasks p99, {c} concurrent", tail, "ms",
                    target="< 25 ms" if c == 32 else "",
                    met=(tail is not None and tail < 25) if c == 32 else None),
            ]
    finally:
        await pool.close()
        env.stop([web])
    return out


async def scaleout(run: Run) -> Outcome:
    """2 web + 2 worker processes: throughput, and streams spread over both web processes."""
    env, sz, out = run.env, run.sizes, Outcome()
    webs = [await env.web("web-a"), await env.web("web-b")]
    workers = await env.workers(2, "worker-scale", **WORKER_ENV)
    pool = await run.pool()
    rates: list[float] = []
    lats: list[float] = []
    try:
        for r in range(sz.rounds):
            await env.reset()
            res = await _taskstream_round(run, [w.url for w in webs], sz.scaleout_tasks,
                                          sz.submit_concurrency)
            out.check("scale-out: every task done", res["ok"])
            rates.append(sz.scaleout_tasks / res["seconds"])
            out.rounds.append({"round": r, "kind": "throughput", **res,
                               "tasks_per_s": rates[-1]})
            run.log(f"scale-out throughput round {r}: {rates[-1]:.0f} tasks/s")
        for r in range(sz.stream_rounds):
            await env.reset()
            n = sz.scaleout_streams
            tasks = max(10, n // 10)
            count = 5
            ids, start_at = await start_ticks(run, webs[0], pool, tasks, count=count,
                                              interval=0.5, lead=3.0 + n / 300)
            owners = await pool.fetchval(
                "SELECT count(DISTINCT worker_id) FROM tasks WHERE status = 'running'")
            sides = [SSEPool(*host_port(w.url)) for w in webs]
            with quiet_gc():
                await asyncio.gather(*(side.open(
                    [f"/tasks/{ids[i % tasks]}/stream" for i in range(k, n, 2)], parallel=100)
                    for k, side in enumerate(sides)))
                ok = all([await side.wait(start_at + count * 0.5 + 60 - time.time())
                          for side in sides])
            for k, side in enumerate(sides):
                side.close()
                check_streams(out, f"scale-out streams on web {'ab'[k]}", side, count + 3)
            out.check("scale-out: streams finished in time", ok)
            lat = [x for side in sides for x in side.latencies()]
            lats.append((percentile(lat, 99) or 0) * 1000)
            out.rounds.append({"round": r, "kind": "streams", "streams": n, "tasks": tasks,
                               "samples": len(lat), "workers_used": owners,
                               "p50_ms": (percentile(lat, 50) or 0) * 1000,
                               "p99_ms": lats[-1]})
            run.log(f"scale-out streams round {r}: {n} streams over 2 web processes, p99 "
                    f"{lats[-1]:.1f} ms")
        out.rows += [
            Row("6 scale-out", "no-op tasks/s, 2 web + 2 workers", median(rates), "tasks/s"),
            Row("6 scale-out", f"p99 latency, {sz.scaleout_streams} streams over 2 webs",
                median(lats), "ms"),
        ]
    finally:
        await pool.close()
        env.stop([*workers, *webs])
    return out

