"""Batches in the web process: submit one (validate every child, then ONE transaction for the
parent, its children and their events; then publish and queue the children), show one with
its aggregate, cancel it (the children with it) and re-drive it (only the children that
failed or were cancelled). The parent's lifecycle itself is the worker's batch driver's
(worker/batches.py)."""

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from service.deps import Resources
from service.errors import ApiError, Conflict, NotFound, Unprocessable
from service.submissions import request_hash
from service.tasks import task_json
from taskstream.core import batches, queue, store, store_batches
from taskstream.core.constants import BATCH_TASK_TYPE
from taskstream.core.events import NewEvent
from taskstream.core.pending import append_pending, enqueue_pending
from taskstream.core.states import EventType, Outcome, Status
from taskstream.core.store_batches import Batch, BatchExists


@dataclass(slots=True)
class Child:
    """One child as asked for: its type, params and per-task options; ``fingerprint``
    replaces the params in the idempotency comparison (an upload's file digest)."""

    task_type: str
    params: dict[str, Any]
    options: dict[str, Any]
    fingerprint: dict[str, Any] | None = None


def check_policy(policy: str, threshold: int | None, n: int) -> None:
    if policy == batches.Policy.THRESHOLD:
        if threshold is None or not 1 <= threshold <= n:
            raise Unprocessable(f"policy 'threshold' needs a threshold between 1 and {n}")
    elif threshold is not None:
        raise Unprocessable("threshold goes with policy 'threshold' only")


async def submit_batch(res: Resources, owner: str, kids: list[Child], policy: str,
                       threshold: int | None, idempotency_key: str | None
                       ) -> tuple[store.Task, list[store.Task], bool]:
    """(parent, children, newly created). Any bad child: a 4xx naming its index, nothing
    created. An idempotent replay returns the earlier parent and its children."""
    limit = res.settings.batch_max_children
    if not kids:
        raise Unprocessable("a batch needs at least one task")
    if len(kids) > limit:
        raise Unprocessable(f"a batch holds at most {limit} tasks (TASKSTREAM_BATCH_MAX_"
                            f"CHILDREN); this one has {len(kids)}")
    check_policy(policy, threshold, len(kids))
    sub = res.submissions
    items: list[store.NewTask] = []
    checked: set[str] = set()
    for i, kid in enumerate(kids):
        try:
            if kid.task_type == BATCH_TASK_TYPE:
                raise Unprocessable("a batch cannot contain a batch")
            clean = sub.validate(kid.task_type, kid.params)
            if kid.task_type not in checked:
                await sub.check_workers(kid.task_type)
                checked.add(kid.task_type)
            items.append(sub.new_task(owner, kid.task_type, clean, kid.options))
        except ApiError as exc:
            exc.detail = f"tasks[{i}] ({kid.task_type!r}): {exc.detail}"
            exc.args = (exc.detail,)
            raise
    await sub.admit(owner, len(items))
    # The request's hash only matters with an Idempotency-Key (a replay must match it):
    # without one, 1,000 children are not hashed for nothing.
    digest = request_hash(BATCH_TASK_TYPE, {
        "policy": policy, "threshold": threshold,
        "tasks": [[k.task_type, k.fingerprint or it.params, k.options]
                  for k, it in zip(kids, items, strict=True)]}) if idempotency_key else None
    parent = store.NewTask(owner=owner, task_type=BATCH_TASK_TYPE,
                           params={"total": len(items), "policy": policy,
                                   "threshold": threshold},
                           max_attempts=1, idempotency_key=idempotency_key,
                           request_hash=digest)
    try:
        task, made = await store_batches.create_batch(res.pool, parent, items, policy,
                                                      threshold)
    except BatchExists as exists:
        if exists.task.request_hash != digest:
            raise Conflict("Idempotency-Key was already used with a different request body"
                           ) from None
        await res.eventlog.publish([])  # what we read is on disk before we answer
        return exists.task, await store_batches.children(
            res.pool, uuid.UUID(exists.task.task_id)), False
    jobs = [queue.Job.of(ev.task_id, ev.seq, t.options) for t, ev in made[1:]]
    # Durable first; then published and queued at once.
    await res.eventlog.publish([ev for _, ev in made], then=lambda: enqueue_pending(
        res.arq, res.settings, jobs))
    return task, [t for t, _ in made[1:]], True


def batch_json(b: Batch, kids: list[store.Task] | None = None) -> dict[str, Any]:
    assert b.aggregate is not None
    out: dict[str, Any] = {"batch_id": b.batch_id, "task_id": b.batch_id,
                           "status": b.parent_status, **batches.state(b, b.aggregate),
                           "cancel_requested": b.cancel_requested,
                           "links": {"self": f"/batches/{b.batch_id}",
                                     "task": f"/tasks/{b.batch_id}",
                                     "stream": f"/tasks/{b.batch_id}/stream"}}
    if kids is not None:
        out["children"] = [{"task_id": k.task_id, "type": k.task_type, "status": k.status,
                            "progress": k.progress, "error": k.error,
                            "filename": k.params.get("filename")} for k in kids]
    return out


def created_json(parent: store.Task, kids: list[store.Task]) -> dict[str, Any]:
    out = task_json(parent)
    out["batch_id"] = parent.task_id
    out["children"] = [k.task_id for k in kids]
    return out


async def load_batch(res: Resources, owner: str, batch_id: uuid.UUID | str) -> Batch:
    bid = batch_id if isinstance(batch_id, uuid.UUID) else _parse(batch_id)
    b = await store_batches.get_batch(res.pool, bid, owner)
    if b is None:
        raise NotFound(f"batch {str(batch_id)!r} not found")
    return b


def _parse(batch_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(batch_id)
    except ValueError:
        raise NotFound(f"batch {batch_id!r} not found") from None


async def cancel_batch(res: Resources, owner: str, batch_id: uuid.UUID) -> None:
    """Mark the batch cancelled and cancel its children; the driver ends the parent
    ('cancelled') once every child has ended. Cancelling a cancelled batch changes nothing;
    a completed or failed one is 409."""
    b = await load_batch(res, owner, batch_id)
    if b.parent_status == Status.CANCELLED:
        return
    if b.parent_status in (Status.COMPLETED, Status.FAILED):
        raise Conflict(f"batch already {b.parent_status}; nothing to cancel")
    async with store.transaction(res.pool) as conn:
        locked = await store_batches.lock_batch(conn, batch_id)
        if locked is None or locked.done:
            raise Conflict("batch ended meanwhile; look at it again")
        await store_batches.set_cancel_requested(conn, batch_id)
    if b.parent_status == Status.RUNNING:
        await res.eventlog.append(NewEvent(task_id=b.batch_id, owner=owner,
                                           type=EventType.CANCEL_REQUESTED,
                                           message="batch cancellation requested"))
    await batches.cancel_children(res.pool, res.eventlog, res.arq, res.settings.namespace,
                                  batch_id, "cancelled with its batch")


async def redrive_batch(res: Resources, owner: str, batch_id: uuid.UUID) -> int:
    """Re-run the children that failed or were cancelled (same ids, their histories go on),
    then the parent: pending again, driven as before. Only a failed or cancelled batch; 409
    otherwise. Returns how many children were re-driven."""
    b = await load_batch(res, owner, batch_id)
    if b.parent_status not in (Status.FAILED, Status.CANCELLED):
        raise Conflict(f"batch is {b.parent_status}; only failed or cancelled batches can be "
                       "retried")
    # The batch row stays locked (the driver skips it) until children and parent are
    # pending again: no tick may see the old ends and end the parent twice.
    async with store.transaction(res.pool) as conn:
        locked = await store_batches.lock_batch(conn, batch_id)
        if locked is None or locked.parent_status not in (Status.FAILED, Status.CANCELLED):
            raise Conflict("batch changed meanwhile; look at it again")
        kids = await store_batches.children(res.pool, batch_id,
                                            [Status.FAILED, Status.CANCELLED])
        outcomes = await asyncio.gather(*(append_pending(
            res.eventlog, res.arq, res.settings, NewEvent(
                task_id=kid.task_id, owner=owner, type=EventType.REDRIVEN,
                message="re-driven with its batch", data={"previous_error": kid.error}),
            options=kid.options) for kid in kids))
        again = sum(done.outcome == Outcome.OK for done in outcomes)
        done = await res.eventlog.append(NewEvent(
            task_id=b.batch_id, owner=owner, type=EventType.REDRIVEN,
            message=f"re-driven: {again} children run again",
            data={"previous_status": b.parent_status}))
        if done.outcome != Outcome.OK:
            raise Conflict("batch changed meanwhile; look at it again")
        await store_batches.reopen(conn, batch_id)
    return again
