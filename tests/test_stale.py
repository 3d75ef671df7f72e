"""An event committed but never published (its worker died in between) still reaches the
streams that wait for it: ``service.stale`` compares idle streams with PostgreSQL and tells
the ones behind to catch up (a real web process, TEST_TIMINGS: a check every second)."""

import asyncio
import time
from typing import Any

import asyncpg
import httpx

from taskstream.core import store
from taskstream.core.constants import ANONYMOUS_OWNER
from taskstream.core.events import NewEvent
from taskstream.core.states import EventType, Outcome
from tests.conftest import eventually
from tests.sse import messages, payload


async def _delayed_task(client: httpx.AsyncClient) -> str:
    """A task that stays pending (it starts in an hour): only this test writes its events."""
    r = await client.post("/tasks", json={"type": "noop", "delay": 3600})
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


async def _write_unpublished(pool: asyncpg.Pool, task_id: str, etype: EventType) -> None:
    """What a worker SIGKILLed between its commit and its publish leaves: the event in
    PostgreSQL, durable, and nothing on Redis."""
    (res,) = await store.append_events(pool, [NewEvent(task_id=task_id, owner=ANONYMOUS_OWNER,
                                                        type=etype)])
    assert res.outcome == Outcome.OK, res
    await store.flush(pool)


async def test_a_task_streams_last_event_never_published_still_arrives(
        client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    task_id = await _delayed_task(client)
    got: list[dict[str, Any]] = []
    arrived: list[float] = []

    async def read() -> None:
        async with client.stream("GET", f"/tasks/{task_id}/stream") as r:
            async for m in messages(r):
                got.append(payload(m))
                arrived.append(time.monotonic())

    reader = asyncio.create_task(read())

    async def replayed() -> bool:
        return bool(got)

    await eventually(replayed, 5)
    assert [g["type"] for g in got] == ["created"]
    written = time.monotonic()
    await _write_unpublished(pool, task_id, EventType.CANCELLED)
    await asyncio.wait_for(reader, 15)  # the stream ends after the terminal event
    assert [(g["seq"], g["type"]) for g in got] == [(1, "created"), (2, "cancelled")]
    assert arrived[-1] - written < 10  # two checks a second apart, not a client's reconnect


async def test_a_tenant_stream_catches_up_too(client: httpx.AsyncClient,
                                              pool: asyncpg.Pool) -> None:
    task_id = await _delayed_task(client)
    got: list[dict[str, Any]] = []

    async def read() -> None:
        async with client.stream("GET", "/stream") as r:
            async for m in messages(r):
                d = payload(m)
                if d.get("task_id") == task_id:
                    got.append(d)
                    if d["type"] == "cancelled":
                        return

    reader = asyncio.create_task(read())
    await asyncio.sleep(1.0)  # subscribed from now on
    await _write_unpublished(pool, task_id, EventType.CANCELLED)
    await asyncio.wait_for(reader, 15)
    assert [g["type"] for g in got] == ["cancelled"]
