"""A run's end is queued in the step its code returns in, behind its last reports: those
share its batch (one transaction, one publish), so streams get the last progress and the
end together. (A refused report refusing the end: test_failures' cancel tests.)"""

import asyncpg
import httpx

from tests.conftest import wait_terminal
from tests.test_tasks_api import submit


async def _events(pool: asyncpg.Pool, task_id: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT type, created_at FROM task_events WHERE task_id = $1::uuid "
                            "ORDER BY seq", task_id)


async def test_the_end_shares_the_last_reports_transaction(client: httpx.AsyncClient,
                                                           pool: asyncpg.Pool) -> None:
    # demo sleeps before each report, so its reports go in batches of their own, but the
    # last one and the end are queued in the same step. (created_at is the transaction's
    # start, the same for every row one transaction writes.)
    tid = (await submit(client, "demo", duration=0.3, steps=3))["task_id"]
    assert (await wait_terminal(client, tid))["status"] == "completed"
    rows = await _events(pool, tid)
    assert [r["type"] for r in rows] == ["created", "started", "progress", "progress",
                                         "progress", "completed"]
    assert rows[-1]["created_at"] == rows[-2]["created_at"]
    assert rows[-2]["created_at"] != rows[-3]["created_at"]  # a sleep apart: its own batch


async def test_reports_that_never_wait_end_in_one_batch(client: httpx.AsyncClient,
                                                        pool: asyncpg.Pool) -> None:
    """noop reports without awaiting anything: its reports and its end, one transaction."""
    r = await client.post("/tasks", json={"type": "noop", "params": {"events": 4}})
    tid = r.json()["task_id"]
    assert (await wait_terminal(client, tid))["status"] == "completed"
    rows = await _events(pool, tid)
    assert [r["type"] for r in rows][-5:] == ["progress"] * 4 + ["completed"]
    assert len({r["created_at"] for r in rows[-5:]}) == 1  # one batch, reports and end
