"""SQL of durable steps and waits (migrations 090, 095): what a run has done, what it waits
for, and the signals that end a wait."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskstream.core.store import Executor, transaction


@dataclass(slots=True, frozen=True)
class StepRecord:
    idx: int
    name: str
    attempt: int
    result: Any


async def recorded_steps(db: Executor, task_id: uuid.UUID) -> list[StepRecord]:
    rows = await db.fetch(
        "SELECT idx, name, attempt, result FROM task_steps WHERE task_id = $1 ORDER BY idx",
        task_id)
    return [StepRecord(r["idx"], r["name"], r["attempt"], r["result"]) for r in rows]


async def record_step(db: Executor, task_id: uuid.UUID, attempt: int, idx: int, name: str,
                      result: Any, started_at: datetime) -> bool:
    """Record a completed step, only while ``attempt`` holds the running task (the task row is
    share-locked, so a new attempt cannot start between the check and the insert). False:
    the attempt was superseded, or the step was already recorded."""
    row = await db.fetchrow(
        """WITH holder AS (
               SELECT 1 FROM tasks
               WHERE task_id = $1 AND attempts = $2 AND status = 'running' FOR SHARE)
           INSERT INTO task_steps (task_id, idx, name, attempt, result, started_at)
           SELECT $1, $3, $4, $2, $5::jsonb, $6 FROM holder
           ON CONFLICT DO NOTHING RETURNING idx""",
        task_id, attempt, idx, name, result, started_at)
    return row is not None


# --- waits and signals ---------------------------------------------------------------------

@dataclass(slots=True, frozen=True)
class WaitState:
    """A wait as the run sees it when it asks: signalled (payload set) or not, and when it
    times out (None: never)."""

    signalled: bool
    payload: Any
    deadline: datetime | None
    now: datetime


async def begin_wait(db: Executor, task_id: uuid.UUID, name: str,
                     seconds: float | None) -> WaitState:
    """Register that the run waits for ``name`` (the first time: its deadline starts now;
    again after a resume: the deadline stays) and say whether the signal is already here."""
    row = await db.fetchrow(
        """INSERT INTO task_waits AS w (task_id, name, deadline)
           VALUES ($1, $2, now() + make_interval(secs => $3))
           ON CONFLICT (task_id, name) DO UPDATE
               SET deadline = coalesce(w.deadline, excluded.deadline)
           RETURNING signalled_at IS NOT NULL AS signalled, payload, deadline, now() AS now""",
        task_id, name, seconds)
    assert row is not None
    return WaitState(row["signalled"], row["payload"], row["deadline"], row["now"])


async def suspend_wait(db: Executor, task_id: uuid.UUID, name: str) -> bool:
    """Mark the wait suspended (the run is about to give up its slot). Returns whether the
    signal arrived meanwhile (then the run must not sleep: it resumes itself)."""
    row = await db.fetchrow(
        """UPDATE task_waits SET suspended = true, resumed_at = NULL
           WHERE task_id = $1 AND name = $2 RETURNING signalled_at IS NOT NULL AS signalled""",
        task_id, name)
    return bool(row and row["signalled"])


async def reset_wait(db: Executor, task_id: uuid.UUID, name: str) -> None:
    """Forget a timed-out wait, so that a re-drive of the failed task waits afresh."""
    await db.execute("DELETE FROM task_waits WHERE task_id = $1 AND name = $2 "
                     "AND signalled_at IS NULL", task_id, name)


async def claim_resume(db: Executor, task_id: uuid.UUID, name: str) -> bool:
    """Take the one right to re-queue a suspended run for this wait. True once per
    suspension, to whoever asks first (the signal's request, the run, the sweeper)."""
    row = await db.fetchrow(
        """UPDATE task_waits SET resumed_at = now()
           WHERE task_id = $1 AND name = $2 AND suspended AND resumed_at IS NULL
           RETURNING 1""", task_id, name)
    return row is not None


class SignalRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True, frozen=True)
class Delivered:
    """A signal stored. ``suspended``: the run was already suspended on it (so the caller
    should try to resume it); else the run picks it up when it asks."""

    suspended: bool


async def deliver_signal(db: Executor, task_id: uuid.UUID, owner: str | None, name: str,
                         payload: Any) -> Delivered | None:
    """Store a signal for a task's wait. None: no such task (for this owner). Raises
    SignalRefused('finished') for a finished task, SignalRefused('already_signalled') for a
    second signal of the same name (signals are single-use)."""
    async with transaction(db) as conn:
        task = await conn.fetchrow(
            "SELECT status FROM tasks WHERE task_id = $1 AND ($2::text IS NULL OR owner = $2)"
            " FOR SHARE", task_id, owner)
        if task is None:
            return None
        if task["status"] in ("completed", "failed", "cancelled"):
            raise SignalRefused("finished")
        row = await conn.fetchrow(
            """INSERT INTO task_waits AS w (task_id, name, payload, signalled_at)
               VALUES ($1, $2, $3::jsonb, now())
               ON CONFLICT (task_id, name) DO UPDATE
                   SET payload = excluded.payload, signalled_at = excluded.signalled_at
                   WHERE w.signalled_at IS NULL
               RETURNING suspended""", task_id, name, payload)
        if row is None:
            raise SignalRefused("already_signalled")
        return Delivered(suspended=bool(row["suspended"]))


async def due_waits(db: Executor, signal_grace: float, limit: int = 100
                    ) -> list[tuple[uuid.UUID, str, bool]]:
    """Suspended runs nobody re-queued: (task_id, name, timed_out). Timed out: the deadline
    passed without a signal. Not timed out: the signal came more than ``signal_grace``
    seconds ago, but whoever delivered it died (or lost the database) before re-queueing."""
    rows = await db.fetch(
        """SELECT w.task_id, w.name, w.signalled_at IS NULL AS timed_out
           FROM task_waits w JOIN tasks t USING (task_id)
           WHERE w.suspended AND w.resumed_at IS NULL AND t.status = 'pending'
             AND (w.deadline <= now() OR
                  w.signalled_at < now() - make_interval(secs => $1))
           ORDER BY coalesce(w.signalled_at, w.deadline) LIMIT $2""", signal_grace, limit)
    return [(r["task_id"], r["name"], r["timed_out"]) for r in rows]


async def task_state(db: Executor, task_id: uuid.UUID) -> tuple[str, str, dict[str, Any]] | None:
    """(status, owner, options) of a task: what re-queueing it needs."""
    row = await db.fetchrow("SELECT status, owner, options FROM tasks WHERE task_id = $1",
                            task_id)
    return (row["status"], row["owner"], row["options"]) if row else None
