"""What every scenario shares: sizes per mode, the run context, statistics, REST helpers."""

import asyncio
import contextlib
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from bench.env import BenchEnv
from bench.net import HttpConn


@dataclass(frozen=True)
class Sizes:
    rounds: int
    throughput_tasks: int
    submit_concurrency: int
    event_tasks: int
    events_per_task: int
    latency_streams: tuple[int, ...]
    latency_seconds: float
    capacity_streams: int
    waiting_streams: int
    waiting_window: float
    submission_requests: int
    submission_concurrency: tuple[int, ...]
    scaleout_tasks: int
    scaleout_streams: int
    stream_rounds: int  # rounds of the (slower) many-stream scenarios
    token_runs: int = 100  # token streaming: concurrent runs at 50 tokens/s ...
    token_clients: int = 1000  # ... followed by this many SSE clients
    token_seconds: float = 8.0
    search_chunks: int = 2_000  # chunks in the store searched by the search scenario
    search_texts: int = 300  # of which embedded for real (the rest mix those vectors)
    search_queries: int = 50  # GET /search per round
    search_docs: int = 3  # documents of ~20 chunks uploaded end to end


SIZES: dict[str, Sizes] = {
    # the test suite's smoke run: every scenario, tiny sizes, one round, seconds each
    "tiny": Sizes(rounds=1, throughput_tasks=30, submit_concurrency=10, event_tasks=4,
                  events_per_task=20, latency_streams=(1, 20), latency_seconds=1.0,
                  capacity_streams=50, waiting_streams=20, waiting_window=2.0,
                  submission_requests=100, submission_concurrency=(8,), scaleout_tasks=30,
                  scaleout_streams=10, stream_rounds=1, token_runs=5, token_clients=20,
                  token_seconds=4.0),
    # events: a round of 10,000 events lasted ~0.25 s and moved ±25%; 50,000 take ~1 s
    # throughput: rounds of 1,000 no-op tasks lasted under a second and the 1-worker ratio
    # against raw arq swung 0.84x-1.09x within a run; 3,000 (as --full) last ~2-3 s
    "quick": Sizes(rounds=3, throughput_tasks=3000, submit_concurrency=50, event_tasks=100,
                   events_per_task=500, latency_streams=(1, 1000, 5000), latency_seconds=5.0,
                   capacity_streams=10_000, waiting_streams=1000, waiting_window=5.0,
                   submission_requests=3000, submission_concurrency=(32,),
                   scaleout_tasks=1000, scaleout_streams=200, stream_rounds=2,
                   token_seconds=8.0, search_chunks=100_000, search_texts=5_000,
                   search_queries=500, search_docs=20),
    "full": Sizes(rounds=5, throughput_tasks=3000, submit_concurrency=50, event_tasks=300,
                  events_per_task=300, latency_streams=(1, 1000, 5000), latency_seconds=10.0,
                  capacity_streams=20_000, waiting_streams=1000, waiting_window=10.0,
                  submission_requests=10_000, submission_concurrency=(8, 32, 64),
                  scaleout_tasks=3000, scaleout_streams=1000, stream_rounds=3,
                  token_seconds=15.0, search_chunks=100_000, search_texts=10_000,
                  search_queries=1000, search_docs=50),
}


@dataclass
class Row:
    """One line of the results table (values are medians over rounds)."""

    scenario: str
    metric: str
    value: float | None
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    ratio: float | None = None  # value / baseline_value (or inverted where lower is better)
    target: str = ""
    met: bool | None = None


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool) -> None:
        self.checks[name] = self.checks.get(name, True) and bool(ok)

    def to_json(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "rounds": self.rounds,
                "checks": self.checks, "notes": self.notes}


@dataclass
class Run:
    env: BenchEnv
    sizes: Sizes
    mode: str
    celery: bool = True

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    async def pool(self) -> asyncpg.Pool:
        p = await asyncpg.create_pool(self.env.database_url, min_size=1, max_size=2)
        assert p is not None
        return p


_TICK = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """No garbage collection in the harness while it timestamps messages: with thousands of
    open streams a full collection here stalls its reads for tens of milliseconds, which
    would be measured as the product's push latency. Collected once afterwards."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc)."""
    return sum(user_system_seconds(pids))


def user_system_seconds(pids: list[int]) -> tuple[float, float]:
    """CPU seconds these processes spent in user space and in the kernel so far
    (/proc/PID/stat's utime and stime, all threads; clock ticks, so 10 ms steps)."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / _TICK, system / _TICK


def sched_seconds(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) so far, over all the
    process's threads (Linux /proc/PID/schedstat of each task; (0, 0) if unavailable)."""
    run = wait = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                a, b, _ = fh.read().split()
        except (OSError, ValueError):
            continue
        run += int(a)
        wait += int(b)
    return run / 1e9, wait / 1e9


async def backend_pids(pool: asyncpg.Pool, *, wal_writers: bool = False) -> list[int]:
    """Server processes of every connection to our database (the product's pools too), and
    with ``wal_writers`` those that write and flush the WAL for them."""
    rows = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE (datname = current_database()"
        " AND pid <> pg_backend_pid()) OR ($1 AND backend_type IN"
        " ('walwriter', 'checkpointer', 'background writer'))", wal_writers)
    return [int(r["pid"]) for r in rows]


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.median(xs) if xs else None


def percentile(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def host_port(url: str) -> tuple[str, int]:
    u = urlsplit(url)
    return u.hostname or "127.0.0.1", u.port or 80


async def submit_many(url: str, bodies: list[dict[str, Any]], concurrency: int
                      ) -> tuple[list[str], list[float], float]:
    """POST /tasks for each body over ``concurrency`` keep-alive connections.

    Returns (task ids in submission order of completion, per-request seconds, wall seconds).
    """
    host, port = host_port(url)
    ids: list[str] = []
    lat: list[float] = []
    it = iter(bodies)

    async def client() -> None:
        conn = HttpConn(host, port)
        try:
            for body in it:
                t0 = time.perf_counter()
                status, data = await conn.request("POST", "/tasks", body)
                lat.append(time.perf_counter() - t0)
                if status != 202:
                    raise RuntimeError(f"POST /tasks -> {status}: {data[:300]!r}")
                ids.append(_task_id(data))
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(min(concurrency, len(bodies)))))
    return ids, lat, time.perf_counter() - t0


def _task_id(data: bytes) -> str:
    i = data.index(b'"task_id":"') + 11
    return data[i:i + 36].decode()


async def wait_for(check: Callable[[], Awaitable[bool]], within: float,
                   interval: float = 0.01) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return False


async def port_open(port: int) -> bool:
    """Whether something accepts connections on this loopback port (a server we started)."""
    try:
        _, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    w.close()
    return True


async def count_status(pool: asyncpg.Pool, status: str) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM tasks WHERE status = $1", status) or 0)
