"""Taskstream's Python client: ``AsyncClient`` (async), ``Client`` (blocking), and the
``taskstream`` command-line tool (``client.cli``).

Configuration comes from arguments or the environment: ``TASKSTREAM_URL`` (default
``http://127.0.0.1:8000``) and ``TASKSTREAM_API_KEY``.
"""

from taskstream.client.api import AsyncClient, outcome
from taskstream.client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    TaskCancelled,
    TaskError,
    TaskFailed,
    TaskstreamError,
    TransportError,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    WaitTimeout,
)
from taskstream.client.models import (
    Batch,
    BatchState,
    BatchUpload,
    DeadLetter,
    Event,
    EventType,
    Status,
    Task,
    TaskType,
    Upload,
)
from taskstream.client.retry import RetryPolicy
from taskstream.client.streams import EventStream
from taskstream.client.sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Batch",
    "BatchState",
    "BatchUpload",
    "Client",
    "Conflict",
    "DeadLetter",
    "Event",
    "EventStream",
    "EventType",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "Status",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskFailed",
    "TaskType",
    "TaskstreamError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "Upload",
    "WaitTimeout",
    "outcome",
]
