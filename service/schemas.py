"""Request and response models of the HTTP API (they are also the OpenAPI document)."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core.tasktypes import TaskOptions


class SubmitTask(TaskOptions):
    type: str = Field(min_length=1, max_length=100, description="A name from GET /task-types.")
    params: dict[str, Any] = Field(default_factory=dict)


class Links(BaseModel):
    self: str
    stream: str
    events: str


class TaskOut(BaseModel):
    task_id: str
    type: str
    task_type: str
    status: str
    progress: float
    message: str | None
    result: Any
    error: str | None
    params: dict[str, Any]
    attempts: int
    max_attempts: int
    failures: int
    failure_reason: str | None
    last_event_id: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: Links


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class EventOut(BaseModel):
    task_id: str
    seq: int
    tenant_seq: int
    type: str
    status: str
    progress: float
    message: str | None
    data: Any
    result: Any
    error: str | None
    attempt: int
    created_at: datetime


class DeadLetter(BaseModel):
    task: TaskOut
    history: list[EventOut]


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    next_cursor: str | None


class EventPage(BaseModel):
    items: list[EventOut]
    next_after: int | None


class TaskTypeOut(BaseModel):
    type: str
    description: str
    max_attempts: int
    timeout: float | None
    soft_timeout: float | None
    params_schema: dict[str, Any]


class UploadOut(BaseModel):
    task_id: str
    status: str
    upload_id: str
    filename: str
    size: int
    links: Links


class ErrorOut(BaseModel):
    error: str
    detail: str


class TicketRequest(BaseModel):
    task_id: str | None = Field(None, max_length=100,
                                description="Bind to one task; omit for the tenant stream.")


class TicketOut(BaseModel):
    ticket: str
    expires_in: float
    stream_url: str
