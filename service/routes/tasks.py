"""Task routes: submit, list, read, history, cancel, catalogue."""

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from service.auth import Admin, Caller, Owner, TenantHeader, acting_for
from service.batches import cancel_batch, redrive_batch
from service.deps import Res, Resources
from service.errors import BadRequest, Conflict, NotFound
from service.schemas import (
    DeadLetter,
    DeadLetterPage,
    ErrorOut,
    EventPage,
    SubmitTask,
    TaskPage,
    TaskRead,
    TaskSnapshot,
    TaskTypeOut,
)
from service.search import check_submitter
from service.tasks import cancel, load_task, parse_task_id, redrive, task_json, task_read_json
from taskstream.core import batches, store_batches, store_llm, store_ops, store_read
from taskstream.core.constants import BATCH_TASK_TYPE
from taskstream.core.models import StepRead
from taskstream.core.states import Status

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorOut} for c in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
}

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=200,
                       description="Same key and body return the same task.")
]


@router.post("/tasks", status_code=202, response_model=TaskRead, tags=["tasks"],
             responses={**ERRORS, 200: {"model": TaskRead,
                                        "description": "Idempotent replay: the same task."}})
async def create_task(body: SubmitTask, res: Res, principal: Caller,
                      idempotency_key: IdempotencyKey = None, x_tenant: TenantHeader = None
                      ) -> Response:
    """Submit a task of a registered type; returns at once with its id and links."""
    # The hottest route: the same contract as Owner + a TaskRead response_model, with fewer
    # dependencies to solve and the body written by task_read_json (no model validation
    # per request). Measured by `python -m bench --scenario submission`.
    owner = acting_for(principal, x_tenant)
    check_submitter(principal, body.type, body.params)
    task, created = await res.submissions.submit(owner, body.type, body.params,
                                                 idempotency_key, options=body.options())
    return Response(task_read_json(task), status_code=202 if created else 200,
                    headers={"Location": f"/tasks/{task.task_id}"},
                    media_type="application/json")


@router.get("/tasks", response_model=TaskPage, responses=ERRORS, tags=["tasks"])
async def list_tasks(
    res: Res,
    owner: Owner,
    status: Annotated[list[Status] | None, Query(description="Repeatable.")] = None,
    type: Annotated[list[str] | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    created_after: Annotated[datetime | None, Query(
        description="Only tasks created at or after this time (ISO 8601; UTC when it "
                    "names no zone).")] = None,
    created_before: Annotated[datetime | None, Query(
        description="Only tasks created before this time.")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description=(
        "Text found in the message or the error (case-insensitive, literal)."))] = None,
) -> TaskPage:
    """The caller's tasks, newest first; follow ``next_cursor`` (with the same filters) for
    the next page."""
    after, before = _utc(created_after), _utc(created_before)
    if q is not None and "\x00" in q:
        raise BadRequest("q must not contain NUL characters")
    if after is not None and before is not None and after >= before:
        raise BadRequest("created_after must be earlier than created_before")
    return await _page(res, owner, status or [], type or [], limit, cursor,
                       created_after=after, created_before=before, text=q)


def _utc(when: datetime | None) -> datetime | None:
    """In UTC (a time without a zone is taken as UTC); 400 for one UTC cannot hold."""
    if when is None:
        return None
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:
        raise BadRequest("time out of range") from None


async def _page(res: Resources, owner: str, status: list[Status], types: list[str],
                limit: int, cursor: str | None, *, created_after: datetime | None = None,
                created_before: datetime | None = None, text: str | None = None) -> TaskPage:
    after = None
    if cursor:
        try:
            after = store_read.decode_cursor(cursor)
        except ValueError:
            raise BadRequest("malformed cursor; pass back next_cursor unchanged") from None
    tasks = await store_read.list_tasks(res.engine, owner, status=status, task_type=types,
                                        limit=limit + 1, cursor=after,
                                        created_after=created_after,
                                        created_before=created_before, text=text)
    more = len(tasks) > limit
    tasks = tasks[:limit]
    return TaskPage(items=tasks,
                    next_cursor=store_read.encode_cursor(tasks[-1]) if more and tasks else None)


@router.get("/task-types", response_model=list[TaskTypeOut], responses=ERRORS,
            tags=["tasks"])
async def task_types(res: Res, _: Owner) -> list[dict[str, Any]]:
    """Every declared task type with its policy and the JSON schema of its params."""
    return [t.schema() for t in res.catalogue.all()]


@router.get("/tasks/{task_id}", response_model=TaskSnapshot, responses=ERRORS,
            tags=["tasks"])
async def get_task(task_id: str, res: Res, owner: Owner) -> TaskSnapshot:
    """A snapshot of one task: status, progress, result or error, and the language-model
    tokens its run used (``usage``)."""
    task = await store_read.get_task(res.engine, parse_task_id(task_id), owner)
    if task is None:
        raise NotFound(f"task {task_id!r} not found")
    if task.task_type == BATCH_TASK_TYPE:  # the parent's snapshot carries the aggregate
        b = await store_batches.get_batch(res.pool, task.task_id, owner)
        if b is not None and b.aggregate is not None:
            task.batch = {**batches.state(b, b.aggregate),
                          "children_url": f"/batches/{b.batch_id}/children"}
    usage = await store_llm.run_usage(res.pool, task.task_id)
    return TaskSnapshot.model_validate(task, update={"usage": usage})


@router.get("/tasks/{task_id}/events", response_model=EventPage, responses=ERRORS,
            tags=["tasks"])
async def task_events(
    task_id: str, res: Res, owner: Owner,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> EventPage:
    """The task's event history, oldest first, after sequence number ``after``."""
    events = await store_read.task_events(res.engine, parse_task_id(task_id), owner, after,
                                          limit)
    if events is None:
        raise NotFound(f"task {task_id!r} not found")
    return EventPage(items=events,
                     next_after=events[-1].seq if len(events) == limit else None)


@router.get("/tasks/{task_id}/steps", response_model=list[StepRead], responses=ERRORS,
            tags=["tasks"])
async def task_steps(task_id: str, res: Res, owner: Owner) -> list[StepRead]:
    """The task's completed durable steps (``ctx.step``), in run order, with their results
    and the attempt that completed each: what a retry or a re-drive will not run again."""
    steps = await store_read.task_steps(res.engine, parse_task_id(task_id), owner)
    if steps is None:
        raise NotFound(f"task {task_id!r} not found")
    return steps


@router.post("/tasks/{task_id}/cancel", response_model=TaskRead, responses=ERRORS,
             tags=["tasks"])
async def cancel_task(task_id: str, res: Res, owner: Owner) -> dict[str, Any]:
    """Cancel: a pending task never starts; a running one is stopped within about a second.

    Idempotent: cancelling a cancelled task returns it unchanged; a task that already
    completed or failed is 409.
    """
    task = await load_task(res, owner, task_id)
    if task.task_type == BATCH_TASK_TYPE:  # the batch's parent: its children with it
        await cancel_batch(res, owner, uuid.UUID(task.task_id))
        return task_json(await load_task(res, owner, task_id))
    return task_json(await cancel(res, owner, task_id))


@router.delete("/tasks/{task_id}", status_code=204, responses=ERRORS, tags=["tasks"])
async def delete_task(task_id: str, res: Res, owner: Owner) -> None:
    """Delete a finished task with its events and its upload (unless an unfinished task
    still uses that upload). A pending or running task is 409: cancel it first."""
    refused = await store_ops.delete_finished_task(res.pool, owner, parse_task_id(task_id))
    if refused == "missing":
        raise NotFound(f"task {task_id!r} not found")
    if refused is not None:
        raise Conflict(f"task is {refused}; only a finished task can be deleted (cancel it "
                       "first)")


@router.post("/tasks/{task_id}/retry", response_model=TaskRead, responses=ERRORS,
             tags=["tasks"])
async def retry_task(task_id: str, res: Res, owner: Owner) -> dict[str, Any]:
    """Re-drive a failed or cancelled task: same id, its history continues, a fresh attempt
    budget. A pending, running or completed task is 409."""
    task = await load_task(res, owner, task_id)
    if task.task_type == BATCH_TASK_TYPE:  # only its failed and cancelled children
        await redrive_batch(res, owner, uuid.UUID(task.task_id))
        return task_json(await load_task(res, owner, task_id))
    return task_json(await redrive(res, owner, task_id))


@router.get("/dead-letters", response_model=DeadLetterPage, responses=ERRORS,
            tags=["tasks"])
async def dead_letters(
    res: Res, owner: Owner,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> DeadLetterPage:
    """Failed tasks (attempts exhausted, or a permanent error), newest first, each with its
    last error and its attempt history. Re-drive one with ``POST /tasks/{id}/retry``."""
    page = await _page(res, owner, [Status.FAILED], [], limit, cursor)
    return DeadLetterPage(items=await _with_history(res, page.items),
                          next_cursor=page.next_cursor)


@router.get("/admin/dead-letters", response_model=DeadLetterPage, responses=ERRORS,
            tags=["admin"])
async def all_dead_letters(
    res: Res, _: Admin,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
) -> DeadLetterPage:
    """Dead letters across tenants (admin keys only); ``tenant`` narrows to one."""
    tasks = await store_read.failed_tasks_all(res.engine, tenant, limit)
    return DeadLetterPage(items=await _with_history(res, tasks), next_cursor=None)


async def _with_history(res: Resources, tasks: list[TaskRead]) -> list[DeadLetter]:
    """Dead letters as listed: each task with its attempt history."""
    history = await store_read.attempt_history(res.engine, [t.task_id for t in tasks])
    return [DeadLetter(task=t, history=history[t.task_id]) for t in tasks]
