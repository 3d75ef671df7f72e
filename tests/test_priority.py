"""Priorities and delayed runs, end to end: real web, worker, PostgreSQL and Redis processes."""

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from taskstream import devservices
from taskstream.client import AsyncClient
from taskstream.core import queue, store
from taskstream.core.constants import ANONYMOUS_OWNER
from taskstream.core.db import create_pool
from taskstream.core.settings import Settings
from taskstream.devservices.processes import WebServer, WorkerProc, free_port
from tests.cluster import drop_cluster, start_cluster
from tests.conftest import wait_terminal


async def _post(c: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await c.post("/tasks", json={"type": "noop", **body})
    assert r.status_code == 202, r.text
    out: dict[str, Any] = r.json()
    return out


@pytest.mark.timeout(120)
async def test_a_high_task_starts_before_a_thousand_normal_ones_queued_earlier(
        backing: tuple[str, str], tmp_path: Path) -> None:
    admin_pg, redis_url = backing
    # No worker yet: everything queues up first. Then one worker taking two at a time.
    cluster = await start_cluster(admin_pg, redis_url, tmp_path / "c", workers=0,
                                  TASKSTREAM_WORKER_MAX_JOBS="2")
    s = Settings(database_url=cluster.database_url, redis_url=cluster.redis_url,
                 namespace=cluster.env["TASKSTREAM_NAMESPACE"])
    pool = await create_pool(s.database_url, min_size=1, max_size=2)
    arq = await queue.connect(s)
    try:
        made = await store.create_tasks(pool, [
            store.NewTask(ANONYMOUS_OWNER, "noop", {}, 1, options={"priority": "normal"})
            for _ in range(1000)])
        assert await queue.enqueue(arq, s, [queue.Job.of(t.task_id, 1, t.options)
                                            for t, _ in made]) == 1000
        async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
            low = await _post(c, priority="low")
            high = await _post(c, priority="high")
            assert (high["priority"], low["priority"]) == ("high", "low")
            assert (await _post(c))["priority"] == "normal"  # the type's
            await asyncio.to_thread(cluster.add_worker)
            done = await wait_terminal(c, high["task_id"], timeout=60)
            assert done["status"] == "completed"
            assert (await c.get(f"/tasks/{low['task_id']}")).json()["started_at"] is None
        started = datetime.fromisoformat(done["started_at"])
        ahead = [t.task_id for t in (await store.get_tasks(
            pool, [uuid.UUID(t.task_id) for t, _ in made])).values()
            if t.started_at is not None and t.started_at < started]
        assert len(ahead) <= 2, f"{len(ahead)} normal tasks started before the high one"
    finally:
        await arq.aclose()
        await pool.close()
        await drop_cluster(admin_pg, cluster)


@pytest.fixture
def private_redis() -> Iterator[devservices.Redis]:
    # Not pytest's tmp_path (0700): see test_outages.
    root = Path(tempfile.mkdtemp(prefix="ts-prio-"))
    root.chmod(0o755)
    rd = devservices.Redis(root, free_port())
    rd.start()
    yield rd
    rd.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(120)
async def test_a_delayed_task_survives_redis_and_worker_restarts_and_never_starts_early(
        backing: tuple[str, str], private_redis: devservices.Redis, tmp_path: Path) -> None:
    admin_pg, _ = backing
    cluster = await start_cluster(admin_pg, private_redis.url, tmp_path / "c", workers=1)
    try:
        async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
            t0 = time.monotonic()
            task = await _post(c, delay=4)
            tid = task["task_id"]
            run_at = datetime.fromisoformat(task["run_at"])
            assert task["status"] == "pending"
            assert timedelta(seconds=3) < run_at - datetime.now(UTC) <= timedelta(seconds=4)
            # Redis loses the deferred job; the worker dies and comes back.
            await asyncio.to_thread(private_redis.stop)
            await asyncio.to_thread(cluster.workers[0].kill)
            await asyncio.to_thread(private_redis.start)
            await asyncio.to_thread(cluster.workers[0].start)
            await asyncio.sleep(max(0.0, 3 - (time.monotonic() - t0)))
            assert (await c.get(f"/tasks/{tid}")).json()["status"] == "pending"
            done = await wait_terminal(c, tid, timeout=30)
            assert done["status"] == "completed"
            assert datetime.fromisoformat(done["started_at"]) >= run_at
            events = (await c.get(f"/tasks/{tid}/events")).json()["items"]
            assert [e["type"] for e in events].count("started") == 1
    finally:
        await drop_cluster(admin_pg, cluster)


async def test_a_delayed_task_waits_and_a_past_run_at_runs_now(
        client: httpx.AsyncClient) -> None:
    past = await _post(client, run_at=(datetime.now(UTC) - timedelta(hours=1)).isoformat())
    assert (await wait_terminal(client, past["task_id"]))["status"] == "completed"
    later = await _post(client, delay=2, priority="high")
    await asyncio.sleep(1)
    assert (await client.get(f"/tasks/{later['task_id']}")).json()["status"] == "pending"
    done = await wait_terminal(client, later["task_id"])
    assert done["status"] == "completed" and done["priority"] == "high"
    assert datetime.fromisoformat(done["started_at"]) >= datetime.fromisoformat(later["run_at"])


@pytest.mark.parametrize("body", [
    {"delay": 5, "run_at": "2030-01-01T00:00:00Z"},
    {"run_at": "tomorrow"},
    {"run_at": "2030-01-01T00:00:00"},  # no UTC offset: ambiguous
    {"delay": -1},
    {"delay": 400 * 24 * 3600},
    {"run_at": (datetime.now(UTC) + timedelta(days=400)).isoformat()},
    {"priority": "urgent"},
])
async def test_bad_schedules_are_422_and_create_nothing(client: httpx.AsyncClient,
                                                        body: dict[str, Any]) -> None:
    async def count() -> int:
        return len((await client.get("/tasks", params={"limit": 200})).json()["items"])

    before = await count()
    r = await client.post("/tasks", json={"type": "noop", **body})
    assert r.status_code == 422, r.text
    assert await count() == before


async def test_the_client_submits_with_priority_and_delay(web: WebServer,
                                                          worker: WorkerProc) -> None:
    async with AsyncClient(web.url) as ts:
        task = await ts.submit("noop", {}, priority="low", delay=0.5)
        assert (task.priority, task.status) == ("low", "pending") and task.run_at is not None
        with pytest.raises(ValueError, match="not both"):
            await ts.submit("noop", run_at=datetime.now(UTC), delay=1)
        assert await ts.wait(task, timeout=30) == {"events": 0}
        done = await ts.get(task)
        assert done.started_at is not None and done.started_at >= task.run_at


async def test_the_sweeper_looks_at_due_pending_tasks_before_ones_delayed_far_ahead(
        pool: asyncpg.Pool) -> None:
    owner = f"prio-{uuid.uuid4().hex[:8]}"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    made = await store.create_tasks(pool, [
        *(store.NewTask(owner, "noop", {}, 1, options={"run_at": tomorrow}) for _ in range(3)),
        store.NewTask(owner, "noop", {}, 1)])
    ids = [uuid.UUID(t.task_id) for t, _ in made]
    # All four queued long ago, the delayed ones first.
    await pool.execute("""UPDATE tasks SET updated_at = now() - make_interval(hours => 2)
                          + make_interval(secs => array_position($1::uuid[], task_id))
                          WHERE task_id = ANY($1::uuid[])""", ids)
    stale = [tid for tid, _, _ in await store.stale_pending(pool, 3600, limit=200)
             if uuid.UUID(tid) in ids]
    assert stale == [str(i) for i in ids[3:] + ids[:3]]


async def test_a_job_that_comes_early_is_put_back_until_run_at(
        client: httpx.AsyncClient, settings: Settings) -> None:
    """A stray job (a clock ahead, a rescue) for a delayed task: the runtime refuses to start
    it early and re-defers it; the task still runs once, not before its run_at."""
    task = await _post(client, delay=2)
    arq = await queue.connect(settings)
    try:
        assert await queue.enqueue(arq, settings, [queue.Job(task["task_id"], 1)], rescue=1)
    finally:
        await arq.aclose()
    await asyncio.sleep(1)
    assert (await client.get(f"/tasks/{task['task_id']}")).json()["status"] == "pending"
    done = await wait_terminal(client, task["task_id"])
    assert done["status"] == "completed"
    assert datetime.fromisoformat(done["started_at"]) >= datetime.fromisoformat(task["run_at"])
    events = (await client.get(f"/tasks/{task['task_id']}/events")).json()["items"]
    assert [e["type"] for e in events].count("started") == 1
