"""Failure semantics against real Redis, PostgreSQL and worker processes: retries, timeouts,
cancellation, dead letters and re-drive, SIGKILL, a paused worker, SIGTERM, the sweeper."""

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from taskstream.core.db import create_pool
from tests.cluster import Cluster, drop_cluster, start_cluster
from tests.conftest import eventually, wait_terminal
from tests.test_tasks_api import submit


async def events_of(client: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.get(f"/tasks/{task_id}/events")).json()["items"]
    return items


async def test_retries_with_backoff_until_success(client: httpx.AsyncClient) -> None:
    r = await client.post("/tasks", json={
        "type": "demo", "params": {"duration": 0.1, "steps": 2, "fail_at_step": 1,
                                   "fail_attempts": 2},
        "max_attempts": 3})
    task = r.json()
    done = await wait_terminal(client, task["task_id"])
    assert done["status"] == "completed" and done["attempts"] == 3
    retries = [e for e in await events_of(client, task["task_id"]) if e["type"] == "retrying"]
    assert [e["data"]["attempt"] for e in retries] == [1, 2]
    assert all(e["data"]["reason"] == "error" and e["data"]["delay"] > 0 for e in retries)
    assert all(e["status"] == "pending" for e in retries)  # truthful while it waits
    assert "DemoFailure" in retries[0]["data"]["error"]


async def test_exhausted_task_is_a_dead_letter_and_redrive_continues_history(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/tasks", json={
        "type": "demo", "params": {"duration": 0.1, "steps": 2, "fail_at_step": 1,
                                   "fail_attempts": 2},
        "max_attempts": 2})
    tid = r.json()["task_id"]
    done = await wait_terminal(client, tid)
    assert done["status"] == "failed" and done["failure_reason"] == "error"
    assert done["failures"] == 2

    dead = (await client.get("/dead-letters", params={"limit": 200})).json()["items"]
    mine = next(d for d in dead if d["task"]["task_id"] == tid)
    assert [e["type"] for e in mine["history"]] == ["started", "retrying", "started", "failed"]
    assert "DemoFailure" in mine["task"]["error"]

    before = len(await events_of(client, tid))
    r = await client.post(f"/tasks/{tid}/retry")
    assert r.status_code == 200 and r.json()["status"] == "pending"
    done = await wait_terminal(client, tid)
    assert done["status"] == "completed" and done["attempts"] == 3  # budget was fresh
    events = await events_of(client, tid)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[before]["type"] == "redriven"
    assert (await client.post(f"/tasks/{tid}/retry")).status_code == 409


async def test_permanent_errors_are_not_retried(client: httpx.AsyncClient) -> None:
    r = await client.post("/upload", files={"file": ("fake.pdf", b"not a pdf at all")})
    done = await wait_terminal(client, r.json()["task_id"])
    assert done["status"] == "failed" and done["failures"] == 1 and done["max_attempts"] == 3


async def test_hard_and_soft_timeouts_are_recorded_as_timeouts(
    client: httpx.AsyncClient,
) -> None:
    hard = (await client.post("/tasks", json={
        "type": "demo", "params": {"duration": 30, "steps": 2}, "timeout": 0.5})).json()
    soft = (await client.post("/tasks", json={
        "type": "demo", "params": {"duration": 3, "steps": 30}, "soft_timeout": 0.3})).json()
    h = await wait_terminal(client, hard["task_id"])
    s = await wait_terminal(client, soft["task_id"])
    assert h["status"] == "failed" and h["failure_reason"] == "timeout"
    assert "hard limit" in h["error"]
    assert s["status"] == "failed" and s["failure_reason"] == "timeout"
    assert "soft limit" in s["error"] and 0 < s["progress"] < 100


async def test_cancel_running_runs_finally_and_ends_stream(client: httpx.AsyncClient) -> None:
    from tests.sse import collect, payload

    task = await submit(client, "demo", duration=20, steps=200)
    tid = task["task_id"]
    await eventually(lambda: _status_is(client, tid, "running"))
    stream = asyncio.create_task(collect(client, f"/tasks/{tid}/stream"))
    await asyncio.sleep(0.2)
    t0 = asyncio.get_running_loop().time()
    assert (await client.post(f"/tasks/{tid}/cancel")).status_code == 200
    done = await wait_terminal(client, tid, timeout=5)
    assert asyncio.get_running_loop().time() - t0 < 2.0
    assert done["status"] == "cancelled"
    # A progress report may land between the request and the cancellation itself.
    types = [e["type"] for e in await events_of(client, tid) if e["type"] != "progress"]
    assert types[-3:] == ["cancel_requested", "log", "cancelled"]
    _, msgs = await asyncio.wait_for(stream, 10)
    assert payload(msgs[-1])["type"] == "cancelled"


async def test_cancelled_pending_task_never_starts(client: httpx.AsyncClient) -> None:
    # A task waiting out its retry backoff is pending; cancelling it means it never runs again.
    # The test's backoff is ~0.1 s: on a busy machine the retry can start before the cancel
    # lands, which is another scenario (cancelling a running task); then try again.
    for _ in range(5):
        r = await client.post("/tasks", json={
            "type": "demo", "params": {"duration": 0.05, "steps": 1, "fail_at_step": 1},
            "max_attempts": 5})
        tid = r.json()["task_id"]
        await eventually(lambda tid=tid: _has_event(client, tid, "retrying"))
        await client.post(f"/tasks/{tid}/cancel")
        types = [e["type"] for e in await events_of(client, tid)]
        if types[-2:] == ["retrying", "cancelled"]:
            break  # the cancel landed while the task waited out its backoff
    else:
        pytest.fail("the retry always started before the cancel landed")
    await asyncio.sleep(1.0)  # longer than the backoff: the deferred job fires and is refused
    events = await events_of(client, tid)
    assert [e["type"] for e in events].count("started") == 1
    assert events[-1]["type"] == "cancelled"


async def _status_is(client: httpx.AsyncClient, tid: str, status: str) -> bool:
    return bool((await client.get(f"/tasks/{tid}")).json()["status"] == status)


async def _has_event(client: httpx.AsyncClient, tid: str, etype: str) -> bool:
    return any(e["type"] == etype for e in await events_of(client, tid))


# --- real worker processes killed, paused and stopped ---------------------------------------

@pytest.fixture
async def cluster(backing: tuple[str, str], tmp_path: Path) -> AsyncIterator[Cluster]:
    c = await start_cluster(backing[0], backing[1], tmp_path / "cluster", workers=2)
    yield c
    await drop_cluster(backing[0], c)


async def _worker_pid(pool: asyncpg.Pool, tid: str) -> int:
    wid = await pool.fetchval("SELECT worker_id FROM tasks WHERE task_id = $1::uuid", tid)
    return int(wid.split(":")[1]) if wid else 0


async def test_sigkilled_worker_task_is_rerun_elsewhere(cluster: Cluster) -> None:
    pool = await create_pool(cluster.database_url, min_size=1, max_size=2)
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        tid = (await submit(c, "demo", duration=4, steps=40))["task_id"]
        pid = await eventually(lambda: _worker_pid(pool, tid))
        await eventually(lambda: _progress_at_least(c, tid, 10))
        cluster.worker_by_pid(pid).kill()
        t0 = asyncio.get_running_loop().time()
        await eventually(lambda: _has_event(c, tid, "requeued"), timeout=10)
        recovered = asyncio.get_running_loop().time() - t0
        done = await wait_terminal(c, tid, timeout=30)
        assert done["status"] == "completed" and done["attempts"] == 2
        assert recovered < 5.0  # the test recovery clock (lease 2 s, sweep 0.5 s)
        lost = [e for e in await events_of(c, tid) if e["type"] == "requeued"]
        assert lost[0]["data"] == {"reason": "worker_lost", "attempt": 1}
    await pool.close()


async def _progress_at_least(c: httpx.AsyncClient, tid: str, p: float) -> bool:
    return bool((await c.get(f"/tasks/{tid}")).json()["progress"] >= p)


async def test_paused_worker_is_fenced_after_its_lease(cluster: Cluster) -> None:
    pool = await create_pool(cluster.database_url, min_size=1, max_size=2)
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        tid = (await submit(c, "demo", duration=3, steps=30))["task_id"]
        pid = await eventually(lambda: _worker_pid(pool, tid))
        await eventually(lambda: _progress_at_least(c, tid, 10))
        os.kill(pid, signal.SIGSTOP)
        try:
            await eventually(lambda: _has_event(c, tid, "requeued"), timeout=10)
            await eventually(lambda: _worker_pid_differs(pool, tid, pid), timeout=10)
        finally:
            os.kill(pid, signal.SIGCONT)  # the old attempt wakes up and tries to write
        done = await wait_terminal(c, tid, timeout=30)
        await asyncio.sleep(1.0)
        events = await events_of(c, tid)
        assert done["status"] == "completed" and done["attempts"] == 2
        terminal = [e for e in events if e["type"] in ("completed", "failed", "cancelled")]
        assert len(terminal) == 1 and terminal[0]["attempt"] == 2
        requeue_at = next(i for i, e in enumerate(events) if e["type"] == "requeued")
        assert all(e["attempt"] == 2 for e in events[requeue_at + 1 :])
    await pool.close()


async def _worker_pid_differs(pool: asyncpg.Pool, tid: str, pid: int) -> bool:
    now = await _worker_pid(pool, tid)
    return now not in (0, pid)


async def test_poison_pill_fails_as_worker_lost(cluster: Cluster) -> None:
    pool = await create_pool(cluster.database_url, min_size=1, max_size=2)
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        tid = (await submit(c, "demo", duration=60, steps=60))["task_id"]
        for _ in range(3):  # max_crashes: every attempt kills its worker
            pid = await eventually(lambda: _worker_pid(pool, tid), timeout=15)
            cluster.worker_by_pid(pid).kill()
            cluster.add_worker()
            await eventually(lambda p=pid: _rerun_or_failed(c, pool, tid, p), timeout=15)
            if (await c.get(f"/tasks/{tid}")).json()["status"] == "failed":
                break
        done = await wait_terminal(c, tid, timeout=15)
        assert done["status"] == "failed" and done["failure_reason"] == "worker_lost"
    await pool.close()


async def _rerun_or_failed(c: httpx.AsyncClient, pool: asyncpg.Pool, tid: str, pid: int
                           ) -> bool:
    return await _status_is(c, tid, "failed") or await _worker_pid_differs(pool, tid, pid)


async def test_sigterm_finishes_short_tasks_and_requeues_long_ones(cluster: Cluster) -> None:
    pool = await create_pool(cluster.database_url, min_size=1, max_size=2)
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        cluster.workers[1].stop(signal.SIGKILL)  # one worker takes both tasks
        short = (await submit(c, "demo", duration=1.5, steps=3))["task_id"]
        long_ = (await submit(c, "demo", duration=8, steps=16))["task_id"]
        await eventually(lambda: _status_is(c, short, "running"))
        await eventually(lambda: _status_is(c, long_, "running"))
        w = cluster.workers[0]
        assert w.p is not None
        w.p.send_signal(signal.SIGTERM)  # grace period 3 s in the test timings
        assert (await wait_terminal(c, short, timeout=10))["status"] == "completed"
        await eventually(lambda: _status_is(c, long_, "pending"), timeout=15)
        await asyncio.to_thread(w.p.wait, 15)
        cluster.add_worker()
        done = await wait_terminal(c, long_, timeout=30)
        assert done["status"] == "completed" and done["failures"] == 0
        requeued = [e for e in await events_of(c, long_) if e["type"] == "requeued"]
        assert requeued[0]["data"]["reason"] == "shutdown"
    await pool.close()


async def test_sweeper_enqueues_tasks_whose_job_vanished(cluster: Cluster) -> None:
    """A web process that died between insert and enqueue, or Redis losing its data."""
    from taskstream.core import store

    pool = await create_pool(cluster.database_url, min_size=1, max_size=2)
    task, _ = await store.create_task(pool, owner="public", task_type="noop", params={},
                                      max_attempts=1)  # inserted, never enqueued
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        done = await wait_terminal(c, task.task_id, timeout=20)
        assert done["status"] == "completed"

        # Redis loses the queued job of a deferred retry: it still runs.
        r = await c.post("/tasks", json={
            "type": "demo", "params": {"duration": 0.05, "steps": 1, "fail_at_step": 1,
                                       "fail_attempts": 1}, "max_attempts": 2})
        tid = r.json()["task_id"]
        await eventually(lambda: _has_event(c, tid, "retrying"))
        redis = Redis.from_url(cluster.redis_url)
        for key in await redis.keys(f"arq:job:{tid}:*"):
            await redis.delete(key)
        await redis.aclose()
        assert (await wait_terminal(c, tid, timeout=20))["status"] == "completed"
    await pool.close()


def test_no_pickle_anywhere() -> None:
    """Jobs are msgpack; the project never imports pickle (a crafted job must not execute)."""
    root = Path(__file__).resolve().parent.parent
    for pkg in ("taskstream", "service", "worker"):
        for py in (root / pkg).rglob("*.py"):
            text = py.read_text()
            assert "import pickle" not in text and "from pickle" not in text, py
    from taskstream.core.queue import deserialize, serialize

    job = {"t": 1, "f": "run_task", "a": [str(uuid.uuid4())], "k": {}, "et": 1}
    assert deserialize(serialize(job)) == job


async def test_cancel_of_a_task_whose_worker_is_gone_still_lands(cluster: Cluster) -> None:
    pool = await create_pool(cluster.database_url, min_size=1, max_size=2)
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        tid = (await submit(c, "demo", duration=20, steps=40))["task_id"]
        pid = await eventually(lambda: _worker_pid(pool, tid))
        os.kill(pid, signal.SIGSTOP)  # it can neither hear the cancel nor renew its lease
        try:
            assert (await c.post(f"/tasks/{tid}/cancel")).status_code == 200
            done = await wait_terminal(c, tid, timeout=15)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert done["status"] == "cancelled"
        await asyncio.sleep(1.0)
        events = await events_of(c, tid)
        assert [e["type"] for e in events].count("started") == 1  # never re-run
        assert events[-1]["type"] == "cancelled"
    await pool.close()
