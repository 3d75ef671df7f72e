"""The client's error hierarchy, mapped from HTTP once (``error_for``).

    TaskstreamError
    ├── TransportError             the service could not be reached, or the connection broke
    ├── ApiError                   the service answered with an error status
    │   ├── BadRequest             400
    │   ├── Unauthorized           401  (missing or wrong API key)
    │   ├── Forbidden              403
    │   ├── NotFound               404
    │   ├── Conflict               409  (e.g. cancelling a finished task, reused idempotency key)
    │   ├── PayloadTooLarge        413
    │   ├── UnsupportedMediaType   415
    │   ├── Unprocessable          422  (unknown task type, invalid params)
    │   ├── RateLimited            429  (+ retry_after)
    │   └── ServerError            5xx
    │       └── Unavailable        502 / 503 / 504  (+ retry_after)
    ├── TaskError                  a task ended other than by completing
    │   ├── TaskFailed             .error: the task's error message
    │   └── TaskCancelled
    └── WaitTimeout                also a ``TimeoutError``

Every ``ApiError`` carries ``status``, ``code`` and ``detail`` from the service's
``{"error": code, "detail": reason}`` body, and ``retry_after`` (seconds) when the
response said ``Retry-After``.
"""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING, Any

import httpx

from taskstream.core.errorcodes import STATUS, ErrorCode

if TYPE_CHECKING:
    from taskstream.client.models import Event, Task


class TaskstreamError(Exception):
    """Base of every error this client raises."""


class TransportError(TaskstreamError):
    """The request did not get an answer: refused, reset, timed out."""


class ApiError(TaskstreamError):
    status: int = 0
    code: str = "error"

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None) -> None:
        self.status = status if status is not None else type(self).status
        self.code = code or type(self).code
        self.detail = detail
        self.retry_after = retry_after
        super().__init__(f"{self.status} {self.code}: {detail}")


class BadRequest(ApiError):
    status, code = STATUS[ErrorCode.BAD_REQUEST], ErrorCode.BAD_REQUEST


class Unauthorized(ApiError):
    status, code = STATUS[ErrorCode.UNAUTHORIZED], ErrorCode.UNAUTHORIZED


class Forbidden(ApiError):
    status, code = STATUS[ErrorCode.FORBIDDEN], ErrorCode.FORBIDDEN


class NotFound(ApiError):
    status, code = STATUS[ErrorCode.NOT_FOUND], ErrorCode.NOT_FOUND


class Conflict(ApiError):
    status, code = STATUS[ErrorCode.CONFLICT], ErrorCode.CONFLICT


class PayloadTooLarge(ApiError):
    status, code = STATUS[ErrorCode.PAYLOAD_TOO_LARGE], ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(ApiError):
    status, code = STATUS[ErrorCode.UNSUPPORTED_MEDIA_TYPE], ErrorCode.UNSUPPORTED_MEDIA_TYPE


class Unprocessable(ApiError):
    status, code = STATUS[ErrorCode.UNPROCESSABLE], ErrorCode.UNPROCESSABLE


class RateLimited(ApiError):
    status, code = STATUS[ErrorCode.TOO_MANY_REQUESTS], ErrorCode.TOO_MANY_REQUESTS


class ServerError(ApiError):
    status, code = STATUS[ErrorCode.SERVER_ERROR], ErrorCode.SERVER_ERROR


class Unavailable(ServerError):
    status, code = STATUS[ErrorCode.UNAVAILABLE], ErrorCode.UNAVAILABLE


class TaskError(TaskstreamError):
    """A task reached a terminal status other than ``completed``."""

    def __init__(self, task_id: str, message: str, *, error: str | None = None,
                 event: Event | None = None, task: Task | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.error = error
        self.event = event
        self.task = task


class TaskFailed(TaskError):
    pass


class TaskCancelled(TaskError):
    pass


class WaitTimeout(TaskstreamError, TimeoutError):
    def __init__(self, task_id: str, timeout: float, last_event: Event | None = None) -> None:
        super().__init__(f"task {task_id} did not finish within {timeout:g}s")
        self.task_id = task_id
        self.timeout = timeout
        self.last_event = last_event


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PayloadTooLarge,
                UnsupportedMediaType, Unprocessable, RateLimited, Unavailable)
}
_BY_STATUS[502] = _BY_STATUS[504] = Unavailable


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _detail(body: Any, fallback: str) -> tuple[str | None, str]:
    """(code, detail) from our ``{"error","detail"}`` shape, FastAPI's, or anything else."""
    if isinstance(body, dict):
        code = body.get("error") if isinstance(body.get("error"), str) else None
        detail = body.get("detail")
        if isinstance(detail, str):
            return code, detail
        if isinstance(detail, list):  # FastAPI's request-validation errors
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                    parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg")))
            if parts:
                return code, "; ".join(parts)
        if code:
            return code, fallback
    return None, fallback


def error_for(response: httpx.Response) -> ApiError:
    """The typed error for an error response (its body must have been read)."""
    status = response.status_code
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    reason = response.reason_phrase or "error"
    try:
        body: Any = response.json()
    except ValueError:
        text = response.text.strip()
        body = None
        reason = text[:200] if text and "<" not in text[:1] else reason
    code, detail = _detail(body, reason)
    return cls(detail, status=status, code=code,
               retry_after=parse_retry_after(response.headers.get("Retry-After")))


def is_retryable(exc: ApiError) -> bool:
    """Whether the service asked us to come back later (vs. refused the request)."""
    return isinstance(exc, RateLimited | Unavailable)
