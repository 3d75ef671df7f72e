"""The live lane over a real uvicorn and worker: model tokens reach the stream as named
``token`` events, coalesced, with no database write per token; clients that drop at random
points resume with the exact text (no gap, no duplicate) — against both SSE responses."""

import asyncio
import json
import random
from collections.abc import AsyncIterator

import httpx
import pytest

from taskstream.builtin.demo import demo_text
from taskstream.devservices.processes import WebServer, WorkerProc
from tests.live import follow_texts
from tests.sse import collect, payload
from tests.test_tasks_api import submit


@pytest.fixture
async def client(sse_web: WebServer, worker: WorkerProc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sse_web.url, timeout=30) as c:
        yield c


async def test_tokens_are_named_frames_and_the_end_is_durable(
        client: httpx.AsyncClient) -> None:
    task = await submit(client, "demo_tokens", tokens=60, rate=200)
    status, msgs = await collect(client, f"/tasks/{task['task_id']}/stream")
    assert status == 200
    unnamed = [payload(m) for m in msgs if m.event == "message"]
    tokens = [json.loads(m.data) for m in msgs if m.event == "token"]
    assert {m.event for m in msgs} == {"message", "token"}
    # What the tutorial's onmessage sees: snapshots only, in seq order.
    assert [d["seq"] for d in unnamed] == list(range(1, len(unnamed) + 1))
    assert all("status" in d for d in unnamed) and not any("delta" in d for d in unnamed)
    # The tokens, put together, are the text; the durable record says the same, once.
    expected = demo_text(60)
    assert "".join(t["delta"] for t in tokens) == expected
    assert [t["offset"] for t in tokens] == [sum(len(x["delta"]) for x in tokens[:i])
                                             for i in range(len(tokens))]
    texts = [d for d in unnamed if d["type"] == "text"]
    assert [d["data"] for d in texts] == [{"stream": "answer", "text": expected,
                                           "length": len(expected)}]
    # Coalesced: 60 tokens in 0.3 s make far fewer frames than tokens.
    assert len(tokens) < 30
    # No database write per token: the history holds lifecycle events and the one text.
    history = (await client.get(f"/tasks/{task['task_id']}/events")).json()
    types = [e["type"] for e in history["items"]]
    assert types == ["created", "started", "text", "completed"]


@pytest.mark.parametrize("use_cursor", [True, False], ids=["cursor", "text-so-far"])
async def test_random_drops_resume_exactly(client: httpx.AsyncClient, use_cursor: bool) -> None:
    rng = random.Random(13)
    tasks = [await submit(client, "demo_tokens", tokens=150, rate=150, seed=i)
             for i in range(3)]
    followed = await asyncio.gather(*(
        follow_texts(client, t["task_id"], rng=rng, drop_chance=0.3, use_cursor=use_cursor)
        for t in tasks))
    for i, t in enumerate(followed):
        assert t.connections >= 3  # it did drop, several times
        expected = demo_text(150, seed=i)
        assert t.durable == {"answer": (1, expected)}
        assert t.live["answer"] == (1, expected)


async def test_joining_mid_stream_gets_the_text_so_far(client: httpx.AsyncClient) -> None:
    task = await submit(client, "demo_tokens", tokens=100, rate=100)
    await asyncio.sleep(0.5)
    t = await follow_texts(client, task["task_id"], rng=random.Random(1))
    assert t.live["answer"] == (1, demo_text(100))
    assert t.connections == 1


async def test_a_retry_starts_the_text_over(client: httpx.AsyncClient) -> None:
    r = await client.post("/tasks", json={"type": "demo_tokens", "max_attempts": 2, "params": {
        "tokens": 80, "rate": 200, "fail_at_token": 40}})
    assert r.status_code == 202, r.text
    task = r.json()
    status, msgs = await collect(client, f"/tasks/{task['task_id']}/stream")
    assert status == 200
    frames = [json.loads(m.data) for m in msgs if m.event == "token"]
    first = "".join(f["delta"] for f in frames if f["attempt"] == 1)
    second = [f for f in frames if f["attempt"] == 2]
    assert demo_text(80).startswith(first) and 0 < len(first) <= len(demo_text(40))
    assert second[0]["offset"] == 0
    assert "".join(f["delta"] for f in second) == demo_text(80)
    events = [payload(m) for m in msgs if m.event == "message"]
    assert [e["data"]["text"] for e in events if e["type"] == "text"] == [demo_text(80)]
    assert events[-1]["status"] == "completed"
