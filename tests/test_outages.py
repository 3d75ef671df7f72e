"""Redis and PostgreSQL briefly away: 503 with Retry-After (never 500), running tasks go on,
nothing is lost. Uses private server instances, so stopping them disturbs no other test."""

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskstream import devservices
from taskstream.devservices.processes import free_port
from tests.cluster import drop_cluster, start_cluster
from tests.conftest import eventually, wait_terminal
from tests.test_tasks_api import submit


@pytest.fixture
def private_servers() -> Iterator[tuple[devservices.Postgres, devservices.Redis]]:
    # Not pytest's tmp_path: it is 0700 and PostgreSQL runs as an unprivileged user.
    root = Path(tempfile.mkdtemp(prefix="ts-outage-"))
    root.chmod(0o755)
    pg = devservices.Postgres(root, free_port())
    rd = devservices.Redis(root, free_port())
    pg.start()
    rd.start()
    yield pg, rd
    rd.stop()
    pg.stop()
    shutil.rmtree(root, ignore_errors=True)


async def _running(c: httpx.AsyncClient, tid: str) -> bool:
    return bool((await c.get(f"/tasks/{tid}")).json()["status"] == "running")


@pytest.mark.timeout(180)
async def test_redis_then_postgres_outage(
    private_servers: tuple[devservices.Postgres, devservices.Redis], tmp_path: Path
) -> None:
    pg, rd = private_servers
    cluster = await start_cluster(pg.url, rd.url, tmp_path / "c", workers=1)
    try:
        async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
            # Redis away: submissions are refused cleanly, the running task goes on.
            tid = (await submit(c, "demo", duration=3, steps=15))["task_id"]
            await eventually(lambda: _running(c, tid))
            await asyncio.to_thread(rd.stop)
            r = await c.post("/tasks", json={"type": "noop"})
            assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
            before = len((await c.get("/tasks", params={"limit": 200})).json()["items"])
            await asyncio.sleep(1.0)
            await asyncio.to_thread(rd.start)
            done = await wait_terminal(c, tid, timeout=30)
            assert done["status"] == "completed"
            events = (await c.get(f"/tasks/{tid}/events")).json()["items"]
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert [e["type"] for e in events].count("progress") == 15
            # The refused submission left no task behind.
            after = len((await c.get("/tasks", params={"limit": 200})).json()["items"])
            assert after == before

            # PostgreSQL away: the API answers 503; the worker holds its events and
            # writes them when the database is back.
            tid2 = (await submit(c, "demo", duration=3, steps=15))["task_id"]
            await eventually(lambda: _running(c, tid2))
            await asyncio.to_thread(pg.stop)
            r = await c.get(f"/tasks/{tid2}")
            assert r.status_code == 503 and r.headers["Retry-After"]
            r = await c.post("/tasks", json={"type": "noop"})
            assert r.status_code == 503
            await asyncio.sleep(1.0)
            await asyncio.to_thread(pg.start)
            done = await wait_terminal(c, tid2, timeout=40)
            assert done["status"] == "completed"
            events = (await c.get(f"/tasks/{tid2}/events")).json()["items"]
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            terminal = [e for e in events if e["type"] in ("completed", "failed")]
            assert len(terminal) == 1
    finally:
        await drop_cluster(pg.url, cluster)
