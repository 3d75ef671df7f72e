"""The dashboard's reads: the overview, workers, the task list's filters, and X-Tenant."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import wait_terminal
from tests.test_security import as_, keys, secure  # noqa: F401  (fixtures)


async def _demo(c: httpx.AsyncClient, **params: Any) -> str:
    r = await c.post("/tasks", json={"type": "demo", "max_attempts": 1,
                                     "params": {"duration": 0.2, "steps": 2, **params}})
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


async def test_overview_counts_queues_throughput_workers(client: httpx.AsyncClient) -> None:
    ok = await _demo(client)
    bad = await _demo(client, fail_at_step=1)
    await wait_terminal(client, ok)
    await wait_terminal(client, bad)
    r = await client.get("/stats/overview")
    assert r.status_code == 200, r.text
    body = r.json()
    by = {(c["type"], c["status"]): c["count"] for c in body["counts"]}
    assert by[("demo", "completed")] >= 1 and by[("demo", "failed")] >= 1
    assert body["minutes"] == 60
    last = body["throughput"][-1]
    assert last["completed"] >= 1 and last["failed"] >= 1
    assert body["workers_live"] >= 1
    assert body["streams"]["scope"] == "process"
    workers = (await client.get("/workers")).json()  # auth off: the caller is admin
    live = [w for w in workers if w["live"]]
    assert live and "demo" in live[0]["types"] and len(live[0]["version"]) == 8
    # a delayed task is pending but not yet due: counted, with no age
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await client.post("/tasks", json={"type": "demo", "params": {}, "run_at": later})
    assert r.status_code == 202, r.text
    queues = {q["type"]: q for q in (await client.get("/stats/overview")).json()["queues"]}
    assert queues["demo"]["pending"] >= 1
    await client.post(f"/tasks/{r.json()['task_id']}/cancel")


async def test_task_list_filters(client: httpx.AsyncClient) -> None:
    steps = 100 + uuid.uuid4().int % 900  # the error says "failed at step 1 of <steps>"
    marker = f"STEP 1 of {steps},"
    bad = await _demo(client, fail_at_step=1, steps=steps, duration=0.01 * steps)
    failed = await wait_terminal(client, bad)
    assert marker.lower() in (failed["error"] or ""), failed
    r = await client.get("/tasks", params={"q": marker.upper()})
    assert [t["task_id"] for t in r.json()["items"]] == [bad]
    assert (await client.get("/tasks", params={"q": "%"})).status_code == 200
    assert not (await client.get("/tasks", params={"q": f"{marker}%"})).json()["items"]
    created = datetime.fromisoformat(failed["created_at"])
    within = {"created_after": (created - timedelta(seconds=1)).isoformat(),
              "created_before": (created + timedelta(seconds=1)).isoformat(),
              "status": "failed", "type": "demo"}
    assert bad in [t["task_id"] for t in (await client.get("/tasks", params=within)).json()[
        "items"]]
    after = {"created_after": (created + timedelta(seconds=1)).isoformat(), "q": marker}
    assert not (await client.get("/tasks", params=after)).json()["items"]
    # naive times are UTC
    naive = {"created_before": created.astimezone(UTC).replace(tzinfo=None).isoformat(),
             "q": marker}
    assert not (await client.get("/tasks", params=naive)).json()["items"]
    for bad_params in ({"created_after": "yesterday"}, {"status": "sleeping"},
                       {"created_after": "2026-01-02T00:00:00Z",
                        "created_before": "2026-01-01T00:00:00Z"},
                       {"q": "a\x00b"}, {"q": ""}, {"limit": 0}):
        r = await client.get("/tasks", params=bad_params)
        assert 400 <= r.status_code < 500, (bad_params, r.status_code, r.text)


async def test_x_tenant_is_for_admin_keys(as_: Any, keys: dict[str, str]) -> None:  # noqa: F811
    alice, bob, admin = as_("alice"), as_("bob"), as_("admin")
    task_id = await _demo(bob)
    bob_tenant = (await bob.get("/stats/overview")).json()["tenant"]
    assert bob_tenant and bob_tenant.startswith("bob-")
    r = await alice.get(f"/tasks/{task_id}", headers={"X-Tenant": bob_tenant})
    assert r.status_code == 403
    assert (await alice.get("/stats/overview", params={"all_tenants": True})).status_code == 403
    assert (await alice.get("/workers")).status_code == 403
    r = await admin.get(f"/tasks/{task_id}", headers={"X-Tenant": bob_tenant})
    assert r.status_code == 200 and r.json()["task_id"] == task_id
    await wait_terminal(bob, task_id)
    everyone = (await admin.get("/stats/overview", params={"all_tenants": True})).json()
    assert everyone["tenant"] is None
    assert bob_tenant in {c["tenant"] for c in everyone["counts"]}
    mine = (await bob.get("/stats/overview")).json()
    assert {c["tenant"] for c in mine["counts"]} == {bob_tenant}
    # the stream ticket an admin mints for a tenant opens that tenant's stream
    t = (await admin.post("/stream-tickets", json={"task_id": task_id},
                          headers={"X-Tenant": bob_tenant})).json()
    assert t["stream_url"].startswith(f"/tasks/{task_id}/stream")
