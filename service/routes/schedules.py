"""Schedule routes: the caller's cron schedules — list, create, read, pause, resume, delete.

A schedule's params are validated exactly as a submission's are; its cron expression and
timezone are checked here, so a schedule that could never fire is a 422, not a surprise.
The workers fire them (worker/scheduler.py).
"""

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from service.auth import Caller, Owner
from service.deps import Res, Resources
from service.errors import Conflict, NotFound, Unprocessable, parse_id
from service.routes.tasks import ERRORS
from service.search import check_submitter
from taskstream.core import schedules, store, store_read
from taskstream.core.models import ScheduleRead
from taskstream.core.schedules import Misfire

router = APIRouter(tags=["schedules"])


class CreateSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=100, description="A name from GET /task-types.")
    params: dict[str, Any] = Field(default_factory=dict)
    cron: str = Field(min_length=1, max_length=200, description=(
        "Five fields (minute hour day-of-month month day-of-week), or six with seconds last."))
    misfire: Misfire = Field(default=Misfire.SKIP, description=(
        "Slots missed while no worker ran: 'skip' fires none of them, 'catch_up' fires one "
        "task for all of them."))
    timezone: str = Field(default="UTC", min_length=1, max_length=64,
                          description="An IANA name; the cron fields are read in it.")


def _parse_id(schedule_id: str) -> uuid.UUID:
    return parse_id(schedule_id, "schedule")


async def _get(res: Resources, owner: str, schedule_id: str) -> ScheduleRead:
    found = await store_read.get_schedule(res.engine, _parse_id(schedule_id), owner)
    if found is None:
        raise NotFound(f"schedule {schedule_id!r} not found")
    return found


@router.get("/schedules", response_model=list[ScheduleRead], responses=ERRORS)
async def list_schedules(res: Res, owner: Owner) -> list[ScheduleRead]:
    """The caller's schedules, oldest first (with those declared in code, for their tenant)."""
    return await store_read.list_schedules(res.engine, owner)


@router.post("/schedules", status_code=201, response_model=ScheduleRead, responses=ERRORS)
async def create_schedule(body: CreateSchedule, res: Res, owner: Owner, principal: Caller,
                          response: Response) -> ScheduleRead:
    """Run a task of a registered type on a cron schedule; each slot fires once."""
    check_submitter(principal, body.type, body.params)
    params = res.submissions.validate(body.type, body.params)
    try:
        schedules.check(body.cron, body.timezone)
    except schedules.BadSchedule as exc:
        raise Unprocessable(str(exc)) from None
    schedule_id = await store.create_schedule(res.pool, store.NewSchedule(
        owner=owner, task_type=body.type, params=params, cron=body.cron,
        timezone=body.timezone, misfire=body.misfire,
        next_run_at=schedules.next_after(body.cron, body.timezone, datetime.now(UTC))))
    response.headers["Location"] = f"/schedules/{schedule_id}"
    return await _get(res, owner, str(schedule_id))


@router.get("/schedules/{schedule_id}", response_model=ScheduleRead, responses=ERRORS)
async def get_schedule(schedule_id: str, res: Res, owner: Owner) -> ScheduleRead:
    return await _get(res, owner, schedule_id)


@router.post("/schedules/{schedule_id}/pause", response_model=ScheduleRead, responses=ERRORS)
async def pause_schedule(schedule_id: str, res: Res, owner: Owner) -> ScheduleRead:
    """Stop firing until resumed. Idempotent."""
    if not await store.set_schedule_paused(res.pool, _parse_id(schedule_id), owner, True):
        raise NotFound(f"schedule {schedule_id!r} not found")
    return await _get(res, owner, schedule_id)


@router.post("/schedules/{schedule_id}/resume", response_model=ScheduleRead, responses=ERRORS)
async def resume_schedule(schedule_id: str, res: Res, owner: Owner) -> ScheduleRead:
    """Fire again from the next slot; slots that passed while paused are not owed."""
    current = await _get(res, owner, schedule_id)
    if not current.paused:
        return current  # resuming a running schedule changes nothing
    nxt = schedules.next_after(current.cron, current.timezone, datetime.now(UTC))
    await store.set_schedule_paused(res.pool, current.schedule_id, owner, False, nxt)
    return await _get(res, owner, schedule_id)


@router.delete("/schedules/{schedule_id}", status_code=204, responses=ERRORS)
async def delete_schedule(schedule_id: str, res: Res, owner: Owner) -> Response:
    """Delete; tasks it already created stay. A schedule declared in code is paused instead
    (the next deploy would declare it again)."""
    current = await _get(res, owner, schedule_id)
    if current.declared:
        raise Conflict("this schedule is declared in code (@task(cron=...)): pause it, or "
                       "remove the declaration")
    await store.delete_schedule(res.pool, current.schedule_id, owner)
    return Response(status_code=204)
