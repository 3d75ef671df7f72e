"""Typed views of the API's JSON: tasks, events, task types, uploads, pages.

The models accept fields a newer service adds (kept in ``model_extra``) and keep statuses and
event types as plain strings, so an older client keeps working when the service grows; compare
them with the ``Status`` and ``EventType`` constants.

``Task`` and ``Event`` mirror the service's ``core.models.TaskRead`` / ``EventRead`` (which
need SQLAlchemy, so a client-only install cannot import them); tests/test_models.py fails
when their fields, types or optionality drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The one definition of statuses and event types, shared with the service (core.states is
# plain enums: importing it pulls in nothing of the server).
from taskstream.core.states import TERMINAL as TERMINAL
from taskstream.core.states import EventType as EventType
from taskstream.core.states import Status as Status


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Links(_Model):
    self: str = ""
    stream: str = ""
    events: str = ""


class Task(_Model):
    """A snapshot of one task (``GET /tasks/{id}``)."""

    task_id: str
    type: str = ""
    task_type: str = ""
    status: str
    progress: float = 0.0
    message: str | None = None
    result: Any = None
    error: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    max_attempts: int = 1
    failures: int = 0
    failure_reason: str | None = None
    last_event_id: int = 0
    priority: str = "normal"
    run_at: datetime | None = None  # a delayed task does not start before this
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: Links = Field(default_factory=Links)
    batch: dict[str, Any] | None = None  # a batch's parent: its aggregate
    parent_id: str | None = None  # a batch's child: its parent

    @property
    def terminal(self) -> bool:
        """Completed, failed or cancelled: nothing more will happen to it."""
        return self.status in TERMINAL


class Event(_Model):
    """One event of a task; also a snapshot of the task just after it."""

    task_id: str
    seq: int
    tenant_seq: int = 0
    type: str
    status: str
    progress: float = 0.0
    message: str | None = None
    data: Any = None
    result: Any = None
    error: str | None = None
    attempt: int = 0
    created_at: datetime

    @property
    def terminal(self) -> bool:
        """The task's last event: its status is completed, failed or cancelled."""
        return self.status in TERMINAL


class TaskType(_Model):
    """An entry of the catalogue (``GET /task-types``)."""

    type: str
    description: str = ""
    max_attempts: int = 1
    timeout: float | None = None
    soft_timeout: float | None = None
    priority: str = "normal"
    limit: int | None = None
    key_limit: int | None = None
    cron: str | None = None
    params_schema: dict[str, Any] = Field(default_factory=dict)


class Upload(_Model):
    """The answer to ``POST /upload``: the stored file and the task processing it."""

    task_id: str
    status: str
    upload_id: str
    filename: str
    size: int
    links: Links = Field(default_factory=Links)


class UploadChild(_Model):
    """One file of a batch upload and the task processing it."""

    task_id: str
    status: str
    upload_id: str
    filename: str
    size: int


class BatchUpload(_Model):
    """The answer to ``POST /upload`` with several files: one batch, a child per file."""

    task_id: str  # the batch's parent task (also ``batch_id``)
    batch_id: str
    status: str
    children: list[UploadChild]
    links: Links = Field(default_factory=Links)


class Batch(_Model):
    """A submitted batch (``POST /batches``): its parent task and the children's ids."""

    task_id: str
    status: str
    children: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    links: Links = Field(default_factory=Links)


class ChildEnd(_Model):
    """A child's terminal event, as its parent's stream carries it."""

    task_id: str
    seq: int = 0
    status: str
    error: str | None = None


class BatchState(_Model):
    """A batch's aggregate (``GET /batches/{id}`` and every update of its stream)."""

    task_id: str
    status: str
    total: int
    counts: dict[str, int]
    percent: float
    policy: str = "any"
    finished: list[ChildEnd] = Field(default_factory=list)  # ended since the last update

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def of(cls, event: Event) -> BatchState:
        """The state an 'aggregate' (or the parent's terminal) event carries."""
        data = event.data if isinstance(event.data, dict) else \
            event.result if isinstance(event.result, dict) else {}
        return cls.model_validate({"total": 0, "counts": {}, "percent": event.progress,
                                   **data, "task_id": event.task_id, "status": event.status})


class TaskPage(_Model):
    items: list[Task]
    next_cursor: str | None = None


class EventPage(_Model):
    items: list[Event]
    next_after: int | None = None


class DeadLetter(_Model):
    """A failed task with the events of its attempts (``GET /dead-letters``)."""

    task: Task
    history: list[Event] = Field(default_factory=list)


class DeadLetterPage(_Model):
    items: list[DeadLetter]
    next_cursor: str | None = None


#: Anything that names a task: its id, or an object with a ``task_id``.
TaskRef = str | Task | Upload | Event


def task_id_of(ref: TaskRef) -> str:
    return ref if isinstance(ref, str) else ref.task_id
