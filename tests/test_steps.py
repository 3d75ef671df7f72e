"""Durable steps (ctx.step), waits and signals (ctx.wait_for), and ctx.text_stream, against
real worker processes: a SIGKILL inside step 3, a retry, a re-drive, an order change, a
suspended run resumed by a signal or a signed URL, and a wait that times out."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from taskstream.core.db import create_pool
from tests.cluster import Cluster, drop_cluster, start_cluster
from tests.conftest import eventually, wait_terminal
from tests.tasktypes_steps import runs

TASKS = {"TASKSTREAM_TASKS": "tests.tasktypes_steps"}


@pytest.fixture
async def cluster(backing: tuple[str, str], tmp_path: Path) -> AsyncIterator[Cluster]:
    c = await start_cluster(backing[0], backing[1], tmp_path / "cluster", workers=1, **TASKS)
    yield c
    await drop_cluster(backing[0], c)


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        yield c


async def submit(c: httpx.AsyncClient, type_: str, **params: Any) -> str:
    r = await c.post("/tasks", json={"type": type_, "params": params})
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


async def events(c: httpx.AsyncClient, tid: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await c.get(f"/tasks/{tid}/events")).json()["items"]
    return items


async def status_is(c: httpx.AsyncClient, tid: str, status: str) -> dict[str, Any] | None:
    t: dict[str, Any] = (await c.get(f"/tasks/{tid}")).json()
    return t if t["status"] == status else None


async def test_sigkill_inside_step_three_resumes_there(cluster: Cluster, api: httpx.AsyncClient,
                                                       tmp_path: Path) -> None:
    tid = await submit(api, "stepper", dir=str(tmp_path), slow_step=3)
    await eventually(lambda: asyncio.sleep(0, runs(tmp_path, "step3") == 1))
    cluster.workers[0].kill()  # SIGKILL, inside step 3
    (tmp_path / "go").touch()
    cluster.add_worker()
    done = await wait_terminal(api, tid, timeout=40)
    assert done["status"] == "completed", done
    assert done["attempts"] == 2
    # Steps 1 and 2 ran once (their record was replayed); 3 ran again; 4 once.
    assert [runs(tmp_path, f"step{n}") for n in (1, 2, 3, 4)] == [1, 1, 2, 1]
    assert done["result"]["one"] == {"n": 1, "run": 1}  # the recorded value, not a re-run
    assert done["result"]["two"] == [2, 2]  # a step's value is its JSON form
    steps = (await api.get(f"/tasks/{tid}/steps")).json()
    assert [(s["idx"], s["name"], s["attempt"]) for s in steps] == [
        (0, "one", 1), (1, "two", 1), (2, "three", 2), (3, "four", 2)]
    evs = await events(api, tid)
    started = [(e["attempt"], e["data"]["step"]) for e in evs if e["type"] == "step_started"]
    completed = [(e["attempt"], e["data"]["step"]) for e in evs
                 if e["type"] == "step_completed"]
    assert started == [(1, "one"), (1, "two"), (1, "three"), (2, "three"), (2, "four")]
    assert completed == [(1, "one"), (1, "two"), (2, "three"), (2, "four")]


async def test_retry_and_redrive_skip_completed_steps(api: httpx.AsyncClient,
                                                      tmp_path: Path) -> None:
    retried = tmp_path / "retried"
    retried.mkdir()
    tid = await submit(api, "stepper", dir=str(retried), fail_step=3)
    done = await wait_terminal(api, tid)
    assert done["status"] == "completed" and done["attempts"] == 2
    assert [runs(retried, f"step{n}") for n in (1, 2, 3, 4)] == [1, 1, 2, 1]

    redriven = tmp_path / "redriven"
    redriven.mkdir()
    tid = await submit(api, "stepper", dir=str(redriven), fail_step=4, permanent=True)
    failed = await wait_terminal(api, tid)
    assert failed["status"] == "failed" and failed["attempts"] == 1
    r = await api.post(f"/tasks/{tid}/retry")
    assert r.status_code == 200, r.text
    done = await wait_terminal(api, tid)
    assert done["status"] == "completed"
    assert [runs(redriven, f"step{n}") for n in (1, 2, 3, 4)] == [1, 1, 1, 2]


async def test_steps_in_another_order_or_twice_fail_clearly(api: httpx.AsyncClient,
                                                            tmp_path: Path) -> None:
    tid = await submit(api, "reorder", dir=str(tmp_path))
    done = await wait_terminal(api, tid)
    assert done["status"] == "failed" and done["attempts"] == 2, done  # not retried again
    assert "StepOrderError" in done["error"] and "'b'" in done["error"]
    tid = await submit(api, "reorder", dir=str(tmp_path), duplicate=True)
    done = await wait_terminal(api, tid)
    assert done["status"] == "failed" and done["attempts"] == 1
    assert "asked for twice" in done["error"]


async def _parked(pool: asyncpg.Pool, tid: str) -> bool:
    """The run has marked its wait suspended. That comes just after its ``suspended`` event
    (``_suspended``): a signal sent in between finds no suspended run, answers
    ``resumed: false``, and the run resumes itself."""
    return bool(await pool.fetchval(
        "SELECT suspended FROM task_waits WHERE task_id = $1::uuid", tid))


async def _suspended(c: httpx.AsyncClient, tid: str) -> bool:
    t = (await c.get(f"/tasks/{tid}")).json()
    evs = await events(c, tid)
    return t["status"] == "pending" and bool(evs) and evs[-1]["type"] == "suspended"


async def test_wait_suspends_without_a_slot_and_a_signal_resumes_once(
        cluster: Cluster, api: httpx.AsyncClient, tmp_path: Path) -> None:
    pool = await create_pool(cluster.database_url, min_size=1, max_size=2)
    try:
        tid = await submit(api, "approval", dir=str(tmp_path))
        await eventually(lambda: _suspended(api, tid))
        # No worker holds it: no lease, no worker id, and the sweeper leaves it alone.
        row = await pool.fetchrow("SELECT worker_id, lease_expires_at FROM tasks "
                                  "WHERE task_id = $1::uuid", tid)
        assert row["worker_id"] is None and row["lease_expires_at"] is None
        await asyncio.sleep(2.5)  # past the test stale-pending threshold
        assert await _suspended(api, tid)

        r = await api.post(f"/tasks/{tid}/signals/approval", json={"ok": True, "by": "ana"})
        assert r.status_code == 202 and r.json()["resumed"] is True, r.text
        again = await api.post(f"/tasks/{tid}/signals/approval", json={"ok": False})
        assert again.status_code == 409
        done = await wait_terminal(api, tid)
        assert done["status"] == "completed"
        assert done["result"] == {"text": "a draft", "decision": {"ok": True, "by": "ana"}}
        assert runs(tmp_path, "draft") == 1 and runs(tmp_path, "publish") == 1
        types = [e["type"] for e in await events(api, tid)]
        assert types.count("suspended") == 1 and types.count("resumed") == 1
        names = [s["name"] for s in (await api.get(f"/tasks/{tid}/steps")).json()]
        assert names == ["draft", "wait:approval", "publish"]
        # A finished task takes no signal; a malformed name or id is a 4xx, not a 500.
        assert (await api.post(f"/tasks/{tid}/signals/other")).status_code == 409
        assert (await api.post(f"/tasks/{tid}/signals/bad%20name")).status_code == 400
        assert (await api.post("/tasks/nope/signals/approval")).status_code == 404
    finally:
        await pool.close()


async def test_a_signal_whose_sender_died_is_resumed_by_the_sweeper(
        cluster: Cluster, api: httpx.AsyncClient, tmp_path: Path) -> None:
    from taskstream.core import store_steps

    tid = await submit(api, "approval", dir=str(tmp_path))
    pool = await create_pool(cluster.database_url, min_size=1, max_size=2)
    try:  # stored, as the web process does, which then dies before it re-queues the run
        await eventually(lambda: _parked(pool, tid))
        delivered = await store_steps.deliver_signal(pool, uuid.UUID(tid), None, "approval",
                                                     {"late": True})
        assert delivered is not None and delivered.suspended
    finally:
        await pool.close()
    done = await wait_terminal(api, tid, timeout=30)
    assert done["status"] == "completed" and done["result"]["decision"] == {"late": True}
    resumed = [e for e in await events(api, tid) if e["type"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["data"]["timed_out"] is False


async def test_a_signal_sent_before_the_wait_is_kept(api: httpx.AsyncClient,
                                                     tmp_path: Path) -> None:
    tid = await submit(api, "approval", dir=str(tmp_path), hold=1.5)
    r = await api.post(f"/tasks/{tid}/signals/approval", json="early")
    assert r.status_code == 202 and r.json()["resumed"] is False
    done = await wait_terminal(api, tid)
    assert done["result"]["decision"] == "early"
    assert "suspended" not in [e["type"] for e in await events(api, tid)]


async def test_signed_url_is_single_use_and_unforgeable(
        cluster: Cluster, api: httpx.AsyncClient, tmp_path: Path) -> None:
    tid = await submit(api, "approval", dir=str(tmp_path))
    await eventually(lambda: _suspended(api, tid))
    pool = await create_pool(cluster.database_url, min_size=1, max_size=1)
    try:  # ... and its wait marked suspended, or the link's signal finds no run to resume
        await eventually(lambda: _parked(pool, tid))
    finally:
        await pool.close()
    minted = await api.post(f"/tasks/{tid}/signals/approval/url", params={"ttl": 600})
    assert minted.status_code == 201, minted.text
    url = minted.json()["url"]
    assert url.startswith("/signals/")
    token = url.rsplit("/", 1)[1]
    assert (await api.post(f"/signals/{token[:-2]}xx", json=1)).status_code == 404
    assert (await api.post("/signals/tk_garbage.sig", json=1)).status_code == 404
    ticket = (await api.post("/stream-tickets", json={})).json()["ticket"]
    assert ticket.startswith("tk_")
    assert (await api.post(f"/signals/{ticket}", json=1)).status_code == 404
    async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
        r = await anonymous.post(url, json={"approved": "via link"})
        assert r.status_code == 202 and r.json()["resumed"] is True, r.text
        assert (await anonymous.post(url, json={"approved": "twice"})).status_code == 409
    done = await wait_terminal(api, tid)
    assert done["result"]["decision"] == {"approved": "via link"}


async def test_wait_timeout_fails_or_continues(api: httpx.AsyncClient, tmp_path: Path) -> None:
    failing = await submit(api, "approval", dir=str(tmp_path / "f"), timeout=1)
    going_on = await submit(api, "approval", dir=str(tmp_path / "c"), timeout=1,
                            on_timeout="continue")
    (tmp_path / "f").mkdir()
    (tmp_path / "c").mkdir()
    failed = await wait_terminal(api, failing, timeout=30)
    assert failed["status"] == "failed" and "WaitTimeout" in failed["error"], failed
    done = await wait_terminal(api, going_on, timeout=30)
    assert done["status"] == "completed" and done["result"]["decision"] is None
    resumed = [e for e in await events(api, going_on) if e["type"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["data"]["timed_out"] is True


async def test_text_stream_records_the_whole_text(api: httpx.AsyncClient) -> None:
    tid = await submit(api, "writer", words=4)
    done = await wait_terminal(api, tid)
    assert done["result"] == "word0 word1 word2 word3 "
    text = [e for e in await events(api, tid) if e["type"] == "text"]
    assert len(text) == 1
    assert text[0]["data"] == {"stream": "answer", "text": done["result"], "length": 24}


async def test_cancel_a_suspended_run(api: httpx.AsyncClient, tmp_path: Path,
                                      cluster: Cluster) -> None:
    tid = await submit(api, "approval", dir=str(tmp_path))
    await eventually(lambda: _suspended(api, tid))
    r = await api.post(f"/tasks/{tid}/cancel")
    assert r.json()["status"] == "cancelled"
    assert (await api.post(f"/tasks/{tid}/signals/approval")).status_code == 409
    pool: asyncpg.Pool = await create_pool(cluster.database_url, min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT count(*) FROM task_waits WHERE resumed_at IS NOT "
                                   "NULL AND task_id = $1::uuid", tid) == 0
    finally:
        await pool.close()
