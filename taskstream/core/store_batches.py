"""The SQL of batches (migration 100): create a parent with its children in one transaction,
read a parent's aggregate (the sum of its few counter shards, never a scan of its
children), and what the worker's batch driver claims, reads and marks."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from taskstream.core.events import Event
from taskstream.core.states import EventType, Status
from taskstream.core.store import (
    _TASK_COLS,
    Executor,
    NewTask,
    Task,
    ensure_tenant,
    task_by_key,
    transaction,
)

#: The statuses a parent's counts are kept for, in the order they are shown.
COUNTED = (Status.PENDING, Status.RUNNING, Status.COMPLETED, Status.FAILED, Status.CANCELLED)


class BatchExists(Exception):
    """The parent's idempotency key was used before: the earlier parent is ``task``."""

    def __init__(self, task: Task) -> None:
        super().__init__(task.task_id)
        self.task = task


@dataclass(slots=True)
class Aggregate:
    """A parent's counts per status and its percent (each child weighted by its progress)."""

    total: int
    counts: dict[str, int]
    progress_sum: float = 0.0

    @property
    def percent(self) -> float:
        return round(min(100.0, max(0.0, self.progress_sum / self.total)), 2)

    @property
    def ended(self) -> int:
        return self.counts[Status.COMPLETED] + self.counts[Status.FAILED] + \
            self.counts[Status.CANCELLED]

    @property
    def unsuccessful(self) -> int:
        return self.counts[Status.FAILED] + self.counts[Status.CANCELLED]

    @property
    def all_ended(self) -> bool:
        return self.ended == self.total

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "counts": dict(self.counts), "percent": self.percent,
                "ended": self.ended}


@dataclass(slots=True)
class Batch:
    batch_id: str
    owner: str
    total: int
    policy: str
    threshold: int | None
    cancel_requested: bool
    breached: bool
    done: bool
    emitted: dict[str, Any] | None
    parent_status: str = ""
    parent_last_seq: int = 0
    aggregate: Aggregate | None = None
    ends: list["ChildEnd"] = field(default_factory=list)

    def policy_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": self.policy}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


@dataclass(slots=True)
class ChildEnd:
    task_id: str
    seq: int
    status: str
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "seq": self.seq, "status": self.status,
                "error": self.error}


async def create_batch(pool: asyncpg.Pool, parent: NewTask, children: Sequence[NewTask],
                       policy: str, threshold: int | None
                       ) -> tuple[Task, list[tuple[Task, Event]]]:
    """The parent, its children, their 'created' events and the batch's rows in ONE
    transaction. Returns (parent, [(child, its created event)]) with the parent's own
    created event first in the list. An idempotent replay raises BatchExists (nothing
    written)."""
    ids = [uuid.uuid4() for _ in range(len(children) + 1)]
    items = [parent, *children]
    async with transaction(pool) as conn:
        await ensure_tenant(conn, parent.owner)
        rows = await conn.fetch(
            "SELECT * FROM ts_create_family($1::uuid[], $2::uuid[], $3::text[], $4::text[],"
            " $5::jsonb[], $6::integer[], $7::text[], $8::text[], $9::jsonb[])",
            ids, [None] + [ids[0]] * len(children), [i.owner for i in items],
            [i.task_type for i in items], [i.params for i in items],
            [i.max_attempts for i in items], [i.idempotency_key for i in items],
            [i.request_hash for i in items], [i.options for i in items])
        made = {r["task_id"]: r for r in rows}
        if ids[0] not in made:
            # rolls the children back
            raise BatchExists(await task_by_key(conn, parent.owner, parent.idempotency_key))
        await conn.execute(
            """INSERT INTO batches (batch_id, owner, total, policy, threshold)
               VALUES ($1, $2, $3, $4, $5)""", ids[0], parent.owner, len(children), policy,
            threshold)
        await conn.execute(
            "INSERT INTO batch_counts (batch_id, shard, pending) VALUES ($1, 0, $2)",
            ids[0], len(children))
    out: list[tuple[Task, Event]] = []
    for tid in ids:
        r = made[tid]
        task = Task.from_row(r)
        out.append((task, Event(
            task_id=task.task_id, seq=1, tenant_seq=r["tenant_seq"],
            type=EventType.CREATED.value, status=task.status, progress=0.0, message=None,
            data=None, attempt=0, created_at=task.created_at, owner=task.owner)))
    return out[0][0], out


_BATCH_COLS = """b.batch_id, b.owner, b.total, b.policy, b.threshold, b.cancel_requested,
    b.breached, b.done, b.emitted, t.status AS parent_status, t.last_seq AS parent_last_seq"""


def _batch(r: asyncpg.Record) -> Batch:
    return Batch(str(r["batch_id"]), r["owner"], r["total"], r["policy"], r["threshold"],
                 r["cancel_requested"], r["breached"], r["done"], r["emitted"],
                 r["parent_status"], r["parent_last_seq"])


async def aggregates(db: Executor, batch_ids: Sequence[uuid.UUID], totals: dict[str, int]
                     ) -> dict[str, Aggregate]:
    rows = await db.fetch(
        """SELECT batch_id, sum(pending)::int AS pending, sum(running)::int AS running,
                  sum(completed)::int AS completed, sum(failed)::int AS failed,
                  sum(cancelled)::int AS cancelled, sum(progress) AS progress
           FROM batch_counts WHERE batch_id = ANY($1::uuid[]) GROUP BY batch_id""",
        list(batch_ids))
    return {str(r["batch_id"]): Aggregate(
        totals[str(r["batch_id"])], {s.value: int(r[s.value]) for s in COUNTED},
        float(r["progress"])) for r in rows}


async def get_batch(db: Executor, batch_id: uuid.UUID, owner: str | None = None
                    ) -> Batch | None:
    """A batch with its current aggregate (the owner's only, when given)."""
    r = await db.fetchrow(
        f"""SELECT {_BATCH_COLS} FROM batches b JOIN tasks t ON t.task_id = b.batch_id
            WHERE b.batch_id = $1 AND ($2::text IS NULL OR b.owner = $2)""", batch_id, owner)
    if r is None:
        return None
    batch = _batch(r)
    batch.aggregate = (await aggregates(db, [batch_id], {batch.batch_id: batch.total}))[
        batch.batch_id]
    return batch


async def lock_batch(conn: asyncpg.Connection, batch_id: uuid.UUID) -> Batch | None:
    """Inside the caller's transaction: the batch row, locked (the driver skips it)."""
    r = await conn.fetchrow(
        f"""SELECT {_BATCH_COLS} FROM batches b JOIN tasks t ON t.task_id = b.batch_id
            WHERE b.batch_id = $1 FOR UPDATE OF b""", batch_id)
    return _batch(r) if r else None


async def claim_open(conn: asyncpg.Connection, limit: int) -> list[Batch]:
    """Inside the driver's transaction: open batches no other driver holds, locked, each
    with its aggregate and its children's terminal events not yet on its stream."""
    rows = await conn.fetch(
        f"""SELECT {_BATCH_COLS} FROM batches b JOIN tasks t ON t.task_id = b.batch_id
            WHERE NOT b.done ORDER BY b.created_at LIMIT $1 FOR UPDATE OF b SKIP LOCKED""",
        limit)
    if not rows:
        return []
    batches = [_batch(r) for r in rows]
    ids = [uuid.UUID(b.batch_id) for b in batches]
    aggs = await aggregates(conn, ids, {b.batch_id: b.total for b in batches})
    ends: dict[str, list[ChildEnd]] = {}
    for r in await conn.fetch(
            """SELECT batch_id, task_id, seq, status, error FROM batch_ends
               WHERE batch_id = ANY($1::uuid[]) ORDER BY batch_id, task_id, seq""", ids):
        ends.setdefault(str(r["batch_id"]), []).append(
            ChildEnd(str(r["task_id"]), r["seq"], r["status"], r["error"]))
    for b in batches:
        b.aggregate = aggs[b.batch_id]
        b.ends = ends.get(b.batch_id, [])
    return batches


async def mark(conn: asyncpg.Connection, b: Batch, emitted: dict[str, Any], *,
               done: bool, breached: bool) -> None:
    """The driver's record of what it put on the parent's stream; the ends it carried go."""
    await conn.execute(
        "UPDATE batches SET emitted = $2, done = $3, breached = $4 WHERE batch_id = $1",
        uuid.UUID(b.batch_id), emitted, done, breached)
    if b.ends:
        await conn.execute(
            """DELETE FROM batch_ends e USING unnest($2::uuid[], $3::bigint[]) AS x(t, s)
               WHERE e.batch_id = $1 AND e.task_id = x.t AND e.seq = x.s""",
            uuid.UUID(b.batch_id), [uuid.UUID(e.task_id) for e in b.ends],
            [e.seq for e in b.ends])


async def set_cancel_requested(conn: asyncpg.Connection, batch_id: uuid.UUID) -> None:
    await conn.execute("UPDATE batches SET cancel_requested = true WHERE batch_id = $1",
                       batch_id)


async def reopen(conn: asyncpg.Connection, batch_id: uuid.UUID) -> None:
    """A re-driven batch runs again: its driver state starts over."""
    await conn.execute(
        """UPDATE batches SET done = false, cancel_requested = false, breached = false,
                  emitted = NULL WHERE batch_id = $1""", batch_id)


async def children(db: Executor, batch_id: uuid.UUID, statuses: Sequence[str] | None = None
                   ) -> list[Task]:
    """A batch's children (those in ``statuses``), in creation order — for a cancel or a
    re-drive of the whole batch and for ``GET /batches/{id}``, never per event."""
    rows = await db.fetch(
        f"""SELECT {_TASK_COLS} FROM tasks WHERE parent_id = $1
            AND ($2::text[] IS NULL OR status = ANY($2::text[]))
            ORDER BY created_at, task_id""", batch_id, list(statuses) if statuses else None)
    return [Task.from_row(r) for r in rows]


async def parent_of(db: Executor, task_id: uuid.UUID) -> str | None:
    v = await db.fetchval("SELECT parent_id FROM tasks WHERE task_id = $1", task_id)
    return None if v is None else str(v)
