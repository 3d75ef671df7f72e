"""The live lane over a real uvicorn and worker: model tokens reach the stream as named
``token`` events, coalesced, with no database write per token; clients that drop at random
points resume with the exact text (no gap, no duplicate) — against both SSE responses."""

import asyncio
import json
import random
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from service.hub import Subscription
from taskstream.builtin.demo import demo_text
from taskstream.core import live
from taskstream.core.constants import live_text_key, task_channel
from taskstream.core.live import (
    LiveWriter,
    TextTracker,
    TokenFrame,
    is_token_message,
    parse_cursor,
)
from taskstream.core.live import snapshot as live_snapshot
from taskstream.core.settings import Settings
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
        if use_cursor:  # the service knows what the client holds: it completes the tokens
            assert t.live["answer"] == (1, expected)
        else:  # back after the text ended: its text event, not tokens, brings the rest
            assert t.live["answer"][0] == 1 and expected.startswith(t.live["answer"][1])


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


async def test_writer_coalesces_and_survives_a_lost_text(redis: Redis,
                                                         settings: Settings) -> None:
    """Against Redis directly: frames leave at most every interval, and when the text so
    far vanished (TTL, a Redis restart) the writer sends it whole again from offset 0."""
    ns = f"{settings.namespace}w"
    ps = redis.pubsub()
    await ps.subscribe(task_channel(ns, "t1"))
    w = LiveWriter(redis, ns, task_id="t1", owner="o", attempt=2, stream="s", interval=0.05)
    for ch in "abc":
        w.write(ch)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    await redis.delete(live_text_key(ns, "t1", 2, "s"))
    w.write("dé")
    w.write("f")
    await w.close()
    assert (await redis.get(live_text_key(ns, "t1", 2, "s"))).decode() == "abcdéf"
    frames = []
    while (m := await ps.get_message(timeout=1)) is not None:
        if m["type"] == "message":
            assert is_token_message(m["data"])
            frames.append(TokenFrame.decode(m["data"][1:]))
    await ps.aclose()
    # "a" at once, "bc" coalesced, then the whole text again after the loss.
    assert [(f.offset, f.delta) for f in frames] == [(0, "a"), (1, "bc"), (0, "abcdéf")]
    assert w.sent_chars == 6
    assert await live_snapshot(redis, ns, "t1") == [TokenFrame("t1", "s", 2, 0, "abcdéf")]
    await w.mark_done()
    assert await live_snapshot(redis, ns, "t1") == []  # stored durably: no snapshot


async def test_writers_share_one_round_trip_and_survive_a_lost_script(
        redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames of many streams made in one loop turn leave as one pipeline (one round trip,
    not one per stream); when Redis no longer knows the script (a restart, SCRIPT FLUSH)
    the batch loads it again and every frame still lands."""
    ns = f"{settings.namespace}b"
    writers = [LiveWriter(redis, ns, task_id=f"t{i}", owner="o", attempt=1, stream="s")
               for i in range(20)]
    executes = 0
    real = type(redis.pipeline()).execute

    async def counting(self: object, *a: object, **k: object) -> object:
        nonlocal executes
        executes += 1
        return await real(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(type(redis.pipeline()), "execute", counting)
    live._batcher(redis)._sha = "0" * 40  # a script Redis does not have
    for i, w in enumerate(writers):
        w.write(f"x{i}")
    for w in writers:
        await w.close()
    assert executes == 2  # the batch, and its retry after loading the script
    for i in range(20):
        assert (await redis.get(live_text_key(ns, f"t{i}", 1, "s"))) == f"x{i}".encode()
    assert all(w.frames == 1 and w.failures == 0 for w in writers)


async def test_tracker_passes_each_character_once(redis: Redis, settings: Settings) -> None:
    ns = f"{settings.namespace}k"
    await redis.set(live_text_key(ns, "t", 1, "s"), b"hello world")
    tr = TextTracker(redis, ns)

    async def feed(attempt: int, offset: int, delta: str) -> list[tuple[int, int, str]]:
        out = await tr.accept(TokenFrame("t", "s", attempt, offset, delta))
        return [(f.attempt, f.offset, f.delta) for f in out]

    assert await feed(1, 6, "world") == [(1, 0, "hello world")]  # joined mid-text: filled
    assert await feed(1, 6, "world") == []  # duplicate
    assert await feed(1, 11, "!!") == [(1, 11, "!!")]
    assert await feed(1, 12, "!?") == [(1, 13, "?")]  # overlap trimmed
    assert await feed(2, 0, "new") == [(2, 0, "new")]  # a retry starts over
    assert await feed(1, 14, "x") == []  # the old attempt is over
    # The text event completes what this connection holds, then closes the text.
    rest = tr.seen_event("t", "text", 2, {"stream": "s", "text": "new text", "length": 8})
    assert rest is not None and (rest.offset, rest.delta) == (3, " text")
    assert await feed(2, 3, " te") == []
    assert tr.seen_event("t", "text", 2, {"stream": "s", "text": "new text"}) is None
    # A client's cursor: only what it lacks.
    tr.seed("t2", "u", 1, 4)
    assert [(f.offset, f.delta) for f in await tr.accept(
        TokenFrame("t2", "u", 1, 0, "abcdef"))] == [(4, "ef")]
    for bad in ('{"s": [1]}', "[]", '{"s": [1, -1]}', "nope", '{"s": [true, 1]}'):
        with pytest.raises(ValueError):
            parse_cursor(bad)
    assert parse_cursor('{"answer": [2, 40]}') == {"answer": (2, 40)}


async def test_a_superseded_attempts_frames_are_dropped_on_a_fresh_connection(
        redis: Redis, settings: Settings) -> None:
    """The lane is not fenced: a worker paused past its lease publishes frames of its
    superseded attempt after the next attempt started (seen in the chaos run). A connection
    that never held a text of the newer attempt drops them, once it knows that attempt
    started: from the task row when it opens, or from any durable event of that attempt."""
    tr = TextTracker(redis, f"{settings.namespace}k")
    tr.seed_attempt("t", 2)  # opened while attempt 2 runs
    assert tr.take(TokenFrame("t", "s", 1, 0, "zombie")) == []
    assert tr.take(TokenFrame("t", "s", 2, 0, "new")) == [TokenFrame("t", "s", 2, 0, "new")]
    other = TextTracker(redis, f"{settings.namespace}k")  # opened during attempt 1
    assert other.take(TokenFrame("u", "a", 1, 0, "ab")) == [TokenFrame("u", "a", 1, 0, "ab")]
    assert other.seen_event("u", "started", 2, None) is None
    assert other.take(TokenFrame("u", "a", 1, 2, "cd")) == []  # attempt 1 is over
    assert other.take(TokenFrame("u", "b", 1, 0, "x")) == []  # in every stream of the task
    assert other.take(TokenFrame("v", "a", 1, 0, "y")) != []  # other tasks are not affected


async def test_a_connection_opened_mid_retry_looks_the_attempt_up(
        redis: Redis, settings: Settings) -> None:
    """A tenant stream cannot be told every task's attempt when it opens: reconnected after a
    retry began (its replay starts after the new attempt's ``started``), it took a paused
    worker's stale frames for the text (seen in the chaos run). Its tracker now asks which
    attempt runs before it passes the first frame of a task it knows no attempt of."""
    asked: list[str] = []

    async def attempt_of(task_id: str) -> int | None:
        asked.append(task_id)
        return {"t": 2}.get(task_id)

    tr = TextTracker(redis, f"{settings.namespace}k", attempt_of)
    assert tr.take(TokenFrame("t", "s", 1, 0, "zombie")) is None  # not without the lookup
    assert await tr.accept(TokenFrame("t", "s", 1, 0, "zombie")) == []
    assert await tr.accept(TokenFrame("t", "s", 2, 0, "new")) == [TokenFrame("t", "s", 2, 0,
                                                                             "new")]
    assert tr.take(TokenFrame("t", "s", 2, 3, "er")) == [TokenFrame("t", "s", 2, 3, "er")]
    assert asked == ["t"]  # once per task and connection
    assert tr.seen_event("u", "started", 1, None) is None  # an event says it: no lookup
    assert tr.take(TokenFrame("u", "s", 1, 0, "x")) == [TokenFrame("u", "s", 1, 0, "x")]
    assert await tr.accept(TokenFrame("v", "s", 1, 0, "y")) != []  # not found: passes
    assert asked == ["t", "v"]

    async def away(task_id: str) -> int | None:
        raise ConnectionRefusedError("database away")

    down = TextTracker(redis, f"{settings.namespace}k", away)
    assert await down.accept(TokenFrame("t", "s", 1, 0, "a")) != []  # as before: passes


def test_a_full_subscription_merges_token_frames_instead_of_dropping() -> None:
    """A slow stream's buffer is full: a frame joins the queued frame of its text that it
    continues (no gap, no I/O); one that continues nothing queued is dropped (gap-filled
    later), and never across an event of its task."""
    sub = Subscription("c", limit=2)
    sub.push(TokenFrame("t", "s", 1, 0, "ab"))
    sub.push(TokenFrame("u", "s", 1, 0, "x"))
    sub.push(TokenFrame("t", "s", 1, 2, "cd"))  # full: joins t's frame behind u's
    sub.push(TokenFrame("u", "s", 1, 1, "y"))
    sub.push(TokenFrame("t", "s", 1, 9, "zz"))  # continues nothing queued: dropped
    assert list(sub._items) == [TokenFrame("t", "s", 1, 0, "abcd"),
                                TokenFrame("u", "s", 1, 0, "xy")]
    assert (sub.tokens_merged, sub.tokens_dropped, sub.overflowed) == (2, 1, False)
