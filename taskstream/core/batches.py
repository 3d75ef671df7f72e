"""Batches, shared by both processes: the failure policy, the parent's wire shape of its
aggregate, and cancelling a batch's children (the cancel route and the driver's fail-fast).

Policy (``policy`` of ``POST /batches``):

* ``any`` (default) — the batch fails as soon as one child fails or is cancelled;
* ``all`` — it fails only if no child completed;
* ``threshold`` — it fails once ``threshold`` children failed or were cancelled.

A policy broken while children still run is final: their remaining siblings are cancelled
(nothing more can save the batch), and the parent ends ``failed`` once every child has
ended. Otherwise the parent ends when its last child does: ``completed`` (result: the
aggregate), ``failed`` (error: the policy that failed) or ``cancelled`` (by request).
"""

import asyncio
import uuid
from enum import StrEnum
from typing import Any

import asyncpg
from redis.asyncio import Redis

from taskstream.core import control, store_batches
from taskstream.core.eventlog import EventLog
from taskstream.core.events import NewEvent
from taskstream.core.states import EventType, Outcome, Status
from taskstream.core.store_batches import Aggregate, Batch

_CANCEL_ROUNDS = 3


class Policy(StrEnum):
    ANY = "any"
    ALL = "all"
    THRESHOLD = "threshold"


def broken(policy: str, threshold: int | None, agg: Aggregate) -> bool:
    """Whether the batch has failed by its policy (final: no later child can undo it)."""
    if policy == Policy.ANY:
        return agg.unsuccessful > 0
    if policy == Policy.THRESHOLD:
        return agg.unsuccessful >= (threshold or 1)
    return agg.all_ended and agg.counts[Status.COMPLETED] == 0


def summary(agg: Aggregate) -> str:
    """``"7/10 ended: 6 completed, 1 failed"`` — the parent's message."""
    parts = [f"{agg.counts[s]} {s}" for s in (Status.COMPLETED, Status.FAILED, Status.CANCELLED,
                                              Status.RUNNING) if agg.counts[s]]
    return f"{agg.ended}/{agg.total} ended" + (": " + ", ".join(parts) if parts else "")


def state(b: Batch, agg: Aggregate) -> dict[str, Any]:
    """The aggregate as the parent's events and snapshot carry it."""
    return {**agg.to_json(), **b.policy_json()}


def failure(b: Batch, agg: Aggregate) -> str:
    bad = agg.unsuccessful
    if b.policy == Policy.ALL:
        return f"no child completed ({bad} of {agg.total} failed or cancelled; policy all)"
    limit = 1 if b.policy == Policy.ANY else b.threshold
    return (f"{bad} of {agg.total} children failed or were cancelled "
            f"(policy {b.policy}: fails at {limit})")


async def cancel_children(pool: asyncpg.Pool, eventlog: EventLog, redis: Redis,
                          namespace: str, batch_id: uuid.UUID, reason: str) -> int:
    """Cancel every child still pending (at once) or running (asked to stop, like
    ``POST /tasks/{id}/cancel``). A child that moved on meanwhile is looked at again.
    Returns how many were cancelled or asked to stop."""
    touched = 0
    for _ in range(_CANCEL_ROUNDS):
        kids = await store_batches.children(pool, batch_id, [Status.PENDING, Status.RUNNING])
        if not kids:
            break
        asks = [(kid, eventlog.enqueue(NewEvent(
            task_id=kid.task_id, owner=kid.owner,
            type=EventType.CANCELLED if kid.status == Status.PENDING
            else EventType.CANCEL_REQUESTED,
            error=reason if kid.status == Status.PENDING else None,
            message=None if kid.status == Status.PENDING else reason)))
            for kid in kids if not (kid.status == Status.RUNNING and kid.cancel_requested)]
        moved = False
        for kid, fut in asks:
            done = await fut
            if done.outcome == Outcome.OK:
                touched += 1
                if kid.status == Status.RUNNING:
                    await control.publish_cancel(redis, namespace, kid.task_id)
            elif done.outcome == Outcome.ILLEGAL:
                moved = True
        if not moved:
            break
        await asyncio.sleep(0)
    return touched
