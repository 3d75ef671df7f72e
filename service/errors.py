"""The API's error hierarchy, mapped to HTTP once, at the edge (``install``).

    ApiError
    ├── BadRequest            400
    ├── Unauthorized          401  (+ WWW-Authenticate: Bearer)
    ├── Forbidden             403  (admin-only operations)
    ├── NotFound              404  (also another tenant's task: no existence oracle)
    ├── Conflict              409
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415
    ├── Unprocessable         422
    ├── TooManyRequests       429  (+ Retry-After)
    └── Unavailable           503  (+ Retry-After; Redis or PostgreSQL briefly away)

Responses are ``{"error": code, "detail": reason}``; never a stack trace, SQL or a path.
"""

import logging
import uuid

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskstream.core.db import TRANSIENT_DB_ERRORS
from taskstream.core.errorcodes import STATUS, ErrorCode
from taskstream.core.eventlog import EventsLost

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 500
    code = "error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code = STATUS[ErrorCode.BAD_REQUEST], ErrorCode.BAD_REQUEST


class Unauthorized(ApiError):
    status, code = STATUS[ErrorCode.UNAUTHORIZED], ErrorCode.UNAUTHORIZED

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status, code = STATUS[ErrorCode.FORBIDDEN], ErrorCode.FORBIDDEN


class NotFound(ApiError):
    status, code = STATUS[ErrorCode.NOT_FOUND], ErrorCode.NOT_FOUND


def parse_id(value: str, what: str) -> uuid.UUID:
    """An id from a path: a malformed one names nothing that exists (404, like another
    tenant's), never a database error."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} {value!r} not found") from None


class Conflict(ApiError):
    status, code = STATUS[ErrorCode.CONFLICT], ErrorCode.CONFLICT


class PayloadTooLarge(ApiError):
    status, code = STATUS[ErrorCode.PAYLOAD_TOO_LARGE], ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(ApiError):
    status, code = STATUS[ErrorCode.UNSUPPORTED_MEDIA_TYPE], ErrorCode.UNSUPPORTED_MEDIA_TYPE


class Unprocessable(ApiError):
    status, code = STATUS[ErrorCode.UNPROCESSABLE], ErrorCode.UNPROCESSABLE


class TooManyRequests(ApiError):
    status, code = STATUS[ErrorCode.TOO_MANY_REQUESTS], ErrorCode.TOO_MANY_REQUESTS

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class Unavailable(ApiError):
    status, code = STATUS[ErrorCode.UNAVAILABLE], ErrorCode.UNAVAILABLE

    def __init__(self, detail: str, retry_after: int = 2) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


#: A backing service briefly away: 503 + Retry-After. EventsLost: a submission's 'created'
#: event vanished in a PostgreSQL crash before it reached the disk; the client retries (with
#: its Idempotency-Key) and loses nothing.
_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, asyncpg.TooManyConnectionsError, EventsLost,
    *TRANSIENT_DB_ERRORS)
BACKEND_DOWN: tuple[type[Exception], ...] = tuple(
    err for err in _DOWN if issubclass(err, Exception))


def backend_down_response(exc: Exception) -> JSONResponse:
    log.warning("backend unavailable: %s", exc)
    return error_response(Unavailable("a backing service is briefly unavailable; retry"))


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status,
                        headers=exc.headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(Unprocessable(_validation_message(exc)))

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def backend_down(_: Request, exc: Exception) -> JSONResponse:
        return backend_down_response(exc)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        # Starlette's own errors (a body that is not JSON, 404 of an unknown path, 405) in
        # the same shape as ours.
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse({"error": "http_error", "detail": str(exc.detail)},
                            status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(StarletteHTTPException, http_error)
    for err in BACKEND_DOWN:
        app.add_exception_handler(err, backend_down)
