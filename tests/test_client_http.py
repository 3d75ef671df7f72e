"""The client's HTTP behaviour against a scripted transport: the error hierarchy, Retry-After,
which requests are retried, headers, and the stream's resume protocol at the byte level."""

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from taskstream.client import (
    ApiError,
    AsyncClient,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RetryPolicy,
    ServerError,
    TaskstreamError,
    TransportError,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from taskstream.client.errors import parse_retry_after

FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02, max_retry_after=1.0)
TASK = {"task_id": "t1", "type": "demo", "status": "pending", "last_event_id": 1,
        "created_at": "2025-01-01T00:00:00+00:00", "updated_at": "2025-01-01T00:00:00+00:00"}
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, **kw: Any) -> AsyncClient:
    kw.setdefault("retry", FAST)
    return AsyncClient("http://ts.test", transport=httpx.MockTransport(handler), **kw)


def always(response: httpx.Response) -> Handler:
    return lambda request: response


def err(status: int, code: str = "x", detail: str = "why", **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "detail": detail}, headers=headers)


@pytest.mark.parametrize(("status", "cls"), [
    (400, BadRequest), (401, Unauthorized), (403, Forbidden), (404, NotFound),
    (409, Conflict), (413, PayloadTooLarge), (415, UnsupportedMediaType),
    (422, Unprocessable), (429, RateLimited), (500, ServerError), (502, Unavailable),
    (503, Unavailable), (504, Unavailable), (418, ApiError),
])
async def test_each_status_maps_to_its_error(status: int, cls: type[ApiError]) -> None:
    async with client(lambda r: err(status, "some_code", "the reason"),
                      retry=RetryPolicy(attempts=1)) as ts:
        with pytest.raises(cls) as info:
            await ts.get("t1")
    e = info.value
    assert type(e) is cls and isinstance(e, TaskstreamError)
    assert (e.status, e.code, e.detail) == (status, "some_code", "the reason")
    assert str(e) == f"{status} some_code: the reason"


async def test_other_error_bodies_still_read_well() -> None:
    bodies = [
        httpx.Response(404, json={"detail": "Not Found"}),  # FastAPI's own 404
        httpx.Response(422, json={"detail": [{"loc": ["body", "type"], "msg": "required"}]}),
        httpx.Response(502, text="<html><h1>Bad Gateway</h1></html>"),
        httpx.Response(500, text="boom"),
    ]
    got = []
    for resp in bodies:
        async with client(always(resp), retry=RetryPolicy(attempts=1)) as ts:
            with pytest.raises(ApiError) as info:
                await ts.get("t1")
            got.append((info.value.status, info.value.code, info.value.detail))
    assert got == [(404, "not_found", "Not Found"), (422, "unprocessable", "type: required"),
                   (502, "unavailable", "Bad Gateway"), (500, "server_error", "boom")]


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


async def test_429_and_503_are_retried_after_retry_after() -> None:
    answers = [err(429, "rate_limited", "slow down", **{"Retry-After": "0.3"}),
               err(503, "unavailable", "redis away", **{"Retry-After": "0.2"}),
               httpx.Response(202, json=TASK)]
    seen: list[tuple[float, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((time.monotonic(), request.headers.get("Idempotency-Key")))
        return answers[len(seen) - 1]

    async with client(handler) as ts:
        task = await ts.submit("demo", {"duration": 1})
    assert task.task_id == "t1" and len(seen) == 3
    assert seen[1][0] - seen[0][0] >= 0.3 and seen[2][0] - seen[1][0] >= 0.2
    # One idempotency key for all three tries: the service can't create the task twice.
    keys = {k for _, k in seen}
    assert len(keys) == 1 and None not in keys


async def test_retry_after_beyond_the_limit_is_raised_not_slept() -> None:
    async with client(lambda r: err(429, **{"Retry-After": "3600"})) as ts:
        t0 = time.monotonic()
        with pytest.raises(RateLimited) as info:
            await ts.get("t1")
    assert info.value.retry_after == 3600 and time.monotonic() - t0 < 1


async def test_only_safe_failures_are_retried() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        return err(502)

    async with client(handler) as ts:
        with pytest.raises(Unavailable):
            await ts.retry("t1")  # a re-drive is not idempotent: a 502 may have done it
        assert calls == ["POST /tasks/t1/retry"]
        calls.clear()
        with pytest.raises(Unavailable):
            await ts.get("t1")  # a read is: tried `attempts` times
        assert calls == ["GET /tasks/t1"] * 3
        calls.clear()

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise httpx.ConnectError("refused", request=request)

    async with client(refuse) as ts:
        with pytest.raises(TransportError, match=r"cannot reach Taskstream at http://ts\.test"):
            await ts.retry("t1")  # never sent: safe to repeat whatever it is
    assert calls == ["POST"] * 3

    def unknown(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise httpx.ReadError("reset", request=request)

    calls.clear()
    async with client(unknown) as ts:
        with pytest.raises(TransportError):
            await ts.retry("t1")  # sent, answer lost: not repeated
    assert calls == ["POST"]

    def not_found(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return err(404)

    calls.clear()
    async with client(not_found) as ts:
        with pytest.raises(NotFound):
            await ts.get("t1")  # a refusal is final
    assert calls == ["GET"]


async def test_configuration_from_environment_and_arguments(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=TASK)

    monkeypatch.setenv("TASKSTREAM_URL", "http://from-env.test:9000/")
    monkeypatch.setenv("TASKSTREAM_API_KEY", "sekret")
    async with AsyncClient(transport=httpx.MockTransport(handler)) as ts:
        assert ts.url == "http://from-env.test:9000"
        await ts.get("t1")
    async with AsyncClient("http://arg.test", api_key="",
                           transport=httpx.MockTransport(handler)) as ts:
        await ts.get("t1")
    monkeypatch.delenv("TASKSTREAM_API_KEY")
    async with AsyncClient("http://arg.test", api_key="k2",
                           transport=httpx.MockTransport(handler)) as ts:
        await ts.get("t1")
    assert str(seen[0].url) == "http://from-env.test:9000/tasks/t1"
    assert seen[0].headers["Authorization"] == "Bearer sekret"
    assert "Authorization" not in seen[1].headers  # api_key="" switches it off
    assert seen[2].headers["Authorization"] == "Bearer k2"
    assert seen[0].headers["User-Agent"].startswith("taskstream-client/")


async def test_submit_sends_options_and_given_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=TASK)

    async with client(handler) as ts:
        await ts.submit("demo", {"steps": 2}, idempotency_key="k-1", max_attempts=3,
                        time_limit=60, soft_time_limit=50)
        await ts.submit("noop")
    assert json.loads(seen[0].content) == {"type": "demo", "params": {"steps": 2},
                                           "max_attempts": 3, "timeout": 60,
                                           "soft_timeout": 50}
    assert seen[0].headers["Idempotency-Key"] == "k-1"
    assert json.loads(seen[1].content) == {"type": "noop", "params": {}}
    assert seen[1].headers["Idempotency-Key"] != "k-1"


def sse_event(seq: int, status: str = "running", type_: str = "progress") -> bytes:
    ev = {"task_id": "t1", "seq": seq, "tenant_seq": 100 + seq, "type": type_,
          "status": status, "progress": seq * 10, "message": f"m{seq}", "data": None,
          "result": {"ok": True} if status == "completed" else None, "error": None,
          "attempt": 1, "created_at": "2025-01-01T00:00:00+00:00"}
    return f"id: {seq}\r\ndata: {json.dumps(ev)}\r\n\r\n".encode()


def sse(body: bytes | AsyncIterator[bytes]) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


async def test_stream_resumes_dedupes_and_honours_retry_after() -> None:
    async def breaks_after_two() -> AsyncIterator[bytes]:
        yield sse_event(1, "pending", "created") + sse_event(2)
        yield b"id: 3\r\ndata: {\"task_id\""  # message 3 cut off mid-way
        raise httpx.ReadError("connection reset")

    answers: list[httpx.Response] = [
        sse(breaks_after_two()),
        err(503, **{"Retry-After": "0.2"}),  # a proxy while the web process restarts
        sse(sse_event(2) + sse_event(3) + b": ping\r\n\r\nid: 4\r\n\r\n"),  # id-only: 4
        sse(sse_event(5, "completed", "completed") + sse_event(6)),
    ]
    asked: list[tuple[float, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append((time.monotonic(), request.headers.get("Last-Event-ID")))
        return answers[len(asked) - 1]

    async with client(handler) as ts:
        stream = ts.events("t1")
        got = [(e.seq, e.type) async for e in stream]
    assert got == [(1, "created"), (2, "progress"), (3, "progress"), (5, "completed")]
    assert [h for _, h in asked] == ["0", "2", "2", "4"]
    assert asked[2][0] - asked[1][0] >= 0.2
    assert stream.reconnects == 3 and stream.cursor == 5


async def test_stream_ends_on_204_and_fails_fast_on_a_refusal() -> None:
    async with client(lambda r: httpx.Response(204)) as ts:
        assert [e async for e in ts.events("t1", after=9)] == []
    async with client(lambda r: err(404, "not_found", "task 't1' not found")) as ts:
        with pytest.raises(NotFound):
            [e async for e in ts.events("t1")]
    async with client(lambda r: err(401, "unauthorized", "bad key")) as ts:
        with pytest.raises(Unauthorized):
            [e async for e in ts.all_events()]


async def test_stream_gives_up_after_its_reconnect_window() -> None:
    policy = RetryPolicy(backoff=0.01, max_backoff=0.05, reconnect_window=0.3)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client(down, retry=policy) as ts:
        t0 = time.monotonic()
        with pytest.raises(TransportError):
            [e async for e in ts.events("t1")]
        assert 0.3 <= time.monotonic() - t0 < 2
