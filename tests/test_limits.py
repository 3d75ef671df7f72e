"""Concurrency limits against real worker processes: a per-type limit across four workers,
one of them SIGKILLed mid-run (its slot comes back with the recovery clock), and a
per-key limit (keys progress side by side, never two of one key). What ran when is read
from the event history, the same check the chaos run makes."""

import uuid
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from chaos.checks import limits_held, most_at_once, running_spans
from chaos.snapshot import Ev, snapshot
from taskstream.core import store
from taskstream.core.db import create_pool
from taskstream.core.events import NewEvent
from taskstream.core.limits import CONCURRENCY_KEY
from taskstream.core.states import EventType, Outcome
from tests.cluster import Cluster, drop_cluster, start_cluster
from tests.conftest import eventually


@pytest.fixture
async def cluster(backing: tuple[str, str], tmp_path: Path) -> AsyncIterator[Cluster]:
    c = await start_cluster(backing[0], backing[1], tmp_path / "cluster", workers=4,
                            TASKSTREAM_TASKS="tests.tasktypes_limits")
    yield c
    await drop_cluster(backing[0], c)


@pytest.fixture
async def db(cluster: Cluster) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(cluster.database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def _submit(c: httpx.AsyncClient, task_type: str, **params: Any) -> str:
    r = await c.post("/tasks", json={"type": task_type, "params": params})
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


async def _all_ended(db: asyncpg.Pool, ids: list[str]) -> bool:
    n = await db.fetchval("""SELECT count(*) FROM tasks WHERE task_id = ANY($1::uuid[])
                             AND status IN ('completed', 'failed', 'cancelled')""", ids)
    return bool(n == len(ids))


async def test_type_limit_holds_across_workers_and_a_killed_workers_slot_comes_back(
        cluster: Cluster, db: asyncpg.Pool) -> None:
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        ids = [await _submit(c, "limited_nap", duration=0.6) for _ in range(20)]

        async def busy_worker() -> int | None:
            wid = await db.fetchval("""SELECT worker_id FROM tasks WHERE status = 'running'
                                       AND task_type = 'limited_nap' LIMIT 1""")
            return int(wid.split(":")[1]) if wid else None

        cluster.worker_by_pid(await eventually(busy_worker)).kill()
        await eventually(lambda: _all_ended(db, ids), timeout=50)

        snap = await snapshot(db)
        check = limits_held(snap, {"limited_nap": 2}, {})
        assert check.ok and check.checked == 20, check.violations
        assert {snap.tasks[t].status for t in ids} == {"completed"}
        requeued = [e for t in ids for e in snap.events[t] if e.type == "requeued"]
        # The killed worker's tasks (one or both slots) were re-queued and then completed.
        assert requeued and {e.reason for e in requeued} == {"worker_lost"}
        spans = [s for t in ids for s in running_spans(snap.events[t])]
        assert most_at_once(spans)[0] == 2  # the limit binds, and is used

        waited = [t for t in ids if any(e.type == "waiting" for e in snap.events[t])]
        assert waited, "20 tasks over a limit of 2 and none waited"
        events = (await c.get(f"/tasks/{waited[0]}/events")).json()["items"]
        waiting = [e for e in events if e["type"] == "waiting"]
        assert waiting[0]["status"] == "pending"
        assert waiting[0]["message"].startswith("waiting: 2 of 2 'limited_nap' running")
        assert waiting[0]["data"] == {"reason": "limit", "running": 2, "limit": 2}
        # One waiting event per wait, however often its job was tried.
        for t in ids:
            types = [e.type for e in snap.events[t]]
            assert all(not (a == b == "waiting") for a, b in pairwise(types))


async def test_key_limit_runs_keys_side_by_side_never_two_of_one_key(
        cluster: Cluster, db: asyncpg.Pool) -> None:
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        ids = [await _submit(c, "keyed_nap", duration=0.4, account=account)
               for _ in range(5) for account in ("acme", "globex")]
        await eventually(lambda: _all_ended(db, ids), timeout=30)
        snap = await snapshot(db)
        check = limits_held(snap, {}, {"keyed_nap": 1})
        assert check.ok and check.checked == 10, check.violations
        assert {snap.tasks[t].concurrency_key for t in ids} == {"acme", "globex"}
        spans = [s for t in ids for s in running_spans(snap.events[t])]
        assert most_at_once(spans)[0] == 2  # the two keys ran side by side
        waits = [e for t in ids for e in snap.events[t] if e.type == "waiting"]
        assert waits and all(e.reason == "key_limit" for e in waits)


def test_most_at_once_counts_touching_spans_as_apart() -> None:
    assert most_at_once([(0, 1), (1, 2), (0.5, 1.5)]) == (2, 0.5)
    assert most_at_once([]) == (0, 0.0)
    evs = [Ev("t", 1, 1, "created", "pending", 0, None, 0.0),
           Ev("t", 2, 2, "started", "running", 1, None, 1.0),
           Ev("t", 3, 3, "requeued", "pending", 1, "worker_lost", 3.0),
           Ev("t", 4, 4, "started", "running", 2, None, 4.0)]
    assert running_spans(evs) == [(1.0, 3.0), (4.0, float("inf"))]


async def test_waiting_task_is_cancelled_and_its_wait_ends(
        cluster: Cluster, db: asyncpg.Pool) -> None:
    """A task waiting for a slot can be cancelled; it never starts."""
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        busy = [await _submit(c, "limited_nap", duration=3) for _ in range(2)]

        async def both_running() -> bool:
            return bool(await db.fetchval("""SELECT count(*) = 2 FROM tasks
                                             WHERE status = 'running'"""))

        await eventually(both_running, timeout=10)
        tid = await _submit(c, "limited_nap", duration=0.1)

        async def waiting() -> bool:
            events = (await c.get(f"/tasks/{tid}/events")).json()["items"]
            return any(e["type"] == "waiting" for e in events)

        await eventually(waiting, timeout=10)
        assert (await c.post(f"/tasks/{tid}/cancel")).status_code == 200
        await eventually(lambda: _all_ended(db, [*busy, tid]), timeout=20)
        events = (await c.get(f"/tasks/{tid}/events")).json()["items"]
        assert [e["type"] for e in events][-1] == "cancelled"
        assert "started" not in [e["type"] for e in events]


async def test_one_batch_of_starts_counts_the_starts_it_admits(pool: asyncpg.Pool) -> None:
    """Starts batched in one call: each is counted against the running tasks plus those the
    batch admitted before it (per type and per key); a refusal says why and since when."""
    ttype = f"batch_{uuid.uuid4().hex[:8]}"
    made = await store.create_tasks(pool, [
        store.NewTask("limits-test", ttype, {}, 1, options={CONCURRENCY_KEY: key})
        for key in ("a", "a", "b", "b", "b")])
    tasks = [t for t, _ in made]

    def start(t: store.Task) -> store.LimitedStart:
        ev = NewEvent(task_id=t.task_id, owner=t.owner, type=EventType.STARTED, attempt=1,
                      worker_id="w:1", lease=30)
        return store.LimitedStart(ev, 3, t.options[CONCURRENCY_KEY], 1)

    got = await store.start_limited(pool, [start(t) for t in tasks])
    assert [a.outcome for a, _ in got] == [Outcome.OK, Outcome.LIMITED, Outcome.OK,
                                          Outcome.LIMITED, Outcome.LIMITED]
    refusals = [lim for _, lim in got if lim is not None]
    assert [(r.reason, r.running, r.waiting_since) for r in refusals] == [
        ("key_limit", 1, None), ("key_limit", 1, None), ("key_limit", 1, None)]
    assert all(a.event is not None and a.event.status == "running"
               for a, _ in got if a.outcome == Outcome.OK)
    # Two running now; a third key fits under the type's limit of 3, a fourth does not.
    more = await store.create_tasks(pool, [
        store.NewTask("limits-test", ttype, {}, 1, options={CONCURRENCY_KEY: key})
        for key in ("c", "d")])
    got = await store.start_limited(pool, [start(t) for t, _ in more])
    assert [a.outcome for a, _ in got] == [Outcome.OK, Outcome.LIMITED]
    assert got[1][1] is not None and (got[1][1].reason, got[1][1].running) == ("limit", 3)
