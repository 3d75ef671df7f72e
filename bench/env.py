"""The bench's own world: a fresh database, a Redis namespace, and the processes it starts.

Nothing here touches what other people run on the same PostgreSQL and Redis: the database is
``ts_bench_<random>`` (dropped at the end), product keys and channels live under the namespace
``b<random>``, and the raw-arq / Celery baselines use their own Redis DB index
(``BASELINE_REDIS_DB``) with per-run key prefixes.
"""

import asyncio
import contextlib
import resource
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from taskstream.core.settings import Settings
from taskstream.devservices.processes import (
    ROOT,
    Proc,
    WebServer,
    WorkerProc,
    free_port,
    service_env,
)
from taskstream.devservices.scratch import create_database, drop_database, with_db

BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
#: Redis DB index for the baselines' queues (product keys use the namespace in DB 0).
BASELINE_REDIS_DB = 12


def raise_fd_limit(want: int = 65536) -> int:
    """Raise the soft RLIMIT_NOFILE as far as allowed (inherited by the processes we start);
    the hard limit too where we may (root): 20,000 streams need more than 20,000 descriptors
    in this process and in the web, and a hard limit of 20,000 is common."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, want))
            hard = want
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


#: Descriptors kept free beside the streams: pools, logs, the other processes' pipes.
FD_HEADROOM = 1000


def streams_allowed() -> int:
    """How many streams one process can hold here: each is a descriptor in the bench's
    process and one in the web's, under the same RLIMIT_NOFILE (raised as far as allowed)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] - FD_HEADROOM


#: The bench's own settings for every process it starts.
BENCH_ENV = {
    "TASKSTREAM_SHUTDOWN_GRACE": "2",
    # The per-tenant abuse limits would cut every scenario short: lifted.
    "TASKSTREAM_SUBMIT_RATE_PER_TENANT": "1000000",
    "TASKSTREAM_MAX_INFLIGHT_PER_TENANT": "1000000",
    "TASKSTREAM_MAX_STREAMS_PER_TENANT": "1000000",
    "TASKSTREAM_MAX_STREAMS_PER_PROCESS": "1000000",
    "PYTHONUNBUFFERED": "1",
    "TASKSTREAM_TASKS": "bench.ticks",  # the tick task type, loaded like a user's
}
#: The product's worker on uvloop (``bench.entry``); task types come from TASKSTREAM_TASKS.
_ENTRY_WORKER = (sys.executable, "-m", "bench.entry", "worker")


def _entry_web(port: int) -> list[str]:
    """The product's web app plus the bench's tick task type (``bench.entry``)."""
    return [sys.executable, "-m", "bench.entry", "web", str(port)]


@dataclass
class BenchEnv:
    admin_pg: str
    redis_url: str
    db_name: str = field(default_factory=lambda: f"ts_bench_{uuid.uuid4().hex[:10]}")
    namespace: str = field(default_factory=lambda: f"b{uuid.uuid4().hex[:8]}")
    logdir: Path = RESULTS_DIR / "logs"
    procs: list[Proc] = field(default_factory=list)
    #: The bench tenant's API key (None while the product has no API keys).
    token: str | None = None

    python: str = sys.executable

    @property
    def database_url(self) -> str:
        return with_db(self.admin_pg, self.db_name)

    @property
    def baseline_redis_url(self) -> str:
        return with_db(self.redis_url, str(BASELINE_REDIS_DB))

    def settings(self) -> Settings:
        return Settings(database_url=self.database_url, redis_url=self.redis_url,
                        namespace=self.namespace)

    # --- lifecycle ---------------------------------------------------------------------

    async def create(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        await create_database(self.admin_pg, self.db_name)
        conn = await asyncpg.connect(self.database_url)
        try:  # the one-by-one baseline's table (no tasks row, no counters: the bare minimum)
            await conn.execute(
                """CREATE TABLE bench_events (task_id uuid NOT NULL, seq integer NOT NULL,
                       payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
                       PRIMARY KEY (task_id, seq))""")
            self.token = await _api_key(conn, self.database_url)
        finally:
            await conn.close()

    async def destroy(self) -> None:
        self.stop_all()
        with contextlib.suppress(Exception):
            await drop_database(self.admin_pg, self.db_name)
        with contextlib.suppress(Exception):
            await self.delete_keys()

    async def delete_keys(self) -> None:
        """Our product keys (namespace) in DB 0; the baselines clean their own prefixes."""
        r = Redis.from_url(self.redis_url)
        try:
            async for key in r.scan_iter(match=f"{self.namespace}:*", count=1000):
                await r.delete(key)
            # arq job keys carry the task id (unique to this run's database).
        finally:
            await r.aclose()

    async def reset(self) -> None:
        """Between rounds: empty tables so every round starts from the same state."""
        conn = await asyncpg.connect(self.database_url)
        try:
            # tasks first: the order the product locks them in; CASCADE: the tables that
            # reference tasks (steps, waits) go with it
            for attempt in range(5):
                try:
                    await conn.execute(
                        "TRUNCATE tasks, task_events, document_chunks, bench_events, "
                        "llm_usage, llm_usage_tenants CASCADE")
                    return
                except asyncpg.DeadlockDetectedError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await conn.close()

    # --- processes ---------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        return service_env(self.database_url, self.redis_url, self.namespace,
                           **{**BENCH_ENV, **extra})

    def _log(self, name: str) -> Path:
        return self.logdir / f"{self.db_name}-{name}.log"

    async def web(self, name: str = "web", **extra: str) -> WebServer:
        w = WebServer(self.env(**extra), self._log(name), free_port(), command=_entry_web,
                      name=name)
        self.procs.append(w)
        await asyncio.to_thread(w.start)
        return w

    async def workers(self, n: int, name: str = "worker", **extra: str) -> list[WorkerProc]:
        ps = [WorkerProc(self.env(**extra), self._log(f"{name}{i}"), command=_ENTRY_WORKER,
                         name=f"{name}{i}").start() for i in range(n)]
        self.procs.extend(ps)
        await self.wait_ready(ps)
        return ps

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        p = Proc(args, env or self.env(), self._log(name), name=name).start()
        self.procs.append(p)
        return p

    async def wait_ready(self, ps: Sequence[Proc], within: float = 60) -> None:
        """Workers started by ``bench.entry`` set ``<ns>:benchready:<pid>`` once started up."""
        r = Redis.from_url(self.redis_url)
        try:
            deadline = time.monotonic() + within
            pending = list(ps)
            while pending and time.monotonic() < deadline:
                for p in list(pending):
                    if not p.alive:
                        raise RuntimeError(f"{p.name} died:\n{p.tail()}")
                    if await r.exists(f"{self.namespace}:benchready:{p.pid}"):
                        pending.remove(p)
                await asyncio.sleep(0.1)
            if pending:
                raise RuntimeError(f"{pending[0].name} not ready:\n{pending[0].tail()}")
        finally:
            await r.aclose()

    def stop(self, ps: Sequence[Proc]) -> None:
        for p in ps:  # signal all first, then wait: shutdowns overlap
            p.send_signal(signal.SIGTERM)
        for p in ps:
            p.stop()
            if p in self.procs:
                self.procs.remove(p)

    def stop_all(self) -> None:
        self.stop(list(self.procs))


async def _api_key(conn: asyncpg.Connection, database_url: str) -> str | None:
    """An API key for the tenant ``bench`` (requests are authenticated as in production)."""
    try:
        from taskstream.core import auth, store
    except ImportError:
        return None
    new_key = getattr(auth, "new_key", None)
    if new_key is None:
        return None
    key_id, token, digest = new_key()
    try:  # key management on the SQLModel engine
        from taskstream.core import store_read
        from taskstream.core.db import create_engine
    except ImportError:  # a revision that manages keys on the asyncpg connection
        create = getattr(store, "create_api_key", None)
        if create is None:
            return None
        await create(conn, key_id, "bench", "bench", "user", digest)
        return str(token)
    engine = create_engine(database_url, pool_size=1)
    try:
        await store_read.create_api_key(engine, key_id, "bench", "bench", "user", digest)
    finally:
        await engine.dispose()
    return str(token)


async def make_env(admin_pg: str | None, redis_url: str | None) -> BenchEnv:
    """Use the given URLs, else the project's dev services (started if absent)."""
    if not admin_pg or not redis_url:
        from taskstream import devservices

        pg, rd = devservices.ensure()
        admin_pg, redis_url = admin_pg or pg.url, redis_url or rd.url
    env = BenchEnv(admin_pg=admin_pg, redis_url=redis_url)
    await env.create()
    return env
