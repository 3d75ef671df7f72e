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
}


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
