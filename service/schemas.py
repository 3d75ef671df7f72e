"""Request and response models of the HTTP API (they are also the OpenAPI document)."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SubmitTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=100, description="A name from GET /task-types.")
    params: dict[str, Any] = Field(default_factory=dict)
    max_attempts: int | None = Field(None, ge=1, le=50,
                                     description="Override the type's retry budget.")
    timeout: float | None = Field(None, gt=0, le=7 * 24 * 3600,
                                  description="Hard time limit in seconds (task cancelled).")
    soft_timeout: float | None = Field(
        None, gt=0, le=7 * 24 * 3600,
        description="Soft time limit: the task's code gets SoftTimeLimitExceeded.")

    def options(self) -> dict[str, Any]:
        return {k: v for k, v in (("max_attempts", self.max_attempts),
                                  ("timeout", self.timeout),
                                  ("soft_timeout", self.soft_timeout)) if v is not None}


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
