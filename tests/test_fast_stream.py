"""GET /tasks/{id}/stream opened by ``service.fast_stream`` and by the FastAPI route give the
same answers: two real web processes on one database, one with the fast path and one without
(``TASKSTREAM_FAST_STREAM=false``), auth on, the same requests to both."""

import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.responses import Response
from starlette.types import Message, Scope

from service import fast_stream
from taskstream.devservices.processes import WebServer, WorkerProc
from tests.conftest import eventually, make_key, with_and_without

# The headers a stream answers with (sse-starlette's), compared between the two paths.
STREAM_HEADERS = ("content-type", "cache-control", "x-accel-buffering", "connection",
                  "transfer-encoding", "www-authenticate", "retry-after")


@pytest.fixture(scope="module")
def keys(env: dict[str, str]) -> dict[str, str]:
    tenant = f"fstream-{uuid.uuid4().hex[:8]}"
    return {"user": make_key(env, tenant), "other": make_key(env, f"{tenant}-b")}


@pytest.fixture(scope="module")
def webs(env: dict[str, str], logs: Path, worker: WorkerProc
         ) -> Iterator[tuple[WebServer, WebServer]]:
    with with_and_without(env, logs, "TASKSTREAM_FAST_STREAM") as pair:
        yield pair


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _finished_task(c: httpx.AsyncClient, url: str, key: str) -> dict[str, Any]:
    r = await c.post(f"{url}/tasks", headers=_auth(key),
                     json={"type": "demo", "params": {"steps": 3, "duration": 0.05}})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]

    async def completed() -> dict[str, Any] | None:
        task: dict[str, Any] = (await c.get(f"{url}/tasks/{task_id}", headers=_auth(key))).json()
        return task if task["status"] == "completed" else None

    return await eventually(completed, 10)


async def _ticket(c: httpx.AsyncClient, url: str, key: str, task_id: str | None) -> str:
    r = await c.post(f"{url}/stream-tickets", headers=_auth(key), json={"task_id": task_id})
    assert r.status_code == 200, r.text
    return str(r.json()["ticket"])


def _same(a: httpx.Response, b: httpx.Response, name: str) -> None:
    assert (a.status_code, a.content) == (b.status_code, b.content), name
    for h in STREAM_HEADERS:
        assert a.headers.get(h) == b.headers.get(h), (name, h)


async def test_every_answer_is_the_routes(webs: tuple[WebServer, WebServer],
                                          keys: dict[str, str]) -> None:
    fast, route = webs
    user, other = _auth(keys["user"]), _auth(keys["other"])
    async with httpx.AsyncClient(timeout=30) as c:
        task = await _finished_task(c, fast.url, keys["user"])
        tid, last = task["task_id"], task["last_event_id"]
        other_tid = (await _finished_task(c, fast.url, keys["other"]))["task_id"]
        ticket = await _ticket(c, fast.url, keys["user"], tid)
        mine = (await _finished_task(c, fast.url, keys["user"]))["task_id"]
        wrong_ticket = await _ticket(c, fast.url, keys["user"], mine)
        stream = f"/tasks/{tid}/stream"
        cases: list[tuple[str, str, dict[str, str]]] = [
            # refusals
            ("no key", stream, {}),
            ("unknown key", stream, _auth("ts_nope_nope")),
            ("basic auth", stream, {"Authorization": "Basic dXNlcjpwdw=="}),
            ("another tenant's task", stream, other),
            ("its own task, another's key", f"/tasks/{other_tid}/stream", user),
            ("no such task", f"/tasks/{uuid.uuid4()}/stream", user),
            ("not a task id", "/tasks/not-a-task/stream", user),
            ("hostile id", "/tasks/%27%3B%20DROP%20TABLE%20tasks%3B--/stream", user),
            ("bad Last-Event-ID", stream, {**user, "Last-Event-ID": "abc"}),
            ("huge Last-Event-ID", stream, {**user, "Last-Event-ID": "9" * 40}),
            ("Last-Event-ID ahead", stream, {**user, "Last-Event-ID": str(last + 5)}),
            ("bad last_event_id", f"{stream}?last_event_id=-1", user),
            ("forged ticket", f"{stream}?ticket=abc.def", {}),
            ("ticket for another task", f"{stream}?ticket={wrong_ticket}", {}),
            ("bad token cursor", f"{stream}?tokens=%7Bnope", user),
            ("long token cursor", f"{stream}?tokens={'x' * 4001}", user),
            ("long ticket", f"{stream}?ticket={'x' * 1001}", {}),
            ("two cursors", f"{stream}?last_event_id=1&last_event_id=2", user),
            # answers
            ("finished and all sent: 204", stream, {**user, "Last-Event-ID": str(last)}),
            ("the whole replay", stream, user),
            ("a resumed replay", stream, {**user, "Last-Event-ID": "2"}),
            ("by query", f"{stream}?last_event_id=1", user),
            ("by ticket", f"{stream}?ticket={ticket}", {}),
            ("header wins", f"{stream}?last_event_id=1", {**user, "Last-Event-ID": "3"}),
            ("with a token cursor", f'{stream}?tokens={{"answer":[1,0]}}', user),
        ]
        for name, path, headers in cases:
            a = await c.get(f"{fast.url}{path}", headers=headers)
            b = await c.get(f"{route.url}{path}", headers=headers)
            _same(a, b, name)
        # the replay really is the task's events, ids 1..last, ending with completed
        whole = (await c.get(f"{fast.url}{stream}", headers=user)).text
        ids = [int(line[3:]) for line in whole.splitlines() if line.startswith("id:")]
        assert ids == list(range(1, last + 1))
        assert '"status":"completed"' in whole.replace(" ", "")


async def test_a_live_stream_on_the_fast_path_sees_every_event(
        webs: tuple[WebServer, WebServer], keys: dict[str, str]) -> None:
    fast, _ = webs
    user = _auth(keys["user"])
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{fast.url}/tasks", headers=user,
                         json={"type": "demo", "params": {"steps": 5, "duration": 0.5}})
        tid = r.json()["task_id"]
        ids: list[int] = []
        async with c.stream("GET", f"{fast.url}/tasks/{tid}/stream", headers=user) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            async for line in s.aiter_lines():
                if line.startswith("id:"):
                    ids.append(int(line[3:]))
        assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 7  # created..completed


def test_only_stream_paths_are_taken() -> None:
    def scope(path: str, method: str = "GET") -> Scope:
        return {"type": "http", "method": method, "path": path}

    assert fast_stream.task_id_of(scope("/tasks/abc/stream")) == "abc"
    for other in (scope("/tasks/abc/stream", "HEAD"), scope("/tasks//stream"),
                  scope("/tasks/a/b/stream"), scope("/tasks/abc"), scope("/stream"),
                  scope("/tasks/abc/stream/")):
        assert fast_stream.task_id_of(other) is None


async def test_the_usual_request_never_reaches_the_route(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, with the route's steps stubbed: the usual request is answered by the
    layer itself, anything unusual (or refused) goes to the inner app."""
    inner: list[str] = []

    async def route(scope: Scope, receive: Any, send: Any) -> None:
        inner.append(scope["path"])

    async def caller(res: Any, creds: Any, ticket: Any, scope: str) -> Any:
        if creds is None and ticket is None:
            from service.errors import Unauthorized
            raise Unauthorized("no key")
        return SimpleNamespace(tenant="t")

    async def spec(res: Any, owner: str, task_id: str, cursor: int, tokens: Any) -> None:
        return None  # finished and all sent: 204

    monkeypatch.setattr(fast_stream, "stream_caller", caller)
    monkeypatch.setattr(fast_stream, "task_spec", spec)
    app = SimpleNamespace(state=SimpleNamespace(
        resources=SimpleNamespace(settings=SimpleNamespace(fast_stream=True))))
    layer = fast_stream.FastStream(route)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    def request(query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
        return {"type": "http", "method": "GET", "path": "/tasks/x/stream", "app": app,
                "query_string": query,
                "headers": [(b"authorization", b"Bearer k")] if headers is None else headers}

    await layer(request(), receive, send)
    assert inner == [] and sent[0]["status"] == Response(status_code=204).status_code
    for unusual in (request(headers=[]),  # refused (401): the route's answer
                    request(query=b"ticket=a&ticket=b"),
                    request(query=b"tokens=" + b"x" * 4001),
                    request(headers=[(b"authorization", b"Bearer a"),
                                     (b"authorization", b"Bearer b")])):
        inner.clear()
        await layer(unusual, receive, send)
        assert inner == ["/tasks/x/stream"], unusual


async def test_streams_are_opened_outside_fastapis_own_layers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``StreamFirstAPI`` leans on: Starlette builds its stack with
    ``build_middleware_stack`` and calls it after setting ``scope["app"]``. A stream request
    then reaches ``FastStream`` with the server's own ``send`` (no FastAPI layer wraps it)
    and the app in its scope; any other request goes through FastAPI's layers."""
    from starlette.middleware.errors import ServerErrorMiddleware

    from service.app import create_app
    from taskstream.core.settings import Settings

    app = create_app(Settings(fast_stream=True))
    assert isinstance(app, fast_stream.StreamFirstAPI)
    stack = app.build_middleware_stack()
    assert isinstance(stack, fast_stream.FastStream)
    assert isinstance(stack.app, ServerErrorMiddleware)
    seen: list[tuple[str, Any, Any]] = []

    async def opened(self: Any, res: Any, task_id: str, scope: Scope, receive: Any,
                     send: Any) -> None:
        seen.append((task_id, send, scope["app"]))

    monkeypatch.setattr(fast_stream.FastStream, "_open", opened)
    app.state.resources = SimpleNamespace(settings=SimpleNamespace(fast_stream=True))
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    def scope(path: str) -> Scope:
        return {"type": "http", "method": "GET", "path": path, "query_string": b"",
                "headers": [], "root_path": "", "scheme": "http",
                "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}

    await app(scope("/tasks/t1/stream"), receive, send)
    assert seen == [("t1", send, app)]
    await app(scope("/no-such-path"), receive, send)  # FastAPI's 404, not ours
    assert len(seen) == 1 and sent[0]["status"] == 404
