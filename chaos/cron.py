"""A cron schedule that fires every second through the whole chaos window: its slots are
checked afterwards (``checks.schedule_slots_once``) — none twice, none skipped."""

import asyncio

import asyncpg

from chaos.api import Api

EVERY_SECOND = "* * * * * *"


async def start(api: Api) -> str:
    """Create the schedule (retrying as the API asks); returns its id."""
    resp = await api.request("POST /schedules", "POST", "/schedules",
                             json={"type": "noop", "params": {}, "cron": EVERY_SECOND})
    if resp is None or resp.status_code != 201:
        raise RuntimeError(f"could not create the chaos schedule: "
                           f"{resp.text if resp is not None else 'no answer'}")
    schedule_id: str = resp.json()["schedule_id"]
    return schedule_id


async def stop(api: Api, pool: asyncpg.Pool, schedule_id: str) -> list[str]:
    """Pause it; returns the ids of every task it created (to drain them with the rest)."""
    resp = await api.request("POST /schedules/{id}/pause", "POST",
                             f"/schedules/{schedule_id}/pause")
    if resp is None or resp.status_code != 200:
        raise RuntimeError(f"could not pause the chaos schedule: "
                           f"{resp.text if resp is not None else 'no answer'}")
    await asyncio.sleep(1.0)  # a claim in flight when the pause landed commits its task
    rows = await pool.fetch("SELECT task_id FROM tasks WHERE idempotency_key LIKE $1",
                            f"schedule:{schedule_id}:%")
    return [str(r["task_id"]) for r in rows]
