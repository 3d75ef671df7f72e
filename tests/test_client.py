"""The async and sync clients against the real service (uvicorn on a loopback port, a real
worker): every API method, ``wait``'s outcomes, typed errors, and streamed uploads."""

import asyncio
import io
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskstream.client import (
    AsyncClient,
    Client,
    Conflict,
    Event,
    NotFound,
    RetryPolicy,
    Task,
    TaskCancelled,
    TaskFailed,
    Unprocessable,
    WaitTimeout,
)
from taskstream.devservices.processes import WebServer, WorkerProc

FAST = RetryPolicy(backoff=0.05, max_backoff=0.5)
WORDS = b"the quick brown fox jumps over the lazy dog while taskstream pushes progress\n"


@pytest.fixture
async def ts(web: WebServer, worker: WorkerProc) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(web.url, retry=FAST) as c:
        yield c


async def running(ts: AsyncClient, task: Task) -> Task:
    """Wait (on its stream) until the task has started."""
    async with ts.events(task) as stream:
        async for ev in stream:
            if ev.status == "running":
                break
    return await ts.get(task)


async def test_submit_and_follow_to_completion(ts: AsyncClient) -> None:
    task = await ts.submit("demo", {"duration": 0.5, "steps": 5})
    assert isinstance(task, Task) and task.status == "pending" and task.type == "demo"
    assert task.links.stream == f"/tasks/{task.task_id}/stream"
    events = [ev async for ev in ts.events(task)]
    assert all(isinstance(e, Event) for e in events)
    assert [e.type for e in events] == ["created", "started"] + ["progress"] * 5 + ["completed"]
    assert [e.seq for e in events] == list(range(1, 9))
    assert [e.progress for e in events] == sorted(e.progress for e in events)
    assert events[-1].terminal and events[-1].result == {"steps": 5, "duration": 0.5}
    history = [e async for e in ts.history(task, page_size=3)]  # paged: 3+3+2
    assert history == events
    assert [e.seq async for e in ts.history(task, after=6)] == [7, 8]
    done = await ts.get(task.task_id)
    assert done.status == "completed" and done.progress == 100 and done.terminal
    assert done.finished_at is not None and done.last_event_id == 8


async def test_wait_returns_result_or_raises_typed_errors(ts: AsyncClient) -> None:
    ok = await ts.submit("demo", {"duration": 0.2, "steps": 2})
    assert await ts.wait(ok, timeout=20) == {"steps": 2, "duration": 0.2}
    assert await ts.wait(ok.task_id) == {"steps": 2, "duration": 0.2}  # finished: no stream

    bad = await ts.submit("demo", {"duration": 0.2, "steps": 4, "fail_at_step": 3})
    with pytest.raises(TaskFailed) as failed:
        await ts.wait(bad, timeout=20)
    assert failed.value.task_id == bad.task_id
    assert failed.value.error is not None and "DemoFailure: failed at step 3" in failed.value.error

    slow = await ts.submit("demo", {"duration": 30, "steps": 300})
    with pytest.raises(WaitTimeout) as timed_out:
        await ts.wait(slow, timeout=0.5)
    assert isinstance(timed_out.value, TimeoutError) and timed_out.value.task_id == slow.task_id

    waiter = asyncio.create_task(ts.wait(slow, timeout=20))
    await running(ts, slow)
    await ts.cancel(slow)
    with pytest.raises(TaskCancelled) as cancelled:
        await waiter
    assert cancelled.value.task_id == slow.task_id

    pending = await ts.submit("demo", {"duration": 30, "steps": 3})
    await ts.cancel(pending)  # maybe before it starts, maybe after: cancelled either way
    with pytest.raises(TaskCancelled):
        await ts.wait(pending, timeout=20)


async def test_cancel_and_retry(ts: AsyncClient) -> None:
    task = await ts.submit("demo", {"duration": 20, "steps": 200})
    await running(ts, task)
    asked = await ts.cancel(task)
    assert asked.task_id == task.task_id and asked.status in ("running", "cancelled")
    with pytest.raises(TaskCancelled):
        await ts.wait(task, timeout=10)
    assert (await ts.cancel(task)).status == "cancelled"  # again: harmless

    done = await ts.submit("noop")
    await ts.wait(done, timeout=10)
    with pytest.raises(Conflict) as conflict:
        await ts.cancel(done)
    assert conflict.value.status == 409 and "completed" in conflict.value.detail

    # Re-drive: the first attempt fails, the re-driven one (same id) succeeds.
    flaky = await ts.submit("demo", {"duration": 0.1, "steps": 2, "fail_at_step": 1,
                                     "fail_attempts": 1})
    with pytest.raises(TaskFailed):
        await ts.wait(flaky, timeout=10)
    again = await ts.retry(flaky)
    assert again.task_id == flaky.task_id and again.status == "pending"
    assert await ts.wait(again, timeout=10) == {"steps": 2, "duration": 0.1}
    types = [e.type async for e in ts.history(flaky)]
    assert types.count("failed") == 1 and types[-1] == "completed" and "redriven" in types
    with pytest.raises(Conflict):
        await ts.retry(flaky)  # completed: nothing to re-drive


async def test_list_tasks_follows_cursor_pages(ts: AsyncClient) -> None:
    ids = [(await ts.submit("noop")).task_id for _ in range(5)]
    for tid in ids:
        await ts.wait(tid, timeout=10)
    seen = [t.task_id async for t in ts.list_tasks(type="noop", page_size=2)]
    assert [i for i in seen if i in ids] == list(reversed(ids))  # newest first
    assert len(seen) == len(set(seen))
    page = await ts.list_page(type=["noop"], status=["completed", "failed"], limit=2)
    assert len(page.items) == 2 and page.next_cursor
    assert all(t.status == "completed" and t.type == "noop" for t in page.items)
    assert [t async for t in ts.list_tasks(status="cancelled", type="noop")] == []


async def test_task_types_and_dead_letters(ts: AsyncClient) -> None:
    types = {t.type: t for t in await ts.task_types()}
    assert {"demo", "noop", "document_process"} <= set(types)
    assert types["demo"].params_schema["properties"]["duration"]["maximum"] == 3600
    bad = await ts.submit("demo", {"duration": 0, "steps": 1, "fail_at_step": 1})
    with pytest.raises(TaskFailed):
        await ts.wait(bad, timeout=10)
    async for letter in ts.dead_letters(page_size=5):
        if letter.task.task_id == bad.task_id:
            assert letter.task.status == "failed"
            assert any(e.type == "failed" for e in letter.history)
            break
    else:
        raise AssertionError("failed task not among the dead letters")


async def test_idempotency_key_and_api_errors(ts: AsyncClient) -> None:
    key = f"client-{uuid.uuid4()}"
    a = await ts.submit("noop", {"events": 1}, idempotency_key=key)
    b = await ts.submit("noop", {"events": 1}, idempotency_key=key)
    assert a.task_id == b.task_id
    with pytest.raises(Conflict):
        await ts.submit("noop", {"events": 2}, idempotency_key=key)

    with pytest.raises(Unprocessable) as unknown:
        await ts.submit("no-such-type")
    assert "unknown task type 'no-such-type'" in unknown.value.detail
    with pytest.raises(Unprocessable, match="duration"):
        await ts.submit("demo", {"duration": -1})
    missing = str(uuid.uuid4())
    with pytest.raises(NotFound) as nf:
        await ts.get(missing)
    assert nf.value.code == "not_found"
    with pytest.raises(NotFound):
        [e async for e in ts.events(missing)]  # a refusal is final: no reconnect loop
    with pytest.raises(ValueError, match="not a task id"):
        await ts.get("../health")


async def test_uploads_from_path_bytes_and_file_object(ts: AsyncClient, tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"# Notes\n\n" + WORDS * 20)
    from_path = await ts.upload(path)
    assert from_path.filename == "notes.md" and from_path.size == path.stat().st_size
    from_bytes = await ts.upload(WORDS * 3, filename="words.txt")
    fh = io.BytesIO(b"IGNORED" + WORDS * 5)
    fh.seek(7)  # a file object is sent from where it stands
    from_file = await ts.upload(fh, filename='odd "name".txt')
    assert from_file.size == len(WORDS) * 5 and from_file.filename == 'odd "name".txt'
    results = [await ts.wait(u, timeout=30) for u in (from_path, from_bytes, from_file)]
    assert [r["kind"] for r in results] == ["markdown", "text", "text"]
    assert results[1]["word_count"] == len(WORDS.split()) * 3

    with pytest.raises(FileNotFoundError):
        await ts.upload(tmp_path / "nope.txt")


async def test_large_upload_streams_without_holding_the_file(ts: AsyncClient,
                                                             tmp_path: Path) -> None:
    size = 50 * 1024 * 1024
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        block = WORDS * (1024 * 1024 // len(WORDS) + 1)
        written = 0
        while written < size:
            written += fh.write(block[: size - written])
    tracemalloc.start()
    try:
        up = await ts.upload(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    try:
        assert up.size == size
        # The client held a few chunks at a time, never the 50 MB file.
        assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while uploading"
    finally:
        await ts.cancel(up)  # don't make the shared worker embed 50 MB of text


def test_sync_client(web: WebServer, worker: WorkerProc) -> None:
    with Client(web.url, retry=FAST) as ts:
        task = ts.submit("demo", {"duration": 0.3, "steps": 3})
        events = list(ts.events(task))
        assert [e.seq for e in events] == list(range(1, 7)) and events[-1].terminal
        assert ts.wait(task, timeout=10) == {"steps": 3, "duration": 0.3}
        assert ts.get(task).status == "completed"
        assert [e.seq for e in ts.history(task)] == [e.seq for e in events]
        first = next(iter(ts.list_tasks(type="demo")))  # an abandoned iterator closes cleanly
        assert first.task_id == task.task_id
        assert "demo" in {t.type for t in ts.task_types()}
        bad = ts.submit("demo", {"duration": 0, "steps": 1, "fail_at_step": 1})
        with pytest.raises(TaskFailed):
            ts.wait(bad, timeout=10)
        assert ts.upload(WORDS, filename="s.txt").filename == "s.txt"
        with pytest.raises(NotFound):
            ts.cancel(str(uuid.uuid4()))
