"""Retention and deletion: finished tasks (with their events) and uploads past their tenant's
retention are pruned in small batches; unfinished work and younger rows stay;
``DELETE /tasks/{id}`` removes one finished task with its events and upload."""

import asyncio
import uuid

import asyncpg
import httpx

from taskstream.core import store, store_ops
from taskstream.core.settings import Settings
from tests.conftest import wait_terminal
from worker import retention


async def _make_tasks(pool: asyncpg.Pool, owner: str, n: int, status: str,
                      finished_ago_days: float | None) -> list[str]:
    made = await store.create_tasks(pool, [
        store.NewTask(owner=owner, task_type="noop", params={}, max_attempts=1,
                      idempotency_key=None, request_hash=None, options={})
        for _ in range(n)])
    ids = [t.task_id for t, _ in made]
    await pool.execute(
        """UPDATE tasks SET status = $2,
                  finished_at = now() - $3::float8 * interval '1 day'
            WHERE task_id = ANY ($1::uuid[])""",
        ids, status, finished_ago_days)
    return ids


async def _upload(pool: asyncpg.Pool, owner: str, age_days: float) -> uuid.UUID:
    upload_id = uuid.uuid4()
    async with pool.acquire() as conn:
        await store.ensure_tenant(conn, owner)
        await store.begin_upload(conn, owner, upload_id, "a.txt", "text/plain")
        await store.add_upload_chunk(conn, upload_id, 0, b"hello")
        await store.finish_upload(conn, upload_id, 5, "0" * 64)
        await conn.execute("UPDATE uploads SET created_at = now() - $2::float8 * interval "
                           "'1 day' WHERE upload_id = $1", upload_id, age_days)
    return upload_id


async def test_prune_old_finished_tasks_events_and_uploads(pool: asyncpg.Pool,
                                                           settings: Settings) -> None:
    owner = f"ret-{uuid.uuid4().hex[:8]}"
    other = f"keep-{uuid.uuid4().hex[:8]}"
    old = await _make_tasks(pool, owner, 25, "completed", 3)
    young = await _make_tasks(pool, owner, 3, "failed", 1)
    running = await _make_tasks(pool, owner, 2, "running", None)
    others = await _make_tasks(pool, other, 3, "completed", 30)  # no retention of its own
    old_upload = await _upload(pool, owner, 3)
    young_upload = await _upload(pool, owner, 1)
    in_use = await _upload(pool, owner, 3)
    await pool.execute("UPDATE tasks SET params = jsonb_build_object('upload_id', $2::text) "
                       "WHERE task_id = $1", uuid.UUID(running[0]), str(in_use))
    await store_ops.set_tenant_retention(pool, owner, 2.0)

    # Small batches: 25 old tasks in batches of 10 take three statements.
    cfg = settings.model_copy(update={"retention_batch": 10, "retention_days": 0.0})
    pruned = await retention.prune_once(pool, cfg)
    assert pruned["tasks"] >= 25 and pruned["uploads"] >= 1

    left = {str(r["task_id"]) for r in await pool.fetch(
        "SELECT task_id FROM tasks WHERE task_id = ANY ($1::uuid[])",
        old + young + running + others)}
    assert left == set(young + running + others)
    assert await pool.fetchval("SELECT count(*) FROM task_events WHERE task_id = ANY "
                               "($1::uuid[])", old) == 0
    assert await pool.fetchval("SELECT count(*) FROM task_events WHERE task_id = ANY "
                               "($1::uuid[])", young) == 3
    uploads = {r["upload_id"] for r in await pool.fetch(
        "SELECT upload_id FROM uploads WHERE upload_id = ANY ($1::uuid[])",
        [old_upload, young_upload, in_use])}
    assert uploads == {young_upload, in_use}
    assert await pool.fetchval("SELECT count(*) FROM upload_chunks WHERE upload_id = $1",
                               old_upload) == 0

    # The deployment's default reaches tenants without their own.
    cfg = settings.model_copy(update={"retention_days": 10.0})
    await retention.prune_once(pool, cfg)
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE task_id = ANY ($1::uuid[])",
                               others) == 0
    await store_ops.set_tenant_retention(pool, owner, None)


async def test_concurrent_pruners_split_the_work(pool: asyncpg.Pool, settings: Settings) -> None:
    owner = f"ret-{uuid.uuid4().hex[:8]}"
    ids = await _make_tasks(pool, owner, 60, "completed", 5)
    await store_ops.set_tenant_retention(pool, owner, 1.0)
    cfg = settings.model_copy(update={"retention_batch": 7, "retention_days": 0.0})
    results = await asyncio.gather(*(retention.prune_once(pool, cfg) for _ in range(3)))
    assert sum(r["tasks"] for r in results) >= 60  # none twice (SKIP LOCKED), none left
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE task_id = ANY ($1::uuid[])",
                               ids) == 0
    await store_ops.set_tenant_retention(pool, owner, None)


async def test_delete_a_finished_task(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    files = {"file": ("notes.txt", b"some words to parse " * 20, "text/plain")}
    up = (await client.post("/upload", files=files)).json()
    tid = up["task_id"]
    await wait_terminal(client, tid)
    task = (await client.get(f"/tasks/{tid}")).json()
    upload_id = uuid.UUID(task["params"]["upload_id"])
    assert await pool.fetchval("SELECT count(*) FROM uploads WHERE upload_id = $1",
                               upload_id) == 1

    r = await client.delete(f"/tasks/{tid}")
    assert r.status_code == 204, r.text
    assert (await client.get(f"/tasks/{tid}")).status_code == 404
    assert (await client.get(f"/tasks/{tid}/events")).status_code == 404
    assert await pool.fetchval("SELECT count(*) FROM task_events WHERE task_id = $1",
                               uuid.UUID(tid)) == 0
    assert await pool.fetchval("SELECT count(*) FROM uploads WHERE upload_id = $1",
                               upload_id) == 0
    assert (await client.delete(f"/tasks/{tid}")).status_code == 404
    assert (await client.delete(f"/tasks/{uuid.uuid4()}")).status_code == 404
    assert (await client.delete("/tasks/not-an-id")).status_code == 404


async def test_delete_refuses_an_unfinished_task(client: httpx.AsyncClient) -> None:
    r = await client.post("/tasks", json={"type": "demo", "params": {"duration": 30}})
    tid = r.json()["task_id"]
    r = await client.delete(f"/tasks/{tid}")
    assert r.status_code == 409 and "cancel it first" in r.json()["detail"]
    await client.post(f"/tasks/{tid}/cancel")
    await wait_terminal(client, tid)
    assert (await client.delete(f"/tasks/{tid}")).status_code == 204


async def test_another_tenants_task_is_not_found(pool: asyncpg.Pool) -> None:
    [tid] = await _make_tasks(pool, f"a-{uuid.uuid4().hex[:6]}", 1, "completed", 0)
    assert await store_ops.delete_finished_task(pool, "someone-else", uuid.UUID(tid)) == \
        "missing"
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE task_id = $1",
                               uuid.UUID(tid)) == 1
