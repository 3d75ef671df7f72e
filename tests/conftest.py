"""Shared fixtures: real PostgreSQL and Redis (started if absent), an isolated database and
key namespace for this session, a real web server and worker, and an httpx client."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from taskstream.core.db import create_pool
from taskstream.core.settings import Settings
from taskstream.devservices.processes import ROOT, WebServer, WorkerProc, fast_env
from taskstream.devservices.scratch import create_database, drop_database

T = TypeVar("T")


@pytest.fixture(scope="session")
def backing() -> tuple[str, str]:
    """Admin URLs of a PostgreSQL and a Redis: from the environment, else started locally."""
    pg = os.environ.get("TASKSTREAM_TEST_DATABASE_URL")
    rd = os.environ.get("TASKSTREAM_TEST_REDIS_URL")
    if pg and rd:
        return pg, rd
    from taskstream import devservices

    pg_h, rd_h = devservices.ensure()
    return pg_h.url, rd_h.url


@pytest.fixture(scope="session")
def settings(backing: tuple[str, str]) -> Iterator[Settings]:
    """A fresh database and Redis namespace for this test session, migrated."""
    admin_pg, redis_url = backing
    name = f"ts_test_{uuid.uuid4().hex[:10]}"

    database_url = asyncio.run(create_database(admin_pg, name))
    yield Settings(database_url=database_url, redis_url=redis_url,
                   namespace=f"t{uuid.uuid4().hex[:8]}")
    asyncio.run(drop_database(admin_pg, name))


@pytest.fixture(scope="session")
def env(settings: Settings) -> dict[str, str]:
    return fast_env(settings.database_url, settings.redis_url, settings.namespace)


@pytest.fixture(scope="session")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def web(env: dict[str, str], logs: Path) -> Iterator[WebServer]:
    server = WebServer(env, logs / "web.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def web_lean(env: dict[str, str], logs: Path) -> Iterator[WebServer]:
    """A second web process with the opt-in hand-written SSE response."""
    server = WebServer({**env, "TASKSTREAM_SSE_RESPONSE": "lean"}, logs / "web-lean.log")
    server.start()
    yield server
    server.stop()


#: The settings of ``TASKSTREAM_SSE_RESPONSE``; streaming tests run against each.
SSE_RESPONSES = ["starlette", "lean"]


@pytest.fixture(params=SSE_RESPONSES)
def sse_web(request: pytest.FixtureRequest) -> WebServer:
    """The default web process, then the one with the lean SSE response."""
    server: WebServer = request.getfixturevalue("web" if request.param == "starlette"
                                                else "web_lean")
    return server


@pytest.fixture(scope="session")
def worker(env: dict[str, str], logs: Path) -> Iterator[WorkerProc]:
    proc = WorkerProc(env, logs / "worker.log")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
async def client(web: WebServer, worker: WorkerProc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as c:
        yield c


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(settings.database_url, min_size=1, max_size=5)
    yield p
    await p.close()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    r = Redis.from_url(settings.redis_url)
    yield r
    await r.aclose()


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 20,
                     interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def wait_terminal(client: httpx.AsyncClient, task_id: str,
                        timeout: float = 30) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        t: dict[str, Any] = (await client.get(f"/tasks/{task_id}")).json()
        return t if t["status"] in ("completed", "failed", "cancelled") else None

    return await eventually(check, timeout)


def make_key(env: dict[str, str], tenant: str, *extra: str) -> str:
    """A new API key for ``tenant`` (``python -m taskstream.core.keys create``); ``extra``:
    more arguments, e.g. ``--admin``."""
    out = subprocess.run([sys.executable, "-m", "taskstream.core.keys", "create", "--tenant",
                          tenant, *extra], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip()


#: Authentication on, keys looked up every time (a revoked key is refused at once).
SECURE = {"TASKSTREAM_AUTH": "true", "TASKSTREAM_KEY_CACHE_SECONDS": "0"}


@contextmanager
def with_and_without(env: dict[str, str], logs: Path, switch: str
                     ) -> Iterator[tuple[WebServer, WebServer]]:
    """Two web processes on one database, authentication on: one as configured, one with
    the setting ``switch`` (say ``TASKSTREAM_FAST_SUBMIT``) false, to compare their answers."""
    name = switch.lower().removeprefix("taskstream_").replace("_", "-")
    on = WebServer({**env, **SECURE}, logs / f"web-{name}-on.log")
    off = WebServer({**env, **SECURE, switch: "false"}, logs / f"web-{name}-off.log")
    on.start()
    off.start()
    try:
        yield on, off
    finally:
        on.stop()
        off.stop()
