"""``POST /tasks``'s usual request, answered without FastAPI's routing and dependency solving.

The hottest route paid about as much to FastAPI and Starlette (route matching, solving its
dependencies, the request and exception wrappers) as to its own work, and it bounds both the
submission rate and how fast one worker's queue fills. This ASGI middleware answers the
request that carries nothing unusual — JSON that ``SubmitTask`` accepts, a Bearer key (or
auth off), no ``X-Tenant`` — with the route's own steps (the same ``bearer`` and ``caller``,
``acting_for``, ``check_submitter``, ``Submissions.submit`` and ``task_read_json``), and
hands everything else to the FastAPI route with the body replayed, so every refusal (401,
403, 415, 422, a malformed header) is FastAPI's, byte for byte.
``TASKSTREAM_FAST_SUBMIT=false`` turns it off; with tracing on it is not installed (request
spans come from FastAPI's instrumentation). ``tests/test_fast_submit.py`` holds the two
paths to the same answers.
"""

from collections.abc import Awaitable
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import acting_for, bearer, caller
from service.deps import Resources
from service.errors import BACKEND_DOWN, ApiError, backend_down_response, error_response
from service.fast_path import DELEGATE, Delegate, resources
from service.schemas import SubmitTask
from service.search import check_submitter
from service.tasks import task_read_json

PATH = "/tasks"
#: FastAPI's ``Header(max_length=200)`` on Idempotency-Key: longer ones are its 422.
_KEY_MAX = 200


class FastSubmit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not async: another request is handed on as the inner app's own awaitable, so no
        # frame of this layer stays alive for the life of an open stream.
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            return self.app(scope, receive, send)
        res = resources(scope)
        if res is None or not res.settings.fast_submit:
            return self.app(scope, receive, send)
        return self._submit(res, scope, receive, send)

    async def _submit(self, res: Resources, scope: Scope, receive: Receive,
                      send: Send) -> None:
        try:
            body = await _read_body(receive)
        except ApiError as exc:  # BodyLimit's 413, raised while the body arrives
            await error_response(exc)(scope, receive, send)
            return
        if body is None:
            return  # the client went away before its body arrived
        try:
            headers = Headers(scope=scope)
            submit = _parse(headers, body)
            # The route's own dependency and Bearer parsing (401 for no key: delegated).
            principal = await caller(res, await bearer(Request(scope)))
            owner = acting_for(principal, None)
            check_submitter(principal, submit.type, submit.params)
        except DELEGATE:
            # (a key lookup that met PostgreSQL away too: the route answers its 503)
            await self.app(scope, _replay(body, receive), send)
            return
        response: Response
        try:
            task, created = await res.submissions.submit(
                owner, submit.type, submit.params, headers.get("idempotency-key"),
                options=submit.options())
        except ApiError as exc:
            response = error_response(exc)
        except BACKEND_DOWN as exc:
            response = backend_down_response(exc)
        else:
            response = Response(task_read_json(task), status_code=202 if created else 200,
                                headers={"Location": f"/tasks/{task.task_id}"},
                                media_type="application/json")
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The request's body once more, then whatever the connection says next."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _parse(headers: Headers, body: bytes) -> SubmitTask:
    """The body as the route would read it, or Delegate for anything it would judge."""
    content_type = headers.getlist("content-type")
    if (len(content_type) != 1
            or content_type[0].split(";", 1)[0].strip().lower() != "application/json"
            or "x-tenant" in headers or len(headers.getlist("idempotency-key")) > 1
            or len(headers.get("idempotency-key") or "") > _KEY_MAX
            or len(headers.getlist("authorization")) > 1):
        raise Delegate
    try:
        doc: Any = orjson.loads(body)  # what it parses, json.loads parses the same way
        return SubmitTask.model_validate(doc)
    except (orjson.JSONDecodeError, ValidationError):
        raise Delegate from None
