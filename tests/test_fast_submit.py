"""POST /tasks answered by ``service.fast_submit`` and by the FastAPI route give the same
answers: two real web processes on one database, one with the fast path and one without
(``TASKSTREAM_FAST_SUBMIT=false``), auth on, the same requests to both."""

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.datastructures import Headers

from service import fast_submit
from service.fast_path import Delegate
from taskstream.devservices.processes import WebServer, WorkerProc, free_port
from tests.conftest import SECURE, make_key, with_and_without


@pytest.fixture(scope="module")
def keys(env: dict[str, str]) -> dict[str, str]:
    tenant = f"fast-{uuid.uuid4().hex[:8]}"
    return {"user": make_key(env, tenant), "admin": make_key(env, f"{tenant}-ops", "--admin"),
            "tenant": tenant}


@pytest.fixture(scope="module")
def webs(env: dict[str, str], logs: Path, worker: WorkerProc
         ) -> Iterator[tuple[WebServer, WebServer]]:
    with with_and_without(env, logs, "TASKSTREAM_FAST_SUBMIT") as pair:
        yield pair


JSON = {"Content-Type": "application/json"}
NOOP = orjson.dumps({"type": "noop", "params": {}})


def _cases(keys: dict[str, str]) -> list[tuple[str, dict[str, str], bytes]]:
    """Requests that every path must refuse the same way."""
    user = {**JSON, "Authorization": f"Bearer {keys['user']}"}
    return [
        ("no key", JSON, NOOP),
        ("basic auth", {**JSON, "Authorization": "Basic dXNlcjpwdw=="}, NOOP),
        ("unknown key", {**JSON, "Authorization": "Bearer ts_nope_nope"}, NOOP),
        ("bearer without a key", {**JSON, "Authorization": "Bearer"}, NOOP),
        ("not json", user, b"{type: noop"),
        ("a list", user, b"[]"),
        ("empty body", user, b""),
        ("NaN", user, b'{"type": "noop", "params": {"x": NaN}}'),
        ("unknown type", user, orjson.dumps({"type": "nope", "params": {}})),
        ("bad params", user, orjson.dumps({"type": "demo", "params": {"steps": "many"}})),
        ("type too long", user, orjson.dumps({"type": "x" * 101})),
        ("bad priority", user, orjson.dumps({"type": "noop", "priority": "urgent"})),
        ("text/plain", {**user, "Content-Type": "text/plain"}, NOOP),
        ("no content type", {"Authorization": f"Bearer {keys['user']}"}, NOOP),
        ("another tenant", {**user, "X-Tenant": "someone-else"}, NOOP),
        ("long idempotency key", {**user, "Idempotency-Key": "k" * 201}, NOOP),
        ("admin-only params", user, orjson.dumps(
            {"type": "reindex", "params": {"all_tenants": True}})),
        ("too deep", user, orjson.dumps({"type": "noop", "params": _deep(200)})),
        ("too large", user, orjson.dumps({"type": "noop", "params": {"x": "y" * (1 << 20)}})),
    ]


def _deep(n: int) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for _ in range(n):
        d = {"a": d}
    return d


async def _post(client: httpx.AsyncClient, url: str, headers: dict[str, str],
                body: bytes) -> httpx.Response:
    return await client.post(f"{url}/tasks", headers=headers, content=body)


def _same_refusal(a: httpx.Response, b: httpx.Response) -> None:
    assert (a.status_code, a.content) == (b.status_code, b.content)
    for h in ("content-type", "www-authenticate", "retry-after"):
        assert a.headers.get(h) == b.headers.get(h), h


async def test_refusals_are_the_routes_byte_for_byte(webs: tuple[WebServer, WebServer],
                                                     keys: dict[str, str]) -> None:
    fast, route = webs
    async with httpx.AsyncClient(timeout=30) as c:
        for name, headers, body in _cases(keys):
            a, b = await _post(c, fast.url, headers, body), await _post(c, route.url, headers,
                                                                         body)
            assert a.status_code >= 400, (name, a.status_code, a.text)
            _same_refusal(a, b)


async def test_accepted_submissions_are_the_routes(webs: tuple[WebServer, WebServer],
                                                   keys: dict[str, str]) -> None:
    fast, route = webs
    user = {**JSON, "Authorization": f"Bearer {keys['user']}"}
    admin = {**JSON, "Authorization": f"Bearer {keys['admin']}"}
    bodies = [
        (user, NOOP),
        ({**user, "Content-Type": "application/json; charset=utf-8"}, NOOP),
        ({**user, "authorization": f"bearer {keys['user']}"}, NOOP),
        (user, orjson.dumps({"type": "demo", "params": {"steps": 2, "duration": 0.1},
                             "priority": "high", "max_attempts": 2})),
        ({**admin, "X-Tenant": keys["tenant"]}, NOOP),  # the FastAPI route, both ways
    ]
    async with httpx.AsyncClient(timeout=30) as c:
        for headers, body in bodies:
            a, b = await _post(c, fast.url, headers, body), await _post(c, route.url, headers,
                                                                         body)
            assert a.status_code == b.status_code == 202, (a.text, b.text)
            ja, jb = a.json(), b.json()
            assert ja.keys() == jb.keys()
            for k in ja.keys() - {"task_id", "created_at", "updated_at", "links"}:
                assert ja[k] == jb[k], k
            assert a.headers["location"] == f"/tasks/{ja['task_id']}"
            assert a.headers["content-type"] == b.headers["content-type"]
            snap = (await c.get(f"{fast.url}/tasks/{ja['task_id']}", headers=headers)).json()
            assert snap["type"] == ja["type"] and snap["task_id"] == ja["task_id"]

        # Idempotent replays and a reused key with another body, on each path.
        for url in (fast.url, route.url):
            key = {**user, "Idempotency-Key": f"k-{uuid.uuid4()}"}
            first, again = await _post(c, url, key, NOOP), await _post(c, url, key, NOOP)
            assert (first.status_code, again.status_code) == (202, 200)
            assert first.json()["task_id"] == again.json()["task_id"]
            other = await _post(c, url, key, orjson.dumps({"type": "noop",
                                                           "params": {"events": 1}}))
            assert other.status_code == 409, other.text


def test_only_the_usual_request_takes_the_fast_path() -> None:
    def headers(**h: str) -> Headers:
        return Headers(headers={k.replace("_", "-"): v for k, v in h.items()})

    assert fast_submit._parse(headers(content_type="application/json"), NOOP).type == "noop"
    for unusual in (headers(), headers(content_type="text/json"),
                    headers(content_type="application/json", x_tenant="t"),
                    headers(content_type="application/json", idempotency_key="k" * 201)):
        with pytest.raises(Delegate):
            fast_submit._parse(unusual, NOOP)
    with pytest.raises(Delegate):
        fast_submit._parse(headers(content_type="application/json"), b'{"type": 1}')


async def test_a_key_lookup_with_the_database_away_is_a_503(env: dict[str, str],
                                                            tmp_path: Path) -> None:
    """The fast path checks the key before anything else; with PostgreSQL away that lookup
    fails, and the answer is the route's 503 with Retry-After, never a 500."""
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    web = WebServer({**env, **SECURE, "DATABASE_URL": dead, "TASKSTREAM_SIGNING_KEY": "k" * 32},
                    tmp_path / "web.log")
    await asyncio.to_thread(web.start)
    try:
        async with httpx.AsyncClient(timeout=30) as c:
            r = await _post(c, web.url, {**JSON, "Authorization": "Bearer ts_abc_def"}, NOOP)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "unavailable" and r.headers.get("retry-after")
    finally:
        web.stop()
