"""``GET /tasks/{id}/stream``'s usual request, opened without FastAPI's routing.

An open stream keeps alive every ASGI layer it came through, for as long as it is open, and
each frame it sends goes back out through their send wrappers. Through FastAPI's router that
is about twenty nested coroutines with their closures per stream: at thousands of streams,
objects the garbage collector walks at every full collection, frames of CPU on every event,
and a deep unwinding when a stream ends. This layer, outside the router and outside FastAPI's
own layers (its 500 handler, exception telemetry and body limit: ``StreamFirstAPI``), opens
the usual request — a Bearer key or a ticket, an optional Last-Event-ID (header or query) and
token cursor — with the route's own steps (``stream_caller``, ``cursor_from``,
``task_spec``, ``open_stream``) and the same response (sse-starlette's unless
``TASKSTREAM_SSE_RESPONSE=lean``). Anything else, and every refusal (400, 401, 404, 429,
503), is handed to the route, so the answer is the route's. ``TASKSTREAM_FAST_STREAM=false``
turns it off; with tracing on it is not installed. ``tests/test_fast_stream.py`` holds the
two paths to the same answers.
"""

from collections.abc import Awaitable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import bearer, stream_caller
from service.deps import Resources
from service.fast_path import DELEGATE, Delegate, resources
from service.routes.streams import cursor_from, open_stream, task_spec
from taskstream.core.events import IdField

PREFIX, SUFFIX = "/tasks/", "/stream"
#: The route's query parameters and their ``max_length`` (None: none); a longer or repeated
#: one is the route's to judge.
_QUERY = {"last_event_id": None, "ticket": 1000, "tokens": 4000}
#: Headers the route reads; repeated, the route judges them.
_SINGLE_HEADERS = ("authorization", "last-event-id")


def task_id_of(scope: Scope) -> str | None:
    """The task id of a ``GET /tasks/{task_id}/stream``, else None."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    path: str = scope["path"]
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    task_id = path[len(PREFIX):-len(SUFFIX)]
    return task_id if task_id and "/" not in task_id else None


class FastStream:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not async: another request is handed on as the inner app's own awaitable, so no
        # frame of this layer stays alive for the life of its response.
        task_id = task_id_of(scope)
        if task_id is None:
            return self.app(scope, receive, send)
        res = resources(scope)
        if res is None or not res.settings.fast_stream:
            return self.app(scope, receive, send)
        return self._open(res, task_id, scope, receive, send)

    async def _open(self, res: Resources, task_id: str, scope: Scope, receive: Receive,
                    send: Send) -> None:
        try:
            response = await self._response(res, task_id, Request(scope))
        except DELEGATE:
            response = None
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    @staticmethod
    async def _response(res: Resources, task_id: str, request: Request) -> Response:
        """The route's steps, in its order (each refusal raises: the route answers it)."""
        headers, query = request.headers, request.query_params
        if any(len(headers.getlist(h)) > 1 for h in _SINGLE_HEADERS):
            raise Delegate
        for name, limit in _QUERY.items():
            values = query.getlist(name)
            if len(values) > 1 or (values and limit is not None and len(values[0]) > limit):
                raise Delegate
        creds = await bearer(request)
        owner = (await stream_caller(res, creds, query.get("ticket"), task_id)).tenant
        cursor = cursor_from(headers.get("last-event-id"), query.get("last_event_id"))
        spec = await task_spec(res, owner, task_id, cursor, query.get("tokens"))
        if spec is None:
            return Response(status_code=204)  # stops a reconnecting EventSource for good
        return open_stream(res, owner, spec, IdField.SEQ)


class StreamFirstAPI(FastAPI):
    """FastAPI with ``FastStream`` (when ``fast_stream``) outside every layer FastAPI builds.

    FastAPI puts its own ``ServerErrorMiddleware``, exception telemetry and body limit outside
    any user middleware, and an open stream keeps each of their coroutines alive and sends
    every frame through the 500 handler's send wrapper. None of them acts on a stream: it has
    no body; a failure before its response starts gets uvicorn's 500 (the same plain text as
    FastAPI's default), after it a closed connection either way; telemetry is off whenever
    this layer is on. Leans on Starlette building its stack with ``build_middleware_stack``
    once, in ``__call__`` after setting ``scope["app"]``: ``tests/test_fast_stream.py`` pins it.
    """

    def __init__(self, *args: Any, fast_stream: bool = False, **kwargs: Any) -> None:
        self.fast_stream = fast_stream
        super().__init__(*args, **kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return FastStream(stack) if self.fast_stream else stack
