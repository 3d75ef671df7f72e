"""Batches (POST /batches, several files in POST /upload): one parent whose stream and
snapshot carry its children's aggregate; cancel cascades, re-drive re-runs only the failed,
the policy decides when the parent fails; bad input creates nothing."""

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
import orjson

from tests.conftest import eventually, wait_terminal

TERMINAL = ("completed", "failed", "cancelled")


def demo(duration: float = 0.1, steps: int = 2, **kw: Any) -> dict[str, Any]:
    return {"type": "demo", "params": {"duration": duration, "steps": steps, **kw}}


async def submit(client: httpx.AsyncClient, tasks: list[dict[str, Any]],
                 **body: Any) -> dict[str, Any]:
    r = await client.post("/batches", json={"tasks": tasks, **body})
    assert r.status_code == 202, r.text
    out: dict[str, Any] = r.json()
    return out


async def wait_batch(client: httpx.AsyncClient, batch_id: str,
                     timeout: float = 60) -> dict[str, Any]:
    await wait_terminal(client, batch_id, timeout)
    return (await client.get(f"/batches/{batch_id}")).json()  # type: ignore[no-any-return]


def counts_of(children: list[dict[str, Any]]) -> dict[str, int]:
    out = dict.fromkeys(("pending", "running", "completed", "failed", "cancelled"), 0)
    for c in children:
        out[c["status"]] += 1
    return out


async def stream_events(client: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    """Every message of a task's stream until it ends."""
    out: list[dict[str, Any]] = []
    async with client.stream("GET", f"/tasks/{task_id}/stream", timeout=90) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                out.append(orjson.loads(line[5:]))
    return out


async def test_batch_of_mixed_types_completes_with_its_aggregate(
        client: httpx.AsyncClient) -> None:
    tasks = [demo(0.3, 3) for _ in range(4)] + [{"type": "noop", "params": {"events": 5}}] * 3
    b = await submit(client, tasks)
    assert b["type"] == "batch" and len(b["children"]) == 7
    follow = asyncio.create_task(stream_events(client, b["task_id"]))
    done = await wait_batch(client, b["task_id"])
    assert done["status"] == "completed" and done["percent"] == 100
    assert done["counts"] == counts_of(done["children"]) == {
        "pending": 0, "running": 0, "completed": 7, "failed": 0, "cancelled": 0}
    events = await asyncio.wait_for(follow, 30)
    assert events[-1]["status"] == "completed"
    assert events[-1]["result"]["counts"]["completed"] == 7
    finished = [f["task_id"] for e in events if e["type"] == "aggregate"
                for f in e["data"]["finished"]]
    assert sorted(finished) == sorted(b["children"])  # each child's end, once
    percents = [e["progress"] for e in events if e["type"] == "aggregate"]
    assert percents == sorted(percents) and percents[-1] == 100
    snap = (await client.get(f"/tasks/{b['task_id']}")).json()  # the snapshot carries it
    assert snap["batch"]["counts"] == done["counts"] and snap["progress"] == 100
    kids = (await client.get(snap["batch"]["children_url"])).json()["items"]
    assert sorted(k["task_id"] for k in kids) == sorted(b["children"])
    assert {k["status"] for k in kids} == {"completed"}
    kid_snap = (await client.get(f"/tasks/{b['children'][0]}")).json()
    assert kid_snap["parent_id"] == b["task_id"] and kid_snap["batch"] is None
    # Children keep their own streams and history.
    kid = (await client.get(f"/tasks/{b['children'][0]}/events")).json()["items"]
    assert kid[0]["type"] == "created" and kid[-1]["type"] == "completed"


async def test_policy_any_fails_fast_and_cancels_the_rest(client: httpx.AsyncClient) -> None:
    b = await submit(client, [demo(0.1, 1, fail_at_step=1)] + [demo(20, 20)] * 5)
    done = await wait_batch(client, b["task_id"])
    assert done["status"] == "failed"
    assert done["counts"] == counts_of(done["children"])
    assert done["counts"]["failed"] == 1 and done["counts"]["cancelled"] == 5
    parent = (await client.get(f"/tasks/{b['task_id']}")).json()
    assert "policy any" in parent["error"]


async def test_policy_all_and_threshold(client: httpx.AsyncClient) -> None:
    bad = demo(0.1, 1, fail_at_step=1)
    some = await submit(client, [bad, demo(), demo()], policy="all")
    none = await submit(client, [bad, bad], policy="all")
    under = await submit(client, [bad, demo(), demo()], policy="threshold", threshold=2)
    over = await submit(client, [bad, bad, demo(5, 5)], policy="threshold", threshold=2)
    assert (await wait_batch(client, some["task_id"]))["status"] == "completed"
    assert (await wait_batch(client, none["task_id"]))["status"] == "failed"
    assert (await wait_batch(client, under["task_id"]))["status"] == "completed"
    o = await wait_batch(client, over["task_id"])
    assert o["status"] == "failed" and o["counts"]["failed"] == 2
    assert o["counts"] == counts_of(o["children"])


async def test_cancel_cascades_to_every_child(client: httpx.AsyncClient) -> None:
    b = await submit(client, [demo(30, 30) for _ in range(6)], policy="all")
    await eventually(lambda: _running(client, b["task_id"]))
    r = await client.post(f"/tasks/{b['task_id']}/cancel")
    assert r.status_code == 200, r.text
    done = await wait_batch(client, b["task_id"], 30)
    assert done["status"] == "cancelled"
    assert done["counts"]["cancelled"] == 6 == counts_of(done["children"])["cancelled"]


async def _running(client: httpx.AsyncClient, batch_id: str) -> bool:
    b = (await client.get(f"/batches/{batch_id}?children=false")).json()
    return bool(b["status"] == "running" and b["counts"]["running"] > 0)


async def test_redrive_reruns_only_the_failed(client: httpx.AsyncClient) -> None:
    # Each failing child fails its first attempt only: the re-drive completes it.
    flaky = demo(0.1, 1, fail_at_step=1, fail_attempts=1)
    b = await submit(client, [flaky, demo(), flaky, demo()], policy="all")
    first = await wait_batch(client, b["task_id"])
    assert first["status"] == "completed" and first["counts"]["failed"] == 2
    r = await client.post(f"/tasks/{b['task_id']}/retry")
    assert r.status_code == 409  # completed: nothing to re-drive
    b2 = await submit(client, [flaky, demo(), flaky, demo()])
    failed = await wait_batch(client, b2["task_id"])
    assert failed["status"] == "failed"
    ok_before = {c["task_id"]: c for c in failed["children"] if c["status"] == "completed"}
    r = await client.post(f"/batches/{b2['task_id']}/retry")
    assert r.status_code == 200, r.text
    again = r.json()["redriven"]
    done = await wait_batch(client, b2["task_id"])
    assert done["status"] == "completed", done
    assert done["counts"] == counts_of(done["children"]) == {
        "pending": 0, "running": 0, "completed": 4, "failed": 0, "cancelled": 0}
    for tid in ok_before:  # completed children did not run again
        events = (await client.get(f"/tasks/{tid}/events")).json()["items"]
        assert [e["type"] for e in events].count("started") == 1
    assert again == 4 - len(ok_before)
    # A child is re-driven with its batch, never alone.
    kid = done["children"][0]["task_id"]
    assert (await client.post(f"/tasks/{kid}/retry")).status_code == 409


async def test_bad_input_names_the_child_and_creates_nothing(
        client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    before = await pool.fetchval("SELECT count(*) FROM tasks")
    cases = [
        ([], 422, "at least one"),
        ([demo()] * 999 + [{"type": "demo", "params": {"steps": -1}}], 422, "tasks[999]"),
        ([demo(), {"type": "nope", "params": {}}], 422, "tasks[1]"),
        ([demo(), {"type": "batch", "params": {}}], 422, "tasks[1]"),
        ([demo()] * 1001, 422, "at most 1000"),
    ]
    for tasks, status, needle in cases:
        r = await client.post("/batches", json={"tasks": tasks})
        assert r.status_code == status, (needle, r.text)
        assert needle in r.json()["detail"], r.text
    r = await client.post("/batches", json={"tasks": [demo()], "policy": "threshold"})
    assert r.status_code == 422 and "threshold" in r.json()["detail"]
    r = await client.post("/batches", json={"tasks": [demo(), {"params": {}}]})
    assert r.status_code == 422 and "tasks.1.type" in r.json()["detail"]
    assert await pool.fetchval("SELECT count(*) FROM tasks") == before


async def test_thousand_children_one_transaction_and_exact_aggregate(
        client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    tasks = [{"type": "noop", "params": {"events": 20}} for _ in range(1000)]
    t0 = time.perf_counter()
    b = await submit(client, tasks)
    took = time.perf_counter() - t0
    assert len(b["children"]) == 1000
    rows = await pool.fetchval("SELECT count(*) FROM tasks WHERE parent_id = $1",
                               uuid.UUID(b["task_id"]))
    assert rows == 1000
    follow = asyncio.create_task(stream_events(client, b["task_id"]))
    done = await wait_batch(client, b["task_id"], 120)
    assert done["status"] == "completed", done
    assert done["counts"] == counts_of(done["children"])
    events = await asyncio.wait_for(follow, 60)
    aggregate = [e for e in events if e["type"] == "aggregate"]
    assert sum(len(e["data"]["finished"]) for e in aggregate) == 1000
    # Coalesced: 1,000 children x 22 events became a few parent events per tick.
    assert len(events) < 200, (len(events), took)


async def test_several_files_make_one_batch(client: httpx.AsyncClient,
                                           pool: asyncpg.Pool) -> None:
    from tests.pdfs import make_pdf
    words = "batches of documents parse in parallel under one parent "
    files = [("file", (f"doc{i}.pdf", make_pdf([words * (i + 3)]), "application/pdf"))
             for i in range(3)]
    files.append(("file", ("../../etc/notes.md", b"# notes\n" + words.encode() * 5,
                           "text/markdown")))
    r = await client.post("/upload", files=files)
    assert r.status_code == 202, r.text
    b = r.json()
    assert [c["filename"] for c in b["children"]] == [
        "doc0.pdf", "doc1.pdf", "doc2.pdf", "notes.md"]
    done = await wait_batch(client, b["task_id"])
    assert done["status"] == "completed", done
    assert done["counts"]["completed"] == 4
    # The tutorial's /batch-process takes `files`, and one file is a batch there too.
    r = await client.post("/batch-process", files=[
        ("files", ("a.md", b"alpha " * 50, "text/markdown"))])
    assert r.status_code == 202, r.text
    assert (await wait_batch(client, r.json()["task_id"]))["counts"]["completed"] == 1
    # A single file on /upload keeps its own shape: a document_process task, no batch.
    r = await client.post("/upload", files={"file": ("one.md", b"one " * 50, "text/markdown")})
    assert r.status_code == 202 and "children" not in r.json() and "upload_id" in r.json()


async def test_bad_files_create_nothing(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    tasks_before = await pool.fetchval("SELECT count(*) FROM tasks")
    uploads_before = await pool.fetchval("SELECT count(*) FROM uploads")
    r = await client.post("/upload", files=[("file", ("a.md", b"fine " * 10, "text/markdown")),
                                            ("file", ("empty.md", b"", "text/markdown"))])
    assert r.status_code == 400 and "file 1 ('empty.md') is empty" in r.json()["detail"]
    r = await client.post("/upload?policy=threshold", files=[
        ("file", ("a.md", b"x " * 10, "text/markdown")),
        ("file", ("b.md", b"y " * 10, "text/markdown"))])
    assert r.status_code == 422, r.text
    r = await client.post("/upload?policy=threshold&threshold=3", files=[
        ("file", ("a.md", b"x " * 10, "text/markdown")),
        ("file", ("b.md", b"y " * 10, "text/markdown"))])
    assert r.status_code == 422 and "between 1 and 2" in r.json()["detail"], r.text
    assert await pool.fetchval("SELECT count(*) FROM tasks") == tasks_before
    # Refused before reading the files, except a threshold over the files' count: known
    # only once they are read (their rows stay, with no task).
    assert await pool.fetchval("SELECT count(*) FROM uploads") == uploads_before + 2


async def test_idempotent_replay_returns_the_same_batch(client: httpx.AsyncClient,
                                                       pool: asyncpg.Pool) -> None:
    body = {"tasks": [demo(), demo()], "policy": "all"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await client.post("/batches", json=body, headers=key)
    again = await client.post("/batches", json=body, headers=key)
    assert first.status_code == 202 and again.status_code == 200, again.text
    assert again.json()["task_id"] == first.json()["task_id"]
    assert sorted(again.json()["children"]) == sorted(first.json()["children"])
    other = await client.post("/batches", json={**body, "policy": "any"}, headers=key)
    assert other.status_code == 409
    assert await pool.fetchval("SELECT count(*) FROM tasks WHERE parent_id = $1",
                               uuid.UUID(first.json()["task_id"])) == 2


async def test_client_submits_and_follows_a_batch(web: Any, worker: Any) -> None:
    from taskstream.client import AsyncClient, Client

    async with AsyncClient(web.url) as ts:
        batch = await ts.submit_batch([("demo", {"duration": 0.3, "steps": 3}),
                                       {"type": "noop", "params": {"events": 3}},
                                       ("demo", {"duration": 0.1, "steps": 1,
                                                 "fail_at_step": 1})], policy="all")
        assert len(batch.children) == 3
        states = [s async for s in ts.follow_batch(batch.task_id)]
        assert states[-1].terminal and states[-1].status == "completed"
        assert states[-1].counts["completed"] == 2 and states[-1].counts["failed"] == 1
        ended = {e.task_id: e.status for s in states for e in s.finished}
        assert set(ended) == set(batch.children) and sorted(ended.values()) == [
            "completed", "completed", "failed"]
        assert (await ts.get_batch(batch.task_id)).percent == 100

    def blocking() -> str:
        with Client(web.url) as c:
            b = c.submit_batch([("noop", {})])
            return [s for s in c.follow_batch(b.task_id)][-1].status

    assert await asyncio.to_thread(blocking) == "completed"
