"""Taskstream's Python client: ``AsyncClient`` (async), ``Client`` (blocking), and the
``taskstream`` command-line tool (``client.cli``).

Configuration comes from arguments or the environment: ``TASKSTREAM_URL`` (default
``http://127.0.0.1:8000``) and ``TASKSTREAM_API_KEY``.
"""

from client.api import AsyncClient, outcome
from client.errors import (
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
from client.models import DeadLetter, Event, EventType, Status, Task, TaskType, Upload
from client.retry import RetryPolicy
from client.streams import EventStream
from client.sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
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
