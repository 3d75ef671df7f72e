"""SSE streams over a real uvicorn: live progress, exact resume, 204, fan-out, hub recovery —
each test against both SSE responses (``TASKSTREAM_SSE_RESPONSE``)."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from taskstream.core.constants import hub_client_name
from taskstream.core.settings import Settings
from taskstream.devservices.processes import WebServer, WorkerProc
from tests.conftest import eventually, wait_terminal
from tests.sse import collect, messages, payload
from tests.test_tasks_api import submit


@pytest.fixture
async def client(sse_web: WebServer, worker: WorkerProc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sse_web.url, timeout=30) as c:
        yield c


async def test_stream_follows_task_to_completion(client: httpx.AsyncClient) -> None:
    task = await submit(client, "demo", duration=0.6, steps=6)
    status, msgs = await collect(client, f"/tasks/{task['task_id']}/stream")
    assert status == 200
    assert all(m.event == "message" for m in msgs)  # the seed's onmessage gets them
    data = [payload(m) for m in msgs]
    assert [int(m.id or 0) for m in msgs] == [d["seq"] for d in data]
    assert [d["seq"] for d in data] == list(range(1, len(data) + 1))
    assert data[-1]["status"] == "completed" and data[-1]["result"] == {"steps": 6,
                                                                          "duration": 0.6}
    assert {"task_id", "status", "progress", "result"} <= set(data[0])
    progress = [d["progress"] for d in data]
    assert progress == sorted(progress)

    # Reconnecting after the end: 204 stops a browser's EventSource from looping.
    r = await client.get(f"/tasks/{task['task_id']}/stream",
                         headers={"Last-Event-ID": msgs[-1].id or ""})
    assert r.status_code == 204
    # Connecting fresh to a finished task replays its history, then ends.
    status, again = await collect(client, f"/tasks/{task['task_id']}/stream")
    assert [m.data for m in again] == [m.data for m in msgs]


async def test_dropped_stream_resumes_exactly_once(client: httpx.AsyncClient) -> None:
    task = await submit(client, "demo", duration=1.5, steps=15)
    url = f"/tasks/{task['task_id']}/stream"
    first: list[dict[str, Any]] = []
    async with client.stream("GET", url) as r:
        async for m in messages(r):
            first.append(payload(m))
            if len(first) == 5:
                break  # drop the connection mid-task
    await asyncio.sleep(0.4)  # events keep coming while we are away
    last = str(first[-1]["seq"])
    # Resume via header, and (a native EventSource's first connect) via query string.
    _, rest = await collect(client, url, headers={"Last-Event-ID": last})
    _, rest_q = await collect(client, f"{url}?last_event_id={last}")
    seqs = [d["seq"] for d in first] + [payload(m)["seq"] for m in rest]
    assert seqs == list(range(1, len(seqs) + 1))
    assert payload(rest[-1])["status"] == "completed"
    assert [m.data for m in rest_q] == [m.data for m in rest]
    history = (await client.get(f"/tasks/{task['task_id']}/events")).json()["items"]
    assert len(history) == len(seqs)


async def test_garbage_last_event_id_is_400(client: httpx.AsyncClient) -> None:
    task = await submit(client, "noop")
    for bad in ("abc", "-1", "1e9", "9" * 40, "\uff11\uff12".encode()):
        r = await client.get(f"/tasks/{task['task_id']}/stream",
                             headers={"Last-Event-ID": bad})  # type: ignore[dict-item]
        assert r.status_code == 400, bad
        assert "Last-Event-ID" in r.json()["detail"]
    for bad_q in ("x\r\ny", "1\x002", "5\n", "999999"):
        r = await client.get(f"/tasks/{task['task_id']}/stream",
                             params={"last_event_id": bad_q})
        assert r.status_code == 400, bad_q


async def test_200_concurrent_streams_each_see_every_event(client: httpx.AsyncClient) -> None:
    tasks = [await submit(client, "demo", duration=1.0, steps=5) for _ in range(20)]
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=str(client.base_url), limits=limits,
                                 timeout=60) as many:
        results = await asyncio.gather(*[
            collect(many, f"/tasks/{tasks[i % 20]['task_id']}/stream") for i in range(200)
        ])
    for i, (status, msgs) in enumerate(results):
        assert status == 200
        seqs = [payload(m)["seq"] for m in msgs]
        assert seqs == list(range(1, len(seqs) + 1)), i
        assert payload(msgs[-1])["status"] == "completed"
        assert [payload(m)["type"] for m in msgs].count("progress") == 5


async def test_tenant_stream_carries_all_tasks_and_resumes(client: httpx.AsyncClient) -> None:
    got: list[dict[str, Any]] = []
    ids: list[str] = []

    async def listen() -> None:
        async with client.stream("GET", "/stream") as r:
            async for m in messages(r):
                d = payload(m)
                d["_id"] = int(m.id or 0)
                got.append(d)  # filtered below: ids fill in as submissions return
                done = {g["task_id"] for g in got if g["type"] == "completed"}
                if len(ids) == 3 and set(ids) <= done:
                    return

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    for _ in range(3):
        ids.append((await submit(client, "demo", duration=0.3, steps=3))["task_id"])
    await asyncio.wait_for(listener, 30)
    got = [g for g in got if g["task_id"] in ids]
    for tid in ids:
        seqs = [g["seq"] for g in got if g["task_id"] == tid]
        assert seqs == list(range(1, len(seqs) + 1))
    tenant_ids = [g["_id"] for g in got]
    assert tenant_ids == sorted(tenant_ids)
    # Resume from the middle: exactly what followed, in order.
    mid = got[len(got) // 2]["_id"]
    _, rest = await collect(client, "/stream", headers={"Last-Event-ID": str(mid)}, limit=3)
    assert [int(m.id or 0) for m in rest] == [mid + 1, mid + 2, mid + 3]
    assert [payload(m)["tenant_seq"] for m in rest] == [mid + 1, mid + 2, mid + 3]


async def test_hub_reconnects_and_streams_catch_up(client: httpx.AsyncClient,
                                                    redis: Redis, settings: Settings) -> None:
    """Kill the hub's pub/sub connection mid-stream: the hub resubscribes and the stream
    fills the gap from PostgreSQL, so the client still sees every event exactly once. Only
    this namespace's hubs: the other pytest process's web servers share this Redis."""
    task = await submit(client, "demo", duration=2.0, steps=20)
    got: list[dict[str, Any]] = []

    async def read() -> None:
        async with client.stream("GET", f"/tasks/{task['task_id']}/stream") as r:
            async for m in messages(r):
                got.append(payload(m))

    reader = asyncio.create_task(read())
    await eventually(lambda: _ready(got, 4))
    name = hub_client_name(settings.namespace)
    hubs = [c for c in await redis.client_list(_type="pubsub") if c["name"] == name]
    assert hubs
    for c in hubs:
        await redis.client_kill_filter(_id=c["id"])
    await asyncio.wait_for(reader, 30)
    seqs = [g["seq"] for g in got]
    assert seqs == list(range(1, len(seqs) + 1))
    assert got[-1]["status"] == "completed"
    health = (await client.get("/health")).json()
    assert health["hub_connected"] is True


async def _ready(got: list[dict[str, Any]], n: int) -> bool:
    return len(got) >= n


async def test_stream_event_is_durable_before_it_is_published(
    client: httpx.AsyncClient, pool: Any
) -> None:
    """Persist, then publish: every event a stream delivers is already in PostgreSQL."""
    task = await submit(client, "demo", duration=0.5, steps=10)
    async with client.stream("GET", f"/tasks/{task['task_id']}/stream") as r:
        async for m in messages(r):
            seq = payload(m)["seq"]
            row = await pool.fetchval(
                "SELECT count(*) FROM task_events WHERE task_id = $1::uuid AND seq = $2",
                task["task_id"], seq)
            assert row == 1, seq
    await wait_terminal(client, task["task_id"])


def test_event_json_shape_is_one_contract() -> None:
    from datetime import UTC, datetime

    from taskstream.core.events import Event

    ev = Event("t", 3, 9, "completed", "completed", 100.0, None, {"x": 1}, 1,
               datetime.now(UTC), owner="o")
    back = Event.decode(ev.encode(), owner="o")
    assert back.to_json() == ev.to_json() and json.loads(ev.encode())["result"] == {"x": 1}
