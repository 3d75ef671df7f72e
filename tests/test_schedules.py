"""Cron schedules: the cron math, then real clusters (a web process and several workers on
their own database): each slot fires exactly once across workers, missed slots skip or catch
up once, the /schedules API per tenant, and schedules declared with ``@task(cron=...)``."""

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from taskstream.core import auth, schedules, store_read
from taskstream.core.db import create_engine, create_pool
from taskstream.core.schedules import Misfire
from tests.cluster import Cluster, drop_cluster, start_cluster
from tests.conftest import eventually

EVERY_SECOND = "* * * * * *"
#: Test clusters judge a slot missed when it is more than a second late.
GRACE = {"TASKSTREAM_SCHEDULE_MISFIRE_GRACE": "1", "TASKSTREAM_TASKS": "tests.tasktypes_cron"}


# --- the cron math ---------------------------------------------------------------------------

def test_plan_fires_each_due_slot_and_folds_missed_ones() -> None:
    t0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    s = timedelta(seconds=1)
    # On time: every slot up to now, one each.
    p = schedules.plan(EVERY_SECOND, "UTC", Misfire.SKIP, t0, t0 + 2.5 * s, grace=5)
    assert p.fire == [t0, t0 + s, t0 + 2 * s] and p.next_run_at == t0 + 3 * s
    assert not p.missed
    # Ten seconds late with a one second grace: skip fires only the slot within the grace.
    p = schedules.plan(EVERY_SECOND, "UTC", Misfire.SKIP, t0, t0 + 10.5 * s, grace=1)
    assert p.fire == [t0 + 10 * s] and p.next_run_at == t0 + 11 * s and p.missed
    # catch_up: one more task, for the last missed slot.
    p = schedules.plan(EVERY_SECOND, "UTC", Misfire.CATCH_UP, t0, t0 + 10.5 * s, grace=1)
    assert p.fire == [t0 + 9 * s, t0 + 10 * s] and p.next_run_at == t0 + 11 * s


def test_timezone_and_validation() -> None:
    after = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    # 09:00 in Paris is 07:00 UTC in summer.
    assert schedules.next_after("0 9 * * *", "Europe/Paris", after) == after.replace(hour=7)
    for cron, tz in (("61 * * * *", "UTC"), ("* * *", "UTC"), ("* * 30 2 *", "UTC"),
                     ("* * * * *", "Mars/Olympus"), ("* * * * *", "../../etc/passwd"),
                     ("* * * * *", "America")):
        with pytest.raises(schedules.BadSchedule):
            schedules.check(cron, tz)


# --- clusters --------------------------------------------------------------------------------

@pytest.fixture
async def cluster(backing: tuple[str, str], tmp_path: Path) -> AsyncIterator[Cluster]:
    c = await start_cluster(*backing, tmp_path / "c", workers=3, **GRACE)
    yield c
    await drop_cluster(backing[0], c)


async def _slots(db: asyncpg.Pool, schedule_id: str) -> list[tuple[datetime, datetime]]:
    """(slot, task created_at) of every task the schedule created, by slot."""
    rows = await db.fetch(
        "SELECT idempotency_key, created_at FROM tasks WHERE idempotency_key LIKE $1",
        f"schedule:{schedule_id}:%")
    return sorted((_slot_of(r["idempotency_key"]), r["created_at"]) for r in rows)


async def _workers_up(db: asyncpg.Pool, n: int) -> None:
    """Until n workers have announced themselves (a loaded machine starts them slowly)."""
    async def up() -> bool:
        return bool(await db.fetchval(
            "SELECT count(DISTINCT worker_id) >= $1 FROM worker_types", n))

    await eventually(up, timeout=90)


def _slot_of(key: str) -> datetime:
    return datetime.fromisoformat(key.split(":", 2)[2])


async def _create(c: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await c.post("/schedules", json={"type": "noop", "params": {}, "cron": EVERY_SECOND,
                                         **body})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


@pytest.mark.timeout(120)
async def test_each_slot_fires_exactly_once_across_workers(cluster: Cluster) -> None:
    db = await create_pool(cluster.database_url, min_size=1, max_size=2)
    try:
        await _workers_up(db, 3)
        async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
            sched = await _create(c)
            sid = sched["schedule_id"]
            await eventually(lambda: _enough(db, sid, 6), timeout=30)
            await c.post(f"/schedules/{sid}/pause")
            slots = [s for s, _ in await _slots(db, sid)]
            # No slot twice (a second claim would have counted in 'fired' even though the
            # idempotency key kept out its task), and no second skipped while workers ran.
            assert len(slots) == len(set(slots))
            fired = (await c.get(f"/schedules/{sid}")).json()["fired"]
            assert fired == len(slots)
            assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots))
            # Every task runs.
            done = await db.fetchval(
                """SELECT count(*) FROM tasks WHERE idempotency_key LIKE $1
                   AND status = 'completed'""", f"schedule:{sid}:%")
            assert done >= len(slots) - 3
    finally:
        await db.close()


async def _enough(db: asyncpg.Pool, sid: str, n: int) -> bool:
    return len(await _slots(db, sid)) >= n


@pytest.mark.timeout(150)
async def test_missed_slots_skip_or_catch_up_once(cluster: Cluster) -> None:
    db = await create_pool(cluster.database_url, min_size=1, max_size=2)
    try:
        await _workers_up(db, 3)
        async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
            skip = (await _create(c, misfire="skip"))["schedule_id"]
            catch = (await _create(c, misfire="catch_up"))["schedule_id"]
            for sid in (skip, catch):
                await eventually(lambda sid=sid: _enough(db, sid, 2), timeout=30)
            for w in cluster.workers:
                await asyncio.to_thread(w.kill)  # all down: nobody fires
            stopped: datetime = await db.fetchval("SELECT now()")
            await asyncio.sleep(5)
            for w in cluster.workers:
                w.start()

            async def after_restart(sid: str) -> list[tuple[datetime, datetime]] | None:
                fresh = [s for s in await _slots(db, sid) if s[1] > stopped]
                return fresh if len(fresh) >= 3 else None

            for sid, extra in ((skip, 0), (catch, 1)):
                before = [s for s, made in await _slots(db, sid) if made <= stopped]
                fresh = await eventually(lambda sid=sid: after_restart(sid), timeout=40)
                first_claim = fresh[0][1]
                # Slots older than the grace at the first claim after the restart were missed.
                missed = [s for s, _ in fresh
                          if s <= first_claim - timedelta(seconds=1.0) and s > before[-1]]
                gap = (first_claim - before[-1]).total_seconds()
                assert gap > 4, gap  # several slots passed with no worker
                assert len(missed) == extra, (sid, missed, fresh[:4])
                slots = [s for s, _ in await _slots(db, sid)]
                assert len(slots) == len(set(slots))
    finally:
        await db.close()


@pytest.mark.timeout(150)
async def test_api_per_tenant(backing: tuple[str, str], tmp_path: Path) -> None:
    cluster = await start_cluster(*backing, tmp_path / "c", workers=1,
                                  TASKSTREAM_AUTH="true", TASKSTREAM_KEY_CACHE_SECONDS="0")
    db = await create_pool(cluster.database_url, min_size=1, max_size=2)
    engine = create_engine(cluster.database_url)
    try:
        tokens = {}
        for who in ("alice", "bob"):
            key_id, token, digest = auth.new_key()
            await store_read.create_api_key(engine, key_id, f"{who}-{uuid.uuid4().hex[:6]}",
                                            who, "user", digest)
            tokens[who] = token

        def as_(who: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(base_url=cluster.web.url, timeout=30,
                                     headers={"Authorization": f"Bearer {tokens[who]}"})

        await _workers_up(db, 1)
        async with as_("alice") as alice, as_("bob") as bob:
            # Bad input: 422 with a reason.
            for body, reason in (({"cron": "61 * * * *"}, "cron"),
                                 ({"cron": "* * *"}, "fields"),
                                 ({"type": "no_such_type"}, "unknown task type"),
                                 ({"params": {"nope": 1}}, "invalid params"),
                                 ({"timezone": "Mars/Olympus"}, "timezone"),
                                 ({"misfire": "sometimes"}, "")):
                r = await alice.post("/schedules", json={"type": "noop", "params": {},
                                                         "cron": "*/5 * * * *", **body})
                assert r.status_code == 422, (body, r.text)
                assert reason in r.text
            sched = await _create(alice, cron="* * * * * */2", timezone="Europe/Paris",
                                  misfire="catch_up")
            sid = sched["schedule_id"]
            assert sched["misfire"] == "catch_up" and not sched["paused"]
            assert [s["schedule_id"] for s in (await alice.get("/schedules")).json()] == [sid]
            # Another tenant sees nothing and can touch nothing.
            assert (await bob.get("/schedules")).json() == []
            for method, path in (("GET", ""), ("POST", "/pause"), ("POST", "/resume"),
                                 ("DELETE", "")):
                r = await bob.request(method, f"/schedules/{sid}{path}")
                assert r.status_code == 404, (method, path, r.text)
            assert (await alice.get("/schedules/not-a-uuid")).status_code == 404
            # It fires; paused, it fires nothing; resumed, it fires again.
            try:
                await eventually(lambda: _enough(db, sid, 1), timeout=30)
            except AssertionError:
                row = await db.fetchrow("SELECT *, now() FROM schedules")
                raise AssertionError(f"{dict(row or {})}\n{cluster.workers[0].tail()}"
                                     f"\nalive={cluster.workers[0].alive}") from None
            r = await alice.post(f"/schedules/{sid}/pause")
            assert r.status_code == 200 and r.json()["paused"]
            await asyncio.sleep(0.5)  # a claim in flight when the pause landed commits
            count = len(await _slots(db, sid))
            await asyncio.sleep(4.5)
            assert len(await _slots(db, sid)) == count
            r = await alice.post(f"/schedules/{sid}/resume")
            assert r.status_code == 200 and not r.json()["paused"]
            await eventually(lambda: _enough(db, sid, count + 1), timeout=30)
            # The tasks are alice's.
            tasks = (await alice.get("/tasks", params={"type": "noop"})).json()["items"]
            assert tasks and (await bob.get("/tasks")).json()["items"] == []
            assert (await alice.delete(f"/schedules/{sid}")).status_code == 204
            assert (await alice.get(f"/schedules/{sid}")).status_code == 404
            assert (await alice.get("/schedules")).json() == []
    finally:
        await engine.dispose()
        await db.close()
        await drop_cluster(backing[0], cluster)


@pytest.mark.timeout(150)
async def test_declared_schedule_is_created_fires_and_is_disabled_when_removed(
        cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        async def declared() -> dict[str, Any] | None:
            found = [s for s in (await c.get("/schedules")).json()
                     if s["declared"] and s["task_type"] == "cron_tick"]
            return found[0] if found and found[0]["fired"] >= 2 else None

        sched = await eventually(declared, timeout=30)
        # Three workers declared it: one schedule.
        assert sum(s["declared"] for s in (await c.get("/schedules")).json()) == 1
        assert sched["params"] == {"label": "declared"} and sched["cron"] == EVERY_SECOND

        async def completed() -> list[dict[str, Any]] | None:
            items: list[dict[str, Any]] = (await c.get(
                "/tasks", params={"type": "cron_tick", "status": "completed"})).json()["items"]
            return items or None

        done = await eventually(completed, timeout=30)
        assert done[0]["result"] == {"label": "declared"}
        r = await c.delete(f"/schedules/{sched['schedule_id']}")
        assert r.status_code == 409
        # A deploy without the declaration (workers stopped, one started without the module):
        # the schedule is disabled, not deleted.
        for w in cluster.workers:
            await asyncio.to_thread(w.stop)
        cluster.env["TASKSTREAM_TASKS"] = ""
        cluster.add_worker()

        async def disabled() -> bool:
            found = [s for s in (await c.get("/schedules")).json() if s["declared"]]
            return bool(found and found[0]["disabled"])

        await eventually(disabled, timeout=30)

