"""Webhooks against real local HTTP receivers: signed deliveries of terminal events, a
receiver that answers 500 (retried with backoff, then recorded as failed), one that times
out (the pipeline does not wait for it), and URLs that would reach inside (refused)."""

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaos.receiver import Receiver
from taskstream.core import webhooks as wh
from tests.cluster import Cluster, drop_cluster, start_cluster
from tests.conftest import eventually, wait_terminal

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def hooked(backing: tuple[str, str], tmp_path: Path) -> AsyncIterator[Cluster]:
    """A private web + worker that may call loopback receivers, with quick retries."""
    pg, rd = backing
    cluster = await start_cluster(
        pg, rd, tmp_path / "c", workers=1,
        TASKSTREAM_WEBHOOK_ALLOW_HOSTS="127.0.0.1", TASKSTREAM_WEBHOOK_TIMEOUT="0.5",
        TASKSTREAM_WEBHOOK_MAX_ATTEMPTS="3", TASKSTREAM_WEBHOOK_BACKOFF="0.2",
        TASKSTREAM_WEBHOOK_POLL_INTERVAL="0.1")
    yield cluster
    await drop_cluster(pg, cluster)


async def _register(c: httpx.AsyncClient, url: str, **kw: Any) -> dict[str, Any]:
    r = await c.post("/webhooks", json={"url": url, **kw})
    assert r.status_code == 201, r.text
    hook: dict[str, Any] = r.json()
    assert hook["secret"].startswith("whsec_")
    return hook


async def _deliveries(c: httpx.AsyncClient, hook: dict[str, Any]) -> list[dict[str, Any]]:
    r = await c.get(f"/webhooks/{hook['webhook_id']}/deliveries")
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_terminal_events_are_delivered_signed(hooked: Cluster) -> None:
    rx = await Receiver().start()
    try:
        async with httpx.AsyncClient(base_url=hooked.web.url, timeout=30) as c:
            hook = await _register(c, rx.url)
            assert hook["event_types"] == ["cancelled", "completed", "failed"]
            listed = (await c.get("/webhooks")).json()
            assert [h["webhook_id"] for h in listed] == [hook["webhook_id"]]
            assert "secret" not in listed[0]
            ok = (await c.post("/tasks", json={"type": "noop"})).json()["task_id"]
            bad = (await c.post("/tasks", json={"type": "demo", "params": {
                "duration": 0, "steps": 1, "fail_at_step": 1}})).json()["task_id"]
            for tid in (ok, bad):
                await wait_terminal(c, tid)
            await eventually(lambda: _settled(c, hook, 2))
            got = {}
            for r in rx.received:
                h = r.headers
                assert wh.verify(hook["secret"], h["taskstream-timestamp"], r.body,
                                 h["taskstream-signature"])
                assert not wh.verify("whsec_wrong", h["taskstream-timestamp"], r.body,
                                     h["taskstream-signature"])
                doc = httpx.Response(200, content=r.body).json()
                assert h["taskstream-event"] == doc["type"] == doc["event"]["type"]
                got[doc["event"]["task_id"]] = doc
            assert got[ok]["type"] == "completed" and got[ok]["task_type"] == "noop"
            assert got[ok]["event"]["result"] == {"events": 0}
            assert got[bad]["type"] == "failed" and got[bad]["event"]["error"]
            assert len(rx.received) == 2  # progress, started, created: not subscribed
            rows = await _deliveries(c, hook)
            assert {(d["status"], d["response_code"], d["attempts"]) for d in rows} == \
                {("delivered", 200, 1)}
            # Removing the webhook stops deliveries; its record goes with it.
            assert (await c.delete(f"/webhooks/{hook['webhook_id']}")).status_code == 204
            assert (await c.get(f"/webhooks/{hook['webhook_id']}/deliveries")).status_code \
                == 404
    finally:
        await rx.close()


async def _settled(c: httpx.AsyncClient, hook: dict[str, Any], n: int
                   ) -> list[dict[str, Any]] | None:
    rows = await _deliveries(c, hook)
    done = [d for d in rows if d["status"] != "pending"]
    return rows if len(done) >= n else None


async def test_a_500_is_retried_with_backoff_then_recorded_failed(hooked: Cluster) -> None:
    rx = await Receiver(status=500).start()
    try:
        async with httpx.AsyncClient(base_url=hooked.web.url, timeout=30) as c:
            hook = await _register(c, rx.url, event_types=["completed", "started"])
            assert hook["event_types"] == ["completed", "started"]
            tid = (await c.post("/tasks", json={"type": "noop"})).json()["task_id"]
            await wait_terminal(c, tid)
            rows = await eventually(lambda: _settled(c, hook, 2), timeout=30)
            assert {(d["event_type"], d["status"], d["attempts"], d["response_code"])
                    for d in rows} == {("started", "failed", 3, 500),
                                       ("completed", "failed", 3, 500)}
            for d in rows:
                assert [a["code"] for a in d["history"]] == [500, 500, 500]
                assert d["error"] == "HTTP 500"
            # Every retry of one delivery carries the same delivery id, freshly signed.
            ids = [r.headers["taskstream-delivery"] for r in rx.received]
            assert len(ids) == 6 and len(set(ids)) == 2
    finally:
        await rx.close()


async def test_a_receiver_that_times_out_never_slows_the_pipeline(hooked: Cluster) -> None:
    rx = await Receiver(delay=3.0).start()
    try:
        async with httpx.AsyncClient(base_url=hooked.web.url, timeout=30) as c:
            hook = await _register(c, rx.url)
            t0 = time.monotonic()
            ids = [(await c.post("/tasks", json={"type": "noop"})).json()["task_id"]
                   for _ in range(20)]
            for tid in ids:
                await wait_terminal(c, tid)
            took = time.monotonic() - t0
            # 20 deliveries at 0.5 s timeout x 3 attempts would take >= 1.5 s each if the
            # tasks waited for them.
            assert took < 10, took
            rows = await eventually(lambda: _settled(c, hook, 20), timeout=60)
            for d in rows:
                assert d["status"] == "failed" and d["response_code"] is None
                assert d["error"] == "timed out after 0.5s" and d["attempts"] == 3
    finally:
        await rx.close()


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://10.0.0.1/hook", "http://[::1]:8000/", "http://localhost:8000/",
    "ftp://example.com/", "http://user:pw@example.com/", "not a url",
])
async def test_urls_that_reach_inside_are_refused(client: httpx.AsyncClient, url: str) -> None:
    r = await client.post("/webhooks", json={"url": url})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


async def test_hot_event_types_cannot_be_subscribed(client: httpx.AsyncClient) -> None:
    r = await client.post("/webhooks", json={"url": "http://example.com/",
                                             "event_types": ["progress"]})
    assert r.status_code == 422 and "never delivered" in r.json()["detail"]
    r = await client.get("/webhooks/not-a-uuid/deliveries")
    assert r.status_code == 404
