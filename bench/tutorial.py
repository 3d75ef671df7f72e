"""Scenario ``tutorial``: Taskstream against the seed tutorial's own stack, the same workload.

N tasks of STEPS progress updates each, POSTed over HTTP with the same concurrency, done when
``completed`` is in PostgreSQL; S browsers each follow one task (every (N/S)-th submitted:
POST, then open its stream at once, as a page would). Taskstream: one web, one
``bench.entry worker``, the ``bench_steps`` type and its SSE. The tutorial: its FastAPI app
(``bench.tutorial_app``, uvicorn) and one Celery prefork worker with a process per core
(``bench.tutorial_tasks``), both from Celery's venv, its polling SSE.
"""

import asyncio
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis

from bench import celery_env
from bench.common import (
    Outcome,
    Row,
    Run,
    backend_pids,
    cpu_seconds,
    host_port,
    median,
    percentile,
    port_open,
    ratio,
)
from bench.env import BenchEnv
from bench.net import HttpConn, SSEProtocol, Stream
from bench.ticks import STEPS
from taskstream.devservices.processes import Proc, free_port

#: (tasks, followers) per mode; rounds are the mode's.
# The tutorial runs ~10 tasks/s here: more tasks in --full would add half an hour.
SIZES = {"tiny": (40, 8), "quick": (1000, 100), "full": (1000, 100)}
STEP_COUNT = 10
SYSTEMS = ("taskstream", "tutorial")


@dataclass
class Follower:
    """One browser's stream: progress updates seen and their delivery latencies."""

    stream: Stream
    progress: set[float] = field(default_factory=set)
    received: int = 0  # progress messages (a poll may repeat a snapshot: counted once)
    latencies: list[float] = field(default_factory=list)
    #: receive time - the time of the completed write (Taskstream: the event's created_at;
    #: tutorial: the row's updated_at), if the stream was open then. Unlike the progress
    #: samples, no poll can skip it: comparable across the two designs.
    completion: float | None = None

    def on_message(self, s: Stream, msg: dict[str, Any]) -> None:
        now = time.time()
        if msg.get("status") == "completed" and self.completion is None:
            at = msg.get("created_at")
            t = datetime.fromisoformat(at).timestamp() if at else float(msg["message"])
            if t >= s.opened_at:
                self.completion = now - t
            return
        if msg.get("type") == "progress" or (msg.get("status") == "running"
                                             and (msg.get("progress") or 0) > 0):
            p = float(msg["progress"])
            if p in self.progress:
                return
            self.progress.add(p)
            self.received += 1
            try:
                t = float(msg.get("message") or "")
            except ValueError:
                return
            if t >= s.opened_at:  # updated while the stream was open: a live sample
                self.latencies.append(now - t)


class Stack:
    """One system under test: its URL, its processes (for CPU), how to count completions."""

    def __init__(self, name: str, url: str, procs: list[Proc], body: dict[str, Any],
                 table: str) -> None:
        self.name, self.url, self.procs, self.body, self.table = name, url, procs, body, table

    def groups(self) -> dict[str, list[int]]:
        """Process ids by role (the first process is the web; the others are workers)."""
        web, *workers = self.procs
        return {"web": [web.pid],
                "worker": [pid for p in workers for pid in (p.pid, *_children(p.pid))]}


def _children(pid: int) -> list[int]:
    """Child processes (Celery's prefork pool) by a scan of /proc."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                continue
    return out


async def _tutorial_stack(env: BenchEnv, prefix: str) -> Stack:
    py = str(await asyncio.to_thread(celery_env.ensure))
    e = {k: v for k, v in env.env().items() if not k.startswith("VIRTUAL_ENV")}
    e.update(TUTORIAL_DATABASE_URL=env.database_url, TUTORIAL_BROKER=env.baseline_redis_url,
             TUTORIAL_QUEUE=f"{prefix}:q")
    port = free_port()
    web = env.spawn("tutorial-web", [py, "-m", "uvicorn", "bench.tutorial_app:app", "--host",
                                     "127.0.0.1", "--port", str(port), "--log-level",
                                     "warning"], e)
    # As the tutorial runs it (log level aside: WARNING on both sides), a process per core.
    worker = env.spawn("tutorial-worker", [
        py, "-m", "celery", "-A", "bench.tutorial_tasks", "worker", "--pool=prefork",
        f"--concurrency={os.cpu_count() or 1}", "--loglevel=WARNING", "-Q", f"{prefix}:q",
        "-n", f"{prefix}@%h"], e)
    deadline = time.monotonic() + 60
    while not await port_open(port):
        for p in (web, worker):
            if not p.alive:
                raise RuntimeError(f"{p.name} died:\n{p.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"tutorial web not listening:\n{web.tail()}")
        await asyncio.sleep(0.1)
    return Stack("tutorial", f"http://127.0.0.1:{port}", [web, worker], {}, "tutorial_tasks")


async def _completed(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE status = 'completed'"))


async def _xacts(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT xact_commit FROM pg_stat_database "
                                   "WHERE datname = current_database()"))


async def _round(run: Run, stack: Stack, n: int, s: int, conn: asyncpg.Connection,
                 pool: asyncpg.Pool, redis_pid: int, settle: float) -> dict[str, Any]:
    """Submit n tasks, follow s of them; wait for every completion in PostgreSQL."""
    loop = asyncio.get_running_loop()
    host, port = host_port(stack.url)
    every = max(1, n // max(1, s))
    followers: list[Follower] = []
    done: list[asyncio.Future[None]] = []
    opening: list[asyncio.Task[None]] = []
    transports: list[asyncio.BaseTransport] = []

    async def follow(task_id: str) -> None:
        f = Follower(Stream(f"/tasks/{task_id}/stream"))
        fut: asyncio.Future[None] = loop.create_future()
        followers.append(f)
        done.append(fut)
        t, _ = await loop.create_connection(
            lambda: SSEProtocol(f.stream, host, port, stack.name == "taskstream", fut,
                                on_message=f.on_message), host, port)
        transports.append(t)

    counter = iter(range(n))

    async def client() -> None:
        http = HttpConn(host, port)
        try:
            for i in counter:
                status, data = await http.request("POST", "/tasks", stack.body)
                if status != 202:
                    raise RuntimeError(f"{stack.name} POST /tasks -> {status}: {data[:300]!r}")
                if i % every == 0 and len(opening) < s:
                    i0 = data.index(b'"task_id":"') + 11
                    opening.append(asyncio.create_task(follow(data[i0:i0 + 36].decode())))
        finally:
            await http.close()

    groups = {**stack.groups(), "redis": [redis_pid], "harness": [os.getpid()],
              "postgres": await backend_pids(pool, wal_writers=True)}
    pids = [p for g in groups.values() for p in g]
    x0, polls = await _xacts(conn), 0
    cpu0 = {k: cpu_seconds(g) for k, g in groups.items()}
    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(min(run.sizes.submit_concurrency, n))))
    completed = 0
    while time.perf_counter() - t0 < 600:
        completed = await _completed(conn, stack.table)
        polls += 1
        if completed >= n:
            break
        await asyncio.sleep(0.02)
    seconds = time.perf_counter() - t0
    late = [p for p in await backend_pids(pool, wal_writers=True) if p not in pids]
    # Where the CPU went, per task: which process bounds each system.
    split = {k: (cpu_seconds(g) - cpu0[k] + (cpu_seconds(late) if k == "postgres" else 0))
             / n * 1e6 for k, g in groups.items()}
    cpu = sum(split.values()) / 1e6 * n
    await asyncio.gather(*opening)
    streams_ok = not (await asyncio.wait(done, timeout=30))[1] if done else True
    for t in transports:
        t.close()
    stream_s = time.perf_counter() - t0
    await asyncio.sleep(settle)  # idle backends publish their counters up to 10 s late
    xacts = await _xacts(conn) - x0 - polls - 1
    lat = [x for f in followers for x in f.latencies]
    comp = [f.completion for f in followers if f.completion is not None]
    received = sum(f.received for f in followers)
    ss = [f.stream for f in followers]
    return {
        "system": stack.name, "tasks": n, "followers": len(followers), "ok": completed == n,
        "streams_ok": streams_ok and all(x.status == 200 and x.terminal for x in ss),
        "seqs_ok": all(x.seqs_ok for x in ss), "last_seqs": sorted({x.last_seq for x in ss}),
        "seconds": seconds, "tasks_per_s": n / seconds,
        "progress_delivered": received, "progress_per_s": received / stream_s,
        "progress_seen": received / (len(followers) * STEP_COUNT) if followers else None,
        "latency_samples": len(lat),
        "latency_mean_ms": sum(lat) / len(lat) * 1000 if lat else None,
        "latency_p50_ms": (percentile(lat, 50) or 0) * 1000 if lat else None,
        "latency_p99_ms": (percentile(lat, 99) or 0) * 1000 if lat else None,
        "completion_samples": len(comp),
        "completion_mean_ms": sum(comp) / len(comp) * 1000 if comp else None,
        "completion_p99_ms": (percentile(comp, 99) or 0) * 1000 if comp else None,
        "xacts": xacts, "xacts_per_s": xacts / seconds, "xacts_per_task": xacts / n,
        "cpu_us_per_task": cpu / n * 1e6,
        "cpu_us_per_task_by_process": split,
    }


async def tutorial(run: Run) -> Outcome:
    """The tutorial's Celery + SQLAlchemy + polling-SSE stack against Taskstream."""
    env, out = run.env, Outcome()
    n, s = SIZES[run.mode]
    settle = 1.0 if run.mode == "tiny" else 11.0
    prefix = f"bench:{env.namespace}:tutorial"
    web = await env.web("web-tutorial")
    workers = await env.workers(1, "worker-tutorial")
    pool = await run.pool()
    conn = await asyncpg.connect(env.database_url)
    r = Redis.from_url(env.redis_url)
    redis_pid = int((await r.info("server"))["process_id"])
    await r.aclose()
    stacks = [Stack("taskstream", web.url, [web, *workers],
                    {"type": STEPS, "params": {"steps": STEP_COUNT}}, "tasks")]
    stacks.append(await _tutorial_stack(env, prefix))
    res: dict[str, list[dict[str, Any]]] = {k: [] for k in SYSTEMS}
    try:
        for rnd in range(-1, run.sizes.rounds):  # round -1: a warm-up, not recorded
            order = stacks if rnd % 2 == 0 else stacks[::-1]
            for stack in order:
                await env.reset()
                await conn.execute("TRUNCATE tutorial_tasks")
                warm = rnd < 0
                row = await _round(run, stack, min(n, 20) if warm else n,
                                   min(s, 4) if warm else s, conn, pool, redis_pid,
                                   0.0 if warm else settle)
                out.check(f"tutorial {stack.name}: every task completed", row["ok"])
                out.check(f"tutorial {stack.name}: every follower reached the end",
                          row["streams_ok"])
                if stack.name == "taskstream":
                    out.check("tutorial taskstream: every follower saw every event in order",
                              row["seqs_ok"] and row["last_seqs"] == [STEP_COUNT + 3])
                if warm:
                    continue
                row["round"] = rnd
                out.rounds.append(row)
                res[stack.name].append(row)
                run.log(f"tutorial {stack.name} round {rnd}: {row['tasks_per_s']:.0f} tasks/s, "
                        f"{row['progress_seen']:.0%} of progress seen, mean delivery "
                        f"{row['latency_mean_ms'] or 0:.0f} ms, completion shown after "
                        f"{row['completion_mean_ms'] or 0:.0f} ms, {row['xacts_per_s']:.0f} "
                        f"xact/s, {row['cpu_us_per_task']:.0f} CPU-us/task ("
                        + ", ".join(f"{k} {v:.0f}" for k, v in
                                    row["cpu_us_per_task_by_process"].items()) + ")")
    finally:
        await conn.close()
        await pool.close()
        env.stop([*(p for st in stacks for p in st.procs)])
        await _clean_broker(env, prefix)
    out.rows += _rows(res, n, s)
    out.notes.append(f"{n} tasks x {STEP_COUNT} progress updates, {run.sizes.submit_concurrency}"
                     f" submitting connections, {s} followers; tutorial: FastAPI + SQLAlchemy "
                     f"(sync session in async endpoints, as written) + Celery prefork x "
                     f"{os.cpu_count()}, polling SSE (1/s); ratio for latency/xacts/CPU = "
                     f"tutorial / taskstream")
    return out


def _rows(res: dict[str, list[dict[str, Any]]], n: int, s: int) -> list[Row]:
    def med(system: str, key: str) -> float | None:
        return median([x[key] for x in res[system] if x[key] is not None])

    rows = []
    spec = [("tasks/s (10 progress updates each)", "tasks_per_s", "tasks/s", False),
            (f"progress updates delivered/s to {s} followers", "progress_per_s", "/s", False),
            ("share of progress updates the followers saw", "progress_seen", "", False),
            ("delivery latency of the updates seen, mean", "latency_mean_ms", "ms", True),
            ("delivery latency of the updates seen, p99", "latency_p99_ms", "ms", True),
            ("completion shown after its write, mean", "completion_mean_ms", "ms", True),
            ("completion shown after its write, p99", "completion_p99_ms", "ms", True),
            ("database transactions/s", "xacts_per_s", "xact/s", True),
            ("database transactions per task", "xacts_per_task", "xact", True),
            ("CPU per task, all processes", "cpu_us_per_task", "us", True)]
    for metric, key, unit, inverse in spec:
        ts, tu = med("taskstream", key), med("tutorial", key)
        r = ratio(tu, ts) if inverse else ratio(ts, tu)
        target, met = "", None
        if key == "tasks_per_s":
            target, met = ">= 5x tutorial", (r or 0) >= 5
        rows.append(Row("7 tutorial's stack", metric, ts, unit, "tutorial", tu,
                        None if unit == "" else r, target, met))
    for proc in ("web", "worker", "postgres"):
        ts, tu = (median([x["cpu_us_per_task_by_process"][proc] for x in res[k]])
                  for k in SYSTEMS)
        rows.append(Row("7 tutorial's stack", f"  of which {proc}", ts, "us", "tutorial", tu,
                        ratio(tu, ts)))
    return rows


async def _clean_broker(env: BenchEnv, prefix: str) -> None:
    r = Redis.from_url(env.baseline_redis_url)
    try:
        async for key in r.scan_iter(match=f"{prefix}*", count=1000):
            await r.delete(key)
        await r.delete(f"_kombu.binding.{prefix}:q")
    finally:
        await r.aclose()
