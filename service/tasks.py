"""What the API does to one task beyond submitting it: find it (for its owner only), show
it, cancel it, re-drive it. Routes call these and stay thin."""

import uuid
from datetime import datetime
from typing import Any

import orjson

from service.deps import Resources
from service.errors import Conflict, NotFound, parse_id
from taskstream.core import control, metrics, store, store_batches
from taskstream.core.events import NewEvent
from taskstream.core.models import TaskRead
from taskstream.core.pending import append_pending
from taskstream.core.states import EventType, Outcome, Status, is_terminal

#: A cancel retries this often when the task moves on between the read and the write.
_CANCEL_TRIES = 3


def task_json(task: store.Task) -> dict[str, Any]:
    out = task.to_json()
    base = f"/tasks/{task.task_id}"
    out["links"] = {"self": base, "stream": f"{base}/stream", "events": f"{base}/events"}
    return out


#: TaskRead's fields in its order, as FastAPI writes a response_model (UTC as "Z").
_TASK_READ_FIELDS = tuple(TaskRead.model_fields)
_JSON_OPTIONS = orjson.OPT_UTC_Z
_TIMES = ("created_at", "updated_at", "started_at", "finished_at")


def task_read_json(task: store.Task) -> bytes:
    """``task_json`` as the JSON FastAPI writes for it through ``response_model=TaskRead``,
    without validating a model per request (POST /tasks); tests/test_models.py holds the
    two together."""
    out = task_json(task)
    for name in _TIMES:  # datetimes, not to_json's text: orjson writes UTC as "Z"
        out[name] = getattr(task, name)
    run_at = out["run_at"]
    if run_at is not None:  # stored as ISO text; TaskRead writes it as a datetime
        out["run_at"] = datetime.fromisoformat(run_at)
    return orjson.dumps({k: out[k] for k in _TASK_READ_FIELDS}, option=_JSON_OPTIONS)


def parse_task_id(task_id: str) -> uuid.UUID:
    return parse_id(task_id, "task")


async def load_task(res: Resources, owner: str, task_id: str) -> store.Task:
    """The caller's task, or 404 — for a malformed id and for another tenant's task alike."""
    task = await store.get_task(res.pool, parse_task_id(task_id), owner)
    if task is None:
        raise NotFound(f"task {task_id!r} not found")
    return task


async def cancel(res: Resources, owner: str, task_id: str) -> store.Task:
    """A pending task is cancelled at once; a running one is asked to stop (its worker hears
    it on the control channel, or at its next heartbeat). Cancelling a cancelled task
    changes nothing; a completed or failed one is 409."""
    task = await load_task(res, owner, task_id)
    for _ in range(_CANCEL_TRIES):
        if task.status == Status.CANCELLED:
            return task
        if is_terminal(task.status):
            raise Conflict(f"task already {task.status}; nothing to cancel")
        pending = task.status == Status.PENDING
        done = await res.eventlog.append(NewEvent(
            task_id=task.task_id, owner=owner,
            type=EventType.CANCELLED if pending else EventType.CANCEL_REQUESTED,
            error="cancelled by request" if pending else None,
            message=None if pending else "cancellation requested",
        ))
        if done.outcome == Outcome.OK:
            if pending:  # a running one is counted by its worker when it stops
                metrics.task_event(metrics.CANCELLED, task.task_type)
            else:
                await control.publish_cancel(res.arq, res.settings.namespace, task.task_id)
            break
        task = await load_task(res, owner, task_id)  # it moved on meanwhile: look again
    return await load_task(res, owner, task_id)


async def redrive(res: Resources, owner: str, task_id: str) -> store.Task:
    """Run a failed or cancelled task again: same id, its history continues, a fresh attempt
    budget. Any other status is 409."""
    task = await load_task(res, owner, task_id)
    if await store_batches.parent_of(res.pool, uuid.UUID(task.task_id)) is not None:
        raise Conflict("this task belongs to a batch: retry the batch (POST /tasks/{parent}"
                       "/retry), which re-runs its failed and cancelled children")
    if task.status not in (Status.FAILED, Status.CANCELLED):
        raise Conflict(f"task is {task.status}; only failed or cancelled tasks can be retried")
    done = await append_pending(res.eventlog, res.arq, res.settings, NewEvent(
        task_id=task.task_id, owner=owner, type=EventType.REDRIVEN,
        message="re-driven by request", data={"previous_error": task.error},
    ), options=task.options)
    if done.outcome != Outcome.OK:
        raise Conflict("task changed meanwhile; look at it again")
    return await load_task(res, owner, task_id)
