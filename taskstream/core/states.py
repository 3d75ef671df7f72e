"""The task state machine and the event types that drive it — the one place transitions live.

Every write to a task's status goes through ``core.store.append_events`` with the set of
statuses it may come *from* (computed here); PostgreSQL refuses the write if the row is in
any other status, so an illegal transition is an error, never a silent overwrite.
"""

from enum import StrEnum
from typing import Final


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: Final = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


class EventType(StrEnum):
    CREATED = "created"
    STARTED = "started"
    PROGRESS = "progress"
    LOG = "log"
    PARTIAL = "partial"
    RETRYING = "retrying"
    REQUEUED = "requeued"
    CANCEL_REQUESTED = "cancel_requested"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REDRIVEN = "redriven"
    WAITING = "waiting"  # over a concurrency limit: stays pending, runs when a slot frees
    STEP_STARTED = "step_started"  # ctx.step: a durable step begins (data: step, index)
    STEP_COMPLETED = "step_completed"  # ... and its result is recorded
    TEXT = "text"  # ctx.text_stream: a stream of text (model output) ended; data: its full text
    SUSPENDED = "suspended"  # ctx.wait_for: the run gave up its slot until a signal (or timeout)
    RESUMED = "resumed"  # the signal (or the timeout) came: the run is queued again
    AGGREGATE = "aggregate"  # a batch parent's counts, percent and children that ended


#: For each event type: (statuses the task may be in, status it moves to; None = unchanged).
TRANSITIONS: Final[dict[EventType, tuple[frozenset[Status], Status | None]]] = {
    EventType.CREATED: (frozenset(), Status.PENDING),
    EventType.STARTED: (frozenset({Status.PENDING}), Status.RUNNING),
    EventType.PROGRESS: (frozenset({Status.RUNNING}), None),
    EventType.LOG: (frozenset({Status.RUNNING}), None),
    EventType.PARTIAL: (frozenset({Status.RUNNING}), None),
    EventType.RETRYING: (frozenset({Status.RUNNING}), Status.PENDING),
    EventType.REQUEUED: (frozenset({Status.RUNNING}), Status.PENDING),
    EventType.CANCEL_REQUESTED: (frozenset({Status.RUNNING}), None),
    EventType.COMPLETED: (frozenset({Status.RUNNING}), Status.COMPLETED),
    EventType.FAILED: (frozenset({Status.PENDING, Status.RUNNING}), Status.FAILED),
    EventType.CANCELLED: (frozenset({Status.PENDING, Status.RUNNING}), Status.CANCELLED),
    EventType.REDRIVEN: (frozenset({Status.FAILED, Status.CANCELLED}), Status.PENDING),
    EventType.WAITING: (frozenset({Status.PENDING}), Status.PENDING),
    EventType.STEP_STARTED: (frozenset({Status.RUNNING}), None),
    EventType.STEP_COMPLETED: (frozenset({Status.RUNNING}), None),
    EventType.TEXT: (frozenset({Status.RUNNING}), None),
    EventType.SUSPENDED: (frozenset({Status.RUNNING}), Status.PENDING),
    EventType.RESUMED: (frozenset({Status.PENDING}), Status.PENDING),
    EventType.AGGREGATE: (frozenset({Status.PENDING, Status.RUNNING}), None),
}


class Outcome(StrEnum):
    """What became of one appended event (the SQL functions return these words)."""

    OK = "ok"
    ILLEGAL = "illegal"  # the task is in a status this event may not come from
    FENCED = "fenced"  # written by an attempt that was superseded
    MISSING = "missing"  # no such task
    LIMITED = "limited"  # a start refused: its type or key runs as many as its limit allows


class RunOutcome(StrEnum):
    """How one job run ended, for arq's log (PostgreSQL has the truth)."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRYING = "retrying"
    WAITING = "waiting"  # over a concurrency limit; a later job starts it
    SUSPENDED = "suspended"  # waits for a signal; the signal (or its timeout) re-queues it
    SUPERSEDED = "superseded"  # another attempt took over meanwhile
    NOT_OURS = "not_ours"  # cancelled while queued, or another worker holds it
    MISSING = "missing"  # the job names no task
    ALREADY_FINISHED = "already_finished"


class FailureReason(StrEnum):
    """Why an attempt or a task failed: the ``reason`` of retrying/requeued/failed events and
    the task's ``failure_reason``."""

    ERROR = "error"  # the task raised
    PERMANENT = "permanent"  # the task raised PermanentError: no retry
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    SHUTDOWN = "shutdown"  # its worker stopped; re-queued without spending an attempt
    UNKNOWN_TASK_TYPE = "unknown_task_type"  # no running worker loads its type
    POLICY = "policy"  # a batch whose children broke its failure policy


def allowed_from(event: EventType, *, by_attempt: bool = False) -> frozenset[Status]:
    """Statuses the task may be in for ``event``. A write made by an attempt (a worker's,
    or the sweeper's about it) is valid only while the task runs: once the attempt was
    re-queued or retried, its late writes are refused even before the next one starts."""
    allowed = TRANSITIONS[event][0]
    if by_attempt and event != EventType.STARTED:
        allowed = allowed & {Status.RUNNING}
    return allowed


def target(event: EventType) -> Status | None:
    return TRANSITIONS[event][1]


def is_terminal(status: str) -> bool:
    return status in TERMINAL
