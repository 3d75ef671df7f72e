"""Request and response models of the HTTP API (they are also the OpenAPI document).

A task's snapshot and an event are core.models' ``TaskRead`` and ``EventRead``, the same
classes the rows are defined by; the envelopes around them (pages, dead letters) live here.
"""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

# Re-exported: the API's names for them.
from taskstream.core.models import EventRead as EventRead
from taskstream.core.models import Links as Links
from taskstream.core.models import RunUsage
from taskstream.core.models import TaskRead as TaskRead
from taskstream.core.models import TenantUsage as TenantUsage
from taskstream.core.tasktypes import TaskOptions


class SubmitTask(TaskOptions):
    type: str = Field(min_length=1, max_length=100, description="A name from GET /task-types.")
    params: dict[str, Any] = Field(default_factory=dict)


class TaskSnapshot(TaskRead):
    """``GET /tasks/{id}``: the snapshot plus what only a single task's read shows."""

    usage: RunUsage | None = Field(
        None, description="Language-model tokens of the run (all attempts); null: no model "
        "call was made.")


class TaskPage(BaseModel):
    items: list[TaskRead]
    next_cursor: str | None


class DeadLetter(BaseModel):
    task: TaskRead
    history: list[EventRead]


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    next_cursor: str | None


class EventPage(BaseModel):
    items: list[EventRead]
    next_after: int | None


class TaskTypeOut(BaseModel):
    type: str
    description: str
    max_attempts: int
    timeout: float | None
    soft_timeout: float | None
    priority: str
    limit: int | None
    key_limit: int | None
    cron: str | None
    params_schema: dict[str, Any]


class UploadOut(BaseModel):
    task_id: str
    status: str
    upload_id: str
    filename: str
    size: int
    links: Links


class UploadChild(BaseModel):
    task_id: str
    status: str
    upload_id: str
    filename: str
    size: int


class BatchUploadOut(BaseModel):
    """Several files: one batch (its parent's id is ``task_id``), a child per file."""

    task_id: str
    batch_id: str
    status: str
    links: Links
    children: list[UploadChild]


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


class SearchHitOut(BaseModel):
    upload_id: str
    filename: str
    task_id: str = Field(description="The document_process task that stored the chunk.")
    chunk_index: int
    page: int | None
    score: float = Field(description="Cosine similarity to the query, 1 = same direction.")
    text: str


class SearchOut(BaseModel):
    query: str
    k: int
    hits: list[SearchHitOut]


# --- the dashboard's reads (GET /stats/overview, GET /workers) --------------------------------

class StatusCount(BaseModel):
    tenant: str
    type: str
    status: str
    count: int


class QueueDepth(BaseModel):
    type: str
    pending: int
    oldest_age_seconds: float | None = Field(
        description="Age of the oldest pending task that is due; null: none is due yet.")


class MinuteBucket(BaseModel):
    minute: datetime
    completed: int
    failed: int
    cancelled: int


class StreamsOut(BaseModel):
    scope: str = Field(description="Always 'process': each web process counts its own.")
    open: int = Field(description="Streams this web process holds, every tenant.")
    tenant_open: int = Field(description="Of those, the tenant's.")


class OverviewOut(BaseModel):
    tenant: str | None = Field(description="The tenant shown; null: every tenant (admin).")
    now: datetime
    counts: list[StatusCount]
    queues: list[QueueDepth]
    minutes: int
    throughput: list[MinuteBucket]
    workers_live: int
    streams: StreamsOut


class WorkerOut(BaseModel):
    worker_id: str
    last_heartbeat: datetime
    heartbeat_age_seconds: float
    live: bool = Field(description="Heartbeat within the lease: holds its tasks.")
    running: int
    version: str = Field(description="Short hash over the task types it loads and their "
                                     "parameter schemas: workers that differ run other code.")
    types: dict[str, str]
