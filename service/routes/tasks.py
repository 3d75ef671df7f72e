"""Task routes: submit, list, read, history, cancel, catalogue."""

import hashlib
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import ValidationError

from core import queue, store, store_read
from core.constants import control_channel
from core.events import NewEvent
from core.states import EventType, Status, is_terminal
from core.tasktypes import TASK_TYPES, UnknownTaskType, validate_params
from service.auth import Admin, Owner
from service.deps import Res, Resources
from service.errors import (
    BadRequest,
    Conflict,
    NotFound,
    TooManyRequests,
    Unprocessable,
)
from service.limits import json_depth
from service.schemas import (
    DeadLetter,
    DeadLetterPage,
    ErrorOut,
    EventPage,
    SubmitTask,
    TaskPage,
    TaskRead,
    TaskTypeOut,
)

router = APIRouter()

ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorOut} for c in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
}

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=200,
                       description="Same key and body return the same task.")
]


def task_json(task: store.Task) -> dict[str, Any]:
    out = task.to_json()
    base = f"/tasks/{task.task_id}"
    out["links"] = {"self": base, "stream": f"{base}/stream", "events": f"{base}/events"}
    return out


def parse_task_id(task_id: str) -> uuid.UUID:
    """A malformed id is a task that is not found (404), like another tenant's."""
    try:
        return uuid.UUID(task_id)
    except ValueError:
        raise NotFound(f"task {task_id!r} not found") from None


async def load_task(res: Resources, owner: str, task_id: str) -> store.Task:
    """The caller's task, or 404 — for a malformed id and for another tenant's task alike."""
    task = await store.get_task(res.pool, parse_task_id(task_id), owner)
    if task is None:
        raise NotFound(f"task {task_id!r} not found")
    return task


def request_hash(task_type: str, params: dict[str, Any]) -> str:
    body = json.dumps({"type": task_type, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


async def admit(res: Resources, owner: str) -> None:
    """The per-tenant limits on submissions: 429 (+ Retry-After) when over."""
    await res.rate.check(owner, res.settings.submit_rate_per_tenant)
    inflight = res.inflight.get(owner)
    if inflight is None:
        inflight = await store.inflight_count(res.pool, owner)
        res.inflight.put(owner, inflight)
    if inflight >= res.settings.max_inflight_per_tenant:
        raise TooManyRequests(
            f"{res.settings.max_inflight_per_tenant} tasks already pending or running; "
            "wait for some to finish", retry_after=5)
    res.inflight.admitted(owner)


async def submit(res: Resources, owner: str, task_type: str, params: dict[str, Any],
                 idempotency_key: str | None, *, fingerprint: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, admitted: bool = False,
                 ) -> tuple[store.Task, bool]:
    """Validate, insert (task + 'created' event), enqueue. Returns (task, newly_created).

    ``fingerprint`` replaces the params in the idempotency comparison (an upload compares
    the file's digest, since each upload gets a new id). ``admitted``: the caller already
    ran ``admit`` (an upload does, before it stores a byte).
    """
    if json_depth(params) > res.settings.json_max_depth:
        raise Unprocessable(f"params nest deeper than {res.settings.json_max_depth} levels")
    try:
        model = validate_params(task_type, params)
    except UnknownTaskType:
        known = ", ".join(sorted(TASK_TYPES))
        raise Unprocessable(f"unknown task type {task_type!r}; known types: {known}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
        )
        raise Unprocessable(f"invalid params for {task_type!r}: {problems}") from None
    if not admitted:
        await admit(res, owner)
    clean = model.model_dump(mode="json")
    options = options or {}
    digest = request_hash(task_type, {"p": fingerprint or clean, "o": options})
    task, created = await res.submissions.submit(store.NewTask(
        owner=owner, task_type=task_type, params=clean,
        max_attempts=options.get("max_attempts") or TASK_TYPES[task_type].max_attempts,
        idempotency_key=idempotency_key, request_hash=digest if idempotency_key else None,
        options=options,
    ))
    if created is None:
        if task.request_hash != digest:
            raise Conflict("Idempotency-Key was already used with a different request body")
        return task, False
    return task, True


@router.post("/tasks", status_code=202, response_model=TaskRead, tags=["tasks"],
             responses={**ERRORS, 200: {"model": TaskRead,
                                        "description": "Idempotent replay: the same task."}})
async def create_task(body: SubmitTask, res: Res, owner: Owner, response: Response,
                      idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
    """Submit a task of a registered type; returns at once with its id and links."""
    task, created = await submit(res, owner, body.type, body.params, idempotency_key,
                                 options=body.options())
    response.headers["Location"] = f"/tasks/{task.task_id}"
    if not created:
        response.status_code = 200
    return task_json(task)


@router.get("/tasks", response_model=TaskPage, responses=ERRORS, tags=["tasks"])
async def list_tasks(
    res: Res,
    owner: Owner,
    status: Annotated[list[Status] | None, Query(description="Repeatable.")] = None,
    type: Annotated[list[str] | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> TaskPage:
    """The caller's tasks, newest first; follow ``next_cursor`` for the next page."""
    return await _page(res, owner, status or [], type or [], limit, cursor)


async def _page(res: Resources, owner: str, status: list[Status], types: list[str],
                limit: int, cursor: str | None) -> TaskPage:
    after = None
    if cursor:
        try:
            after = store_read.decode_cursor(cursor)
        except ValueError:
            raise BadRequest("malformed cursor; pass back next_cursor unchanged") from None
    tasks = await store_read.list_tasks(res.engine, owner, status=status, task_type=types,
                                        limit=limit + 1, cursor=after)
    more = len(tasks) > limit
    tasks = tasks[:limit]
    return TaskPage(items=tasks,
                    next_cursor=store_read.encode_cursor(tasks[-1]) if more and tasks else None)


@router.get("/task-types", response_model=list[TaskTypeOut], responses=ERRORS,
            tags=["tasks"])
async def task_types(_: Owner) -> list[dict[str, Any]]:
    """Every registered task type with the JSON schema of its params."""
    return [t.schema() for t in TASK_TYPES.values()]


@router.get("/tasks/{task_id}", response_model=TaskRead, responses=ERRORS, tags=["tasks"])
async def get_task(task_id: str, res: Res, owner: Owner) -> TaskRead:
    """A snapshot of one task (the seed's status endpoint)."""
    task = await store_read.get_task(res.engine, parse_task_id(task_id), owner)
    if task is None:
        raise NotFound(f"task {task_id!r} not found")
    return task


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


@router.post("/tasks/{task_id}/cancel", response_model=TaskRead, responses=ERRORS,
             tags=["tasks"])
async def cancel_task(task_id: str, res: Res, owner: Owner) -> dict[str, Any]:
    """Cancel: a pending task never starts; a running one is stopped within about a second.

    Idempotent: cancelling a cancelled task returns it unchanged; a task that already
    completed or failed is 409.
    """
    task = await load_task(res, owner, task_id)
    for _ in range(3):
        if task.status == Status.CANCELLED:
            return task_json(task)
        if is_terminal(task.status):
            raise Conflict(f"task already {task.status}; nothing to cancel")
        etype = EventType.CANCELLED if task.status == Status.PENDING else \
            EventType.CANCEL_REQUESTED
        done = await res.eventlog.append(NewEvent(
            task_id=task.task_id, owner=owner, type=etype,
            error="cancelled by request" if etype == EventType.CANCELLED else None,
            message=None if etype == EventType.CANCELLED else "cancellation requested",
        ))
        if done.outcome == "ok":
            if etype == EventType.CANCEL_REQUESTED:
                await res.arq.publish(control_channel(res.settings.namespace),
                                      json.dumps({"cancel": task.task_id}))
            break
        task = await load_task(res, owner, task_id)  # it moved on meanwhile: look again
    return task_json(await load_task(res, owner, task_id))


@router.post("/tasks/{task_id}/retry", response_model=TaskRead, responses=ERRORS,
             tags=["tasks"])
async def retry_task(task_id: str, res: Res, owner: Owner) -> dict[str, Any]:
    """Re-drive a failed or cancelled task: same id, its history continues, a fresh attempt
    budget. A pending, running or completed task is 409."""
    task = await load_task(res, owner, task_id)
    if task.status not in (Status.FAILED, Status.CANCELLED):
        raise Conflict(f"task is {task.status}; only failed or cancelled tasks can be retried")
    done = await res.eventlog.append(NewEvent(
        task_id=task.task_id, owner=owner, type=EventType.REDRIVEN,
        message="re-driven by request", data={"previous_error": task.error},
    ))
    if done.outcome != "ok" or done.event is None:
        raise Conflict("task changed meanwhile; look at it again")
    await queue.enqueue_task(res.arq, res.settings, task.task_id, done.event.seq)
    return task_json(await load_task(res, owner, task_id))


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
