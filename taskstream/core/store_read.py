"""The read side and key management: SQLModel queries on an async session over asyncpg.

``store.py`` keeps the hot paths (appends, submissions, claims, leases, stream replay) on
the asyncpg pool; everything here is a request-scoped read whose cost is one query, where
typed queries and the models' one definition are worth more than the microseconds.

Each call opens its own session and closes it before returning, so no caller holds a
connection while it waits (a streaming response in particular holds none).
"""

import base64
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, tuple_, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from taskstream.core.db import TRANSIENT_DB_ERRORS
from taskstream.core.models import (
    TIMESTAMPTZ,
    ApiKey,
    EventRead,
    Schedule,
    ScheduleRead,
    StepRead,
    Task,
    TaskEvent,
    TaskRead,
    TaskStep,
    WorkerType,
)
from taskstream.core.states import EventType, Status


@asynccontextmanager
async def _session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session for one call. SQLAlchemy wraps the driver's errors; a transient one (the
    server restarted, a pooled connection was dropped) is re-raised as the asyncpg error
    the hot paths raise, so the edge answers it the same way (503 + Retry-After). SQLAlchemy
    has already discarded the dead connections by then."""
    try:
        async with AsyncSession(engine) as s:
            yield s
    except DBAPIError as exc:
        cause: BaseException | None = exc.orig
        while cause is not None and not isinstance(cause, TRANSIENT_DB_ERRORS):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None  # the driver's own error; SQLAlchemy's wrapper adds nothing


# --- tasks -----------------------------------------------------------------------------------


async def get_task(engine: AsyncEngine, task_id: uuid.UUID, owner: str) -> TaskRead | None:
    """The owner's task; another tenant's task is simply not found."""
    async with _session(engine) as s:
        row = (await s.exec(
            select(Task).where(Task.task_id == task_id, Task.owner == owner)
        )).first()
        return TaskRead.of(row) if row else None


def encode_cursor(task: TaskRead) -> str:
    """Where the next page starts: after this task in (created_at, task_id) order."""
    raw = json.dumps([task.created_at.isoformat(), str(task.task_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Raises ValueError on anything that is not a cursor we issued."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, tid = json.loads(raw)
        return datetime.fromisoformat(created), uuid.UUID(tid)
    except Exception as exc:  # any decoding failure means a bad cursor
        raise ValueError("malformed cursor") from exc


async def list_tasks(
    engine: AsyncEngine,
    owner: str,
    *,
    status: Sequence[Status] = (),
    task_type: Sequence[str] = (),
    limit: int,
    cursor: tuple[datetime, uuid.UUID] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    text: str | None = None,
) -> list[TaskRead]:
    """Newest first, keyset pagination on (created_at, task_id) (index tasks_owner_created).

    ``text``: a case-insensitive substring of the message or the error (matched literally:
    ``%`` and ``_`` in it are not wildcards)."""
    q = select(Task).where(Task.owner == owner)
    if status:
        q = q.where(col(Task.status).in_(status))
    if task_type:
        q = q.where(col(Task.task_type).in_(task_type))
    if created_after is not None:
        q = q.where(col(Task.created_at) >= created_after)
    if created_before is not None:
        q = q.where(col(Task.created_at) < created_before)
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        q = q.where(col(Task.message).ilike(pattern, escape="\\")
                    | col(Task.error).ilike(pattern, escape="\\"))
    if cursor is not None:
        q = q.where(tuple_(col(Task.created_at), col(Task.task_id)) < tuple_(*cursor))
    q = q.order_by(col(Task.created_at).desc(), col(Task.task_id).desc()).limit(limit)
    async with _session(engine) as s:
        return [TaskRead.of(r) for r in await s.exec(q)]


async def failed_tasks_all(engine: AsyncEngine, owner: str | None, limit: int
                           ) -> list[TaskRead]:
    """Failed tasks of every tenant (or one), newest first — for operators."""
    q = select(Task).where(Task.status == Status.FAILED)
    if owner is not None:
        q = q.where(Task.owner == owner)
    q = q.order_by(col(Task.finished_at).desc().nulls_last()).limit(limit)
    async with _session(engine) as s:
        return [TaskRead.of(r) for r in await s.exec(q)]


# --- events ----------------------------------------------------------------------------------


async def task_events(engine: AsyncEngine, task_id: uuid.UUID, owner: str, after: int,
                      limit: int) -> list[EventRead] | None:
    """The owner's task's events after seq ``after``, oldest first; None: no such task.

    Writers commit asynchronously (migration 030): the events are made durable (ts_flush, in
    a transaction that commits) before anyone sees them, as store.events_after does.
    """
    async with _session(engine) as s:
        if not await _owns(s, task_id, owner):
            return None
        events = [EventRead.of(r) for r in await s.exec(
            select(TaskEvent).where(TaskEvent.task_id == task_id, TaskEvent.seq > after)
            .order_by(col(TaskEvent.seq)).limit(limit)
        )]
        if events:
            await s.exec(select(func.ts_flush()))
            await s.commit()  # the flush waits at COMMIT; a rollback would not wait
        return events


async def _owns(s: AsyncSession, task_id: uuid.UUID, owner: str) -> bool:
    """Whether the task exists and is the owner's (else the caller answers 404)."""
    found = (await s.exec(
        select(Task.task_id).where(Task.task_id == task_id, Task.owner == owner))).first()
    return found is not None


async def task_steps(engine: AsyncEngine, task_id: uuid.UUID, owner: str
                     ) -> list[StepRead] | None:
    """The owner's task's recorded durable steps, in run order; None: no such task."""
    async with _session(engine) as s:
        if not await _owns(s, task_id, owner):
            return None
        return [StepRead.model_validate(r, from_attributes=True) for r in await s.exec(
            select(TaskStep).where(TaskStep.task_id == task_id).order_by(col(TaskStep.idx)))]


#: The lifecycle events a dead letter's history shows.
_HISTORY_TYPES = (EventType.STARTED, EventType.RETRYING, EventType.REQUEUED, EventType.FAILED,
                  EventType.CANCELLED, EventType.REDRIVEN)


async def attempt_history(engine: AsyncEngine, task_ids: Sequence[uuid.UUID]
                          ) -> dict[uuid.UUID, list[EventRead]]:
    """The lifecycle events of several tasks (for the dead-letter listing), in order."""
    out: dict[uuid.UUID, list[EventRead]] = {t: [] for t in task_ids}
    if not task_ids:
        return out
    q = (select(TaskEvent)
         .where(col(TaskEvent.task_id).in_(task_ids), col(TaskEvent.type).in_(_HISTORY_TYPES))
         .order_by(col(TaskEvent.task_id), col(TaskEvent.seq)))
    async with _session(engine) as s:
        for r in await s.exec(q):
            out[r.task_id].append(EventRead.of(r))
    return out


# --- API keys --------------------------------------------------------------------------------


async def create_api_key(engine: AsyncEngine, key_id: str, tenant: str, name: str, role: str,
                         secret_hash: str) -> None:
    # An INSERT, not ``add(ApiKey(...))``: created_at is the database's now().
    async with _session(engine) as s:
        await s.exec(insert(ApiKey).values(key_id=key_id, tenant=tenant, name=name, role=role,
                                           secret_hash=secret_hash))
        await s.commit()


async def get_api_key(engine: AsyncEngine, key_id: str) -> ApiKey | None:
    """The lookup behind authentication (cached per token by core.auth.KeyCache)."""
    async with _session(engine) as s:
        return await s.get(ApiKey, key_id)


async def list_api_keys(engine: AsyncEngine, tenant: str | None = None) -> list[ApiKey]:
    q = select(ApiKey)
    if tenant is not None:
        q = q.where(ApiKey.tenant == tenant)
    async with _session(engine) as s:
        return list(await s.exec(q.order_by(col(ApiKey.created_at))))


async def revoke_api_key(engine: AsyncEngine, key_id: str) -> bool:
    """False when there is no such key or it was already revoked."""
    async with _session(engine) as s:
        done = await s.exec(
            update(ApiKey)
            .where(col(ApiKey.key_id) == key_id, col(ApiKey.revoked_at).is_(None))
            .values(revoked_at=func.now())
        )
        await s.commit()
        return done.rowcount == 1


# --- cron schedules --------------------------------------------------------------------------

async def list_schedules(engine: AsyncEngine, owner: str) -> list[ScheduleRead]:
    """The owner's schedules, oldest first."""
    async with _session(engine) as s:
        rows = await s.exec(select(Schedule).where(Schedule.owner == owner)
                            .order_by(col(Schedule.created_at), col(Schedule.schedule_id)))
        return [ScheduleRead.model_validate(r) for r in rows]


async def get_schedule(engine: AsyncEngine, schedule_id: uuid.UUID, owner: str
                       ) -> ScheduleRead | None:
    """The owner's schedule; another tenant's is simply not found."""
    async with _session(engine) as s:
        row = (await s.exec(select(Schedule).where(Schedule.schedule_id == schedule_id,
                                                   Schedule.owner == owner))).first()
        return ScheduleRead.model_validate(row) if row else None


# --- the dashboard's overview ----------------------------------------------------------------

def _scoped(q: Any, owner: str | None) -> Any:
    return q if owner is None else q.where(Task.owner == owner)


async def status_counts(engine: AsyncEngine, owner: str | None
                        ) -> list[tuple[str, str, str, int]]:
    """(tenant, task type, status, how many) now; owner None: every tenant."""
    q = _scoped(select(Task.owner, Task.task_type, Task.status, func.count()), owner)
    q = q.group_by(col(Task.owner), col(Task.task_type), col(Task.status))
    async with _session(engine) as s:
        return [(o, t, str(st), n) for o, t, st, n in await s.exec(q)]


async def queue_depths(engine: AsyncEngine, owner: str | None
                       ) -> list[tuple[str, int, float | None]]:
    """Per task type: pending tasks, and the age in seconds of the oldest one that is due
    (a delayed task waits for its ``run_at`` before it counts as waiting)."""
    due = func.coalesce(Task.options["run_at"].astext.cast(TIMESTAMPTZ), Task.created_at)
    age = func.extract("epoch", func.now() - func.min(due).filter(due <= func.now()))
    q = _scoped(select(Task.task_type, func.count(), age)
                .where(Task.status == Status.PENDING), owner)
    q = q.group_by(col(Task.task_type)).order_by(col(Task.task_type))
    async with _session(engine) as s:
        return [(t, n, None if a is None else float(a)) for t, n, a in await s.exec(q)]


async def finished_per_minute(engine: AsyncEngine, owner: str | None, minutes: int
                              ) -> list[tuple[datetime, int, int, int]]:
    """(minute, completed, failed, cancelled) for the minutes with finished tasks among the
    last ``minutes``, oldest first."""
    minute = func.date_trunc("minute", Task.finished_at)
    q = _scoped(select(minute,
                       func.count().filter(col(Task.status) == Status.COMPLETED),
                       func.count().filter(col(Task.status) == Status.FAILED),
                       func.count().filter(col(Task.status) == Status.CANCELLED))
                .where(col(Task.finished_at) > func.now() - func.make_interval(0, 0, 0, 0, 0,
                                                                                minutes)),
                owner)
    q = q.group_by(minute).order_by(minute)
    async with _session(engine) as s:
        return [(m, c, f, x) for m, c, f, x in await s.exec(q)]


async def workers(engine: AsyncEngine, seen_within: float
                  ) -> list[tuple[str, datetime, dict[str, str], int]]:
    """Workers whose heartbeat touched their row within ``seen_within`` seconds: (worker id,
    last heartbeat, task type -> schema hash, tasks running on it now)."""
    since = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, seen_within)
    async with _session(engine) as s:
        rows = await s.exec(select(WorkerType).where(col(WorkerType.seen_at) > since))
        found: dict[str, tuple[datetime, dict[str, str]]] = {}
        for r in rows:
            seen, types = found.setdefault(r.worker_id, (r.seen_at, {}))
            types[r.task_type] = r.schema_hash
            found[r.worker_id] = (max(seen, r.seen_at), types)
        running = dict((await s.exec(
            select(Task.worker_id, func.count())
            .where(Task.status == Status.RUNNING, col(Task.worker_id).in_(list(found)))
            .group_by(col(Task.worker_id)))).all()) if found else {}
    return [(w, seen, types, running.get(w, 0))
            for w, (seen, types) in sorted(found.items())]
