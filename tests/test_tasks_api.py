"""Submitting tasks over REST and watching the worker carry them to a terminal status."""

from typing import Any

import httpx

from tests.conftest import wait_terminal


async def submit(client: httpx.AsyncClient, type_: str, **params: Any) -> dict[str, Any]:
    r = await client.post("/tasks", json={"type": type_, "params": params})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_demo_runs_to_completion_with_monotonic_progress(client: httpx.AsyncClient) -> None:
    task = await submit(client, "demo", duration=0.5, steps=5)
    assert task["status"] == "pending"
    assert task["links"]["stream"] == f"/tasks/{task['task_id']}/stream"
    done = await wait_terminal(client, task["task_id"])
    assert done["status"] == "completed"
    assert done["progress"] == 100
    assert done["result"] == {"steps": 5, "duration": 0.5}
    assert done["attempts"] == 1 and done["started_at"] and done["finished_at"]

    events = (await client.get(f"/tasks/{task['task_id']}/events")).json()["items"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events] == (
        ["created", "started"] + ["progress"] * 5 + ["completed"]
    )
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    assert events[-1]["result"] == done["result"]


async def test_failure_is_recorded_with_a_useful_error(client: httpx.AsyncClient) -> None:
    task = await submit(client, "demo", duration=0.2, steps=4, fail_at_step=3)
    done = await wait_terminal(client, task["task_id"])
    assert done["status"] == "failed"
    assert "DemoFailure: failed at step 3 of 4" in done["error"]
    assert done["progress"] == 50


async def test_list_filters_and_paginates_newest_first(client: httpx.AsyncClient) -> None:
    ids = [(await submit(client, "noop"))["task_id"] for _ in range(5)]
    for i in ids:
        await wait_terminal(client, i)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"type": "noop", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/tasks", params=params)).json()
        seen += [t["task_id"] for t in page["items"]]
        assert all(t["type"] == "noop" for t in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    # Newest first: our five appear in reverse submission order, nothing repeated.
    ours = [i for i in seen if i in ids]
    assert ours == list(reversed(ids))
    assert len(seen) == len(set(seen))

    completed = (await client.get("/tasks", params={"status": "completed", "limit": 200})).json()
    assert all(t["status"] == "completed" for t in completed["items"])
    failed = (await client.get("/tasks", params=[("status", "failed"), ("status", "cancelled")]))
    assert failed.status_code == 200


async def test_task_types_publish_param_schemas(client: httpx.AsyncClient) -> None:
    types = {t["type"]: t for t in (await client.get("/task-types")).json()}
    assert {"demo", "noop", "document_process"} <= set(types)
    demo = types["demo"]["params_schema"]
    assert demo["properties"]["duration"]["maximum"] == 3600
    assert "upload_id" in types["document_process"]["params_schema"]["required"]


async def test_bad_input_gets_clear_4xx(client: httpx.AsyncClient) -> None:
    r = await client.post("/tasks", json={"type": "nope", "params": {}})
    assert r.status_code == 422 and "unknown task type 'nope'" in r.json()["detail"]

    r = await client.post("/tasks", json={"type": "demo", "params": {"duration": -1}})
    assert r.status_code == 422 and "duration" in r.json()["detail"]

    r = await client.post("/tasks", json={"type": "demo", "params": {"bogus": 1}})
    assert r.status_code == 422 and "bogus" in r.json()["detail"]

    r = await client.post("/tasks", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert r.status_code == 422

    r = await client.post("/tasks", json=["a", "list"])
    assert r.status_code == 422

    for bad in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", "' OR 1=1 --"):
        for path in ("", "/events", "/stream", "/cancel"):
            method = "POST" if path == "/cancel" else "GET"
            r = await client.request(method, f"/tasks/{bad}{path}")
            assert r.status_code == 404, (bad, path, r.status_code)
            assert r.json()["error"] == "not_found"

    r = await client.get("/tasks", params={"cursor": "garbage!!"})
    assert r.status_code == 400
    r = await client.get("/tasks", params={"status": "exploded"})
    assert r.status_code == 422
    r = await client.get("/tasks", params={"limit": 10_000})
    assert r.status_code == 422


async def test_idempotency_key_returns_same_task(client: httpx.AsyncClient) -> None:
    body = {"type": "noop", "params": {}}
    h = {"Idempotency-Key": "k-123"}
    a = await client.post("/tasks", json=body, headers=h)
    b = await client.post("/tasks", json=body, headers=h)
    assert a.status_code == 202 and b.status_code == 200
    assert a.json()["task_id"] == b.json()["task_id"]
    c = await client.post("/tasks", json={"type": "noop", "params": {"events": 3}}, headers=h)
    assert c.status_code == 409


async def test_cancel_pending_and_running(client: httpx.AsyncClient) -> None:
    running = await submit(client, "demo", duration=30, steps=300)

    async def started() -> bool:
        t = (await client.get(f"/tasks/{running['task_id']}")).json()
        return bool(t["status"] == "running")

    from tests.conftest import eventually

    await eventually(started)
    r = await client.post(f"/tasks/{running['task_id']}/cancel")
    assert r.status_code == 200
    done = await wait_terminal(client, running["task_id"], timeout=10)
    assert done["status"] == "cancelled"
    again = await client.post(f"/tasks/{running['task_id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"

    finished = await submit(client, "noop")
    await wait_terminal(client, finished["task_id"])
    r = await client.post(f"/tasks/{finished['task_id']}/cancel")
    assert r.status_code == 409
