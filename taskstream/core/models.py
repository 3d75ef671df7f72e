"""The one definition of every persisted row and of the API shapes derived from them.

Base / ``table=True`` / Read, as SQLModel intends: a ``*Base`` holds the columns a row and
its wire shape share, the table class adds the columns only the server sees, the ``*Read``
class adds what the API derives (links, the event's result/error). The schema itself is
made by the SQL migrations; ``tests/test_models.py`` holds these classes to it column by
column. Shared by both processes: no FastAPI, no arq here.
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Double, Integer, LargeBinary, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, UserDefinedType
from sqlmodel import Field, SQLModel

from taskstream.core.events import event_error, event_result
from taskstream.core.schedules import Misfire
from taskstream.core.states import EventType, Status
from taskstream.declaration import Priority

# Column types, spelled as the migrations spell them (SQLModel's defaults would say varchar
# for str and float4 for float; test_models compares against the database).
TIMESTAMPTZ = DateTime(timezone=True)


class _StrEnumText(TypeDecorator[Any]):
    """A text column read back as a StrEnum (the values are checked by the database or by
    core.states, not by a PostgreSQL enum type, so adding a value needs no migration)."""

    impl = Text
    cache_ok = True
    enum: type[Status] | type[EventType]

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else self.enum(value)


class StatusText(_StrEnumText):
    cache_ok = True  # SQLAlchemy reads it from each class itself
    enum = Status


class EventTypeText(_StrEnumText):
    cache_ok = True
    enum = EventType


# --- tenants ---------------------------------------------------------------------------------

class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"

    owner: str = Field(primary_key=True, sa_type=Text)
    last_seq: int = Field(sa_type=BigInteger)  # the tenant stream's cursor
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)
    #: Finished tasks and uploads older than this are pruned (None: the deployment's default).
    retention_days: float | None = Field(sa_type=Double)


# --- tasks -----------------------------------------------------------------------------------

class TaskBase(SQLModel):
    """What a task's row and its snapshot share."""

    task_id: uuid.UUID = Field(primary_key=True)
    task_type: str = Field(sa_type=Text)
    status: Status = Field(sa_type=StatusText)
    progress: float = Field(sa_type=Double)
    message: str | None = Field(sa_type=Text)
    result: Any = Field(sa_type=JSONB, nullable=True)
    error: str | None = Field(sa_type=Text)
    params: dict[str, Any] = Field(sa_type=JSONB)
    attempts: int = Field(sa_type=Integer)
    max_attempts: int = Field(sa_type=Integer)
    failures: int = Field(sa_type=Integer)
    failure_reason: str | None = Field(sa_type=Text)
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)
    updated_at: datetime = Field(sa_type=TIMESTAMPTZ)
    started_at: datetime | None = Field(sa_type=TIMESTAMPTZ)
    finished_at: datetime | None = Field(sa_type=TIMESTAMPTZ)


class Task(TaskBase, table=True):
    __tablename__ = "tasks"

    owner: str = Field(sa_type=Text, foreign_key="tenants.owner")
    last_seq: int = Field(sa_type=BigInteger)  # the task's event counter
    cancel_requested: bool = Field(sa_type=Boolean)
    worker_id: str | None = Field(sa_type=Text)
    idempotency_key: str | None = Field(sa_type=Text)
    request_hash: str | None = Field(sa_type=Text)
    crashes: int = Field(sa_type=Integer)
    lease_expires_at: datetime | None = Field(sa_type=TIMESTAMPTZ)
    options: dict[str, Any] = Field(sa_type=JSONB)
    parent_id: uuid.UUID | None = Field(default=None)  # a batch's child: its parent task


class Links(SQLModel):
    self: str
    stream: str
    events: str

    @classmethod
    def of(cls, task_id: uuid.UUID | str) -> "Links":
        base = f"/tasks/{task_id}"
        return cls(self=base, stream=f"{base}/stream", events=f"{base}/events")


class TaskRead(TaskBase):
    """A task's snapshot: ``GET /tasks/{id}``, list items, what submit and cancel return."""

    type: str  # the same as task_type, under the name the API's clients send
    last_event_id: int  # the newest event's seq: where a stream of this task resumes
    priority: Priority  # from its options, where submission resolved it
    run_at: datetime | None  # a delayed task does not start before this
    links: Links
    #: A batch's parent only: its aggregate (counts per status, percent, policy); the
    #: children's parent id, for a child.
    batch: dict[str, Any] | None = None
    parent_id: uuid.UUID | None = None

    @classmethod
    def of(cls, row: Task) -> "TaskRead":
        return cls.model_validate(row, update={
            "type": row.task_type, "last_event_id": row.last_seq, "links": Links.of(row.task_id),
            "priority": row.options.get("priority", Priority.NORMAL),
            "run_at": row.options.get("run_at"),
        })


# --- events ----------------------------------------------------------------------------------

class EventBase(SQLModel):
    """What an event's row and its wire JSON share."""

    task_id: uuid.UUID = Field(primary_key=True)
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    tenant_seq: int = Field(sa_type=BigInteger)
    type: EventType = Field(sa_type=EventTypeText)
    status: Status = Field(sa_type=StatusText)
    progress: float = Field(sa_type=Double)
    message: str | None = Field(sa_type=Text)
    data: Any = Field(sa_type=JSONB, nullable=True)
    attempt: int = Field(sa_type=Integer)
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)


class TaskEvent(EventBase, table=True):
    __tablename__ = "task_events"

    owner: str = Field(sa_type=Text)  # routing (tenant streams); not on the wire


class EventRead(EventBase):
    """One event as every reader sees it: the Redis channel, SSE ``data:``, the history.

    ``core.events.Event.encode`` writes this shape with orjson on the hot path;
    ``tests/test_models.py`` holds the two together.
    """

    result: Any  # the completed event's data
    error: str | None  # a failed or cancelled event's message

    @classmethod
    def of(cls, row: TaskEvent) -> "EventRead":
        return cls.model_validate(row, update={
            "result": event_result(row.type, row.data),
            "error": event_error(row.type, row.message),
        })


# --- uploads and document chunks -------------------------------------------------------------

class Upload(SQLModel, table=True):
    __tablename__ = "uploads"

    upload_id: uuid.UUID = Field(primary_key=True)
    owner: str = Field(sa_type=Text, foreign_key="tenants.owner")
    filename: str = Field(sa_type=Text)  # sanitized client name, metadata only
    content_type: str = Field(sa_type=Text)
    size: int = Field(sa_type=BigInteger)
    sha256: str = Field(sa_type=Text)
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)


class UploadChunk(SQLModel, table=True):
    __tablename__ = "upload_chunks"

    upload_id: uuid.UUID = Field(primary_key=True, foreign_key="uploads.upload_id")
    idx: int = Field(primary_key=True, sa_type=Integer)
    data: bytes = Field(sa_type=LargeBinary)


class DocumentChunk(SQLModel, table=True):
    __tablename__ = "document_chunks"

    task_id: uuid.UUID = Field(primary_key=True, foreign_key="tasks.task_id")
    chunk_index: int = Field(primary_key=True, sa_type=Integer)
    page: int | None = Field(sa_type=Integer)
    content: str = Field(sa_type=Text)
    owner: str = Field(sa_type=Text)
    upload_id: uuid.UUID = Field(foreign_key="uploads.upload_id")


class Vector(UserDefinedType[list[float]]):
    """pgvector's ``vector`` without a fixed dimension (each space has its own; see
    migration 110). Written and read through core/store_search.py's SQL only."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "VECTOR"


class EmbeddingSpace(SQLModel, table=True):
    """A vector space: one embedder kind, model and dimension (README: Search)."""

    __tablename__ = "embedding_spaces"

    space_id: int = Field(primary_key=True, sa_type=Integer)
    kind: str = Field(sa_type=Text)
    model: str = Field(sa_type=Text)
    dim: int = Field(sa_type=Integer)
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)


class ChunkVector(SQLModel, table=True):
    """A chunk's vector in one space; a chunk has one per space it was embedded in."""

    __tablename__ = "chunk_vectors"

    space_id: int = Field(primary_key=True, sa_type=Integer,
                          foreign_key="embedding_spaces.space_id")
    task_id: uuid.UUID = Field(primary_key=True)
    chunk_index: int = Field(primary_key=True, sa_type=Integer)
    owner: str = Field(sa_type=Text)
    embedding: list[float] = Field(sa_type=Vector)


class TenantSpace(SQLModel, table=True):
    """The space a tenant's search reads; a reindex moves it."""

    __tablename__ = "tenant_spaces"

    owner: str = Field(primary_key=True, sa_type=Text, foreign_key="tenants.owner")
    space_id: int = Field(sa_type=Integer, foreign_key="embedding_spaces.space_id")
    switched_at: datetime = Field(sa_type=TIMESTAMPTZ)


# --- durable steps and waits (ctx.step, ctx.wait_for) -----------------------------------------

class StepBase(SQLModel):
    """A completed durable step, as recorded and as ``GET /tasks/{id}/steps`` shows it."""

    idx: int = Field(primary_key=True, sa_type=Integer)  # order within the run, from 0
    name: str = Field(sa_type=Text)
    attempt: int = Field(sa_type=Integer)  # the attempt that completed it
    result: Any = Field(default=None, sa_type=JSONB, nullable=True)
    started_at: datetime = Field(sa_type=TIMESTAMPTZ)
    finished_at: datetime = Field(sa_type=TIMESTAMPTZ)


class TaskStep(StepBase, table=True):
    __tablename__ = "task_steps"

    task_id: uuid.UUID = Field(primary_key=True, foreign_key="tasks.task_id")


class StepRead(StepBase):
    pass


class TaskWait(SQLModel, table=True):
    """A run's wait for a signal, or a signal that came first (migration 095)."""

    __tablename__ = "task_waits"

    task_id: uuid.UUID = Field(primary_key=True, foreign_key="tasks.task_id")
    name: str = Field(primary_key=True, sa_type=Text)
    suspended: bool = Field(sa_type=Boolean)
    deadline: datetime | None = Field(sa_type=TIMESTAMPTZ)
    payload: Any = Field(default=None, sa_type=JSONB, nullable=True)
    signalled_at: datetime | None = Field(sa_type=TIMESTAMPTZ)
    resumed_at: datetime | None = Field(sa_type=TIMESTAMPTZ)
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)


# --- tenancy ---------------------------------------------------------------------------------

class ApiKey(SQLModel, table=True):
    """A tenant's API key; only the hash of its secret is stored."""

    __tablename__ = "api_keys"

    key_id: str = Field(primary_key=True, sa_type=Text)  # public part of the token
    tenant: str = Field(sa_type=Text)
    name: str = Field(sa_type=Text)
    role: str = Field(sa_type=Text)  # user | admin
    secret_hash: str = Field(sa_type=Text)
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)
    revoked_at: datetime | None = Field(sa_type=TIMESTAMPTZ)


class ServerSecret(SQLModel, table=True):
    __tablename__ = "server_secrets"

    name: str = Field(primary_key=True, sa_type=Text)
    value: str = Field(sa_type=Text)


class WorkerType(SQLModel, table=True):
    """A task type a running worker loads (touched with its heartbeat)."""

    __tablename__ = "worker_types"

    worker_id: str = Field(primary_key=True, sa_type=Text)
    task_type: str = Field(primary_key=True, sa_type=Text)
    schema_hash: str = Field(sa_type=Text)
    seen_at: datetime = Field(sa_type=TIMESTAMPTZ)


# --- cron schedules --------------------------------------------------------------------------

class ScheduleBase(SQLModel):
    """What a schedule's row and its API shape share."""

    schedule_id: uuid.UUID = Field(primary_key=True)
    task_type: str = Field(sa_type=Text)
    params: dict[str, Any] = Field(sa_type=JSONB)
    cron: str = Field(sa_type=Text)
    timezone: str = Field(sa_type=Text)
    misfire: Misfire = Field(sa_type=Text)
    declared: bool = Field(sa_type=Boolean)  # from a @task(cron=...) declaration
    paused: bool = Field(sa_type=Boolean)
    disabled: bool = Field(sa_type=Boolean)  # its declaration is gone from the code
    next_run_at: datetime = Field(sa_type=TIMESTAMPTZ)
    last_fired_at: datetime | None = Field(sa_type=TIMESTAMPTZ)
    fired: int = Field(sa_type=BigInteger)  # tasks created so far
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)
    updated_at: datetime = Field(sa_type=TIMESTAMPTZ)


class Schedule(ScheduleBase, table=True):
    __tablename__ = "schedules"

    owner: str = Field(sa_type=Text, foreign_key="tenants.owner")


class ScheduleRead(ScheduleBase):
    """A schedule as ``/schedules`` returns it."""


# --- batches (migration 100) -----------------------------------------------------------------

class BatchRow(SQLModel, table=True):
    """A batch: its parent task's id, policy and the driver's state."""

    __tablename__ = "batches"

    batch_id: uuid.UUID = Field(primary_key=True)
    owner: str = Field(sa_type=Text)
    total: int = Field(sa_type=Integer)
    policy: str = Field(sa_type=Text)  # any | all | threshold
    threshold: int | None = Field(sa_type=Integer)
    cancel_requested: bool = Field(sa_type=Boolean)
    breached: bool = Field(sa_type=Boolean)
    done: bool = Field(sa_type=Boolean)
    emitted: dict[str, Any] | None = Field(sa_type=JSONB, nullable=True)
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)


class BatchCount(SQLModel, table=True):
    """One shard of a batch's aggregate: the deltas one database backend wrote."""

    __tablename__ = "batch_counts"

    batch_id: uuid.UUID = Field(primary_key=True)
    shard: int = Field(primary_key=True, sa_type=Integer)
    pending: int = Field(sa_type=Integer)
    running: int = Field(sa_type=Integer)
    completed: int = Field(sa_type=Integer)
    failed: int = Field(sa_type=Integer)
    cancelled: int = Field(sa_type=Integer)
    progress: float = Field(sa_type=Double)


class BatchEnd(SQLModel, table=True):
    """A child's terminal event, until the driver has put it on its parent's stream."""

    __tablename__ = "batch_ends"

    batch_id: uuid.UUID = Field(primary_key=True)
    task_id: uuid.UUID = Field(primary_key=True)
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    status: str = Field(sa_type=Text)
    error: str | None = Field(sa_type=Text)


# --- webhooks (migration 120) ----------------------------------------------------------------

class Webhook(SQLModel, table=True):
    """A tenant's URL that receives its tasks' events of ``event_types``, signed with
    ``secret`` (shown to the tenant once)."""

    __tablename__ = "webhooks"

    webhook_id: uuid.UUID = Field(primary_key=True)
    owner: str = Field(sa_type=Text, foreign_key="tenants.owner")
    url: str = Field(sa_type=Text)
    secret: str = Field(sa_type=Text)
    event_types: list[str] = Field(sa_type=ARRAY(Text))
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)


class WebhookDelivery(SQLModel, table=True):
    """The outbox: one event for one webhook, its attempts and their outcome."""

    __tablename__ = "webhook_deliveries"

    delivery_id: int = Field(primary_key=True, sa_type=BigInteger)
    webhook_id: uuid.UUID = Field(foreign_key="webhooks.webhook_id")
    owner: str = Field(sa_type=Text)
    task_id: uuid.UUID
    seq: int = Field(sa_type=BigInteger)
    event_type: str = Field(sa_type=Text)
    status: str = Field(sa_type=Text)  # pending | delivered | failed
    attempts: int = Field(sa_type=Integer)
    next_attempt_at: datetime = Field(sa_type=TIMESTAMPTZ)
    locked_until: datetime | None = Field(sa_type=TIMESTAMPTZ)
    response_code: int | None = Field(sa_type=Integer)
    error: str | None = Field(sa_type=Text)
    history: list[dict[str, Any]] = Field(sa_type=JSONB)
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)
    finished_at: datetime | None = Field(sa_type=TIMESTAMPTZ)


# --- language-model token usage --------------------------------------------------------------

class LlmUsage(SQLModel, table=True):
    """One model call's tokens (migration 130)."""

    __tablename__ = "llm_usage"

    task_id: uuid.UUID = Field(primary_key=True)
    step: str = Field(primary_key=True, sa_type=Text)
    attempt: int = Field(primary_key=True, sa_type=Integer)
    owner: str = Field(sa_type=Text)
    provider: str = Field(sa_type=Text)
    model: str = Field(sa_type=Text)
    prompt_tokens: int = Field(sa_type=Integer)
    completion_tokens: int = Field(sa_type=Integer)
    estimated: bool = Field(sa_type=Boolean)
    created_at: datetime = Field(sa_type=TIMESTAMPTZ)


class LlmTenantUsage(SQLModel, table=True):
    """A tenant's running totals."""

    __tablename__ = "llm_usage_tenants"

    owner: str = Field(primary_key=True, sa_type=Text)
    calls: int = Field(sa_type=BigInteger)
    prompt_tokens: int = Field(sa_type=BigInteger)
    completion_tokens: int = Field(sa_type=BigInteger)
    updated_at: datetime = Field(sa_type=TIMESTAMPTZ)


class StepUsage(SQLModel):
    step: str
    attempt: int
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool  # the provider did not report its counts: ours


class RunUsage(SQLModel):
    """A run's tokens: the totals of all its model calls, and the calls (the first 100)."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool  # some call's counts are estimates
    steps: list[StepUsage]


class TenantUsage(SQLModel):
    owner: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
