"""Operations: /metrics summed over 2 web + 2 worker processes (prometheus-client's
multiprocess mode), /healthz and /readyz, JSON logs."""

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskstream.devservices.processes import WebServer, free_port
from tests.cluster import drop_cluster, start_cluster
from tests.conftest import eventually, wait_terminal

pytestmark = pytest.mark.timeout(150)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def _scrape(c: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = await c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return _samples(r.text)


def _task(event: str, task_type: str = "noop") -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("taskstream_tasks_total", (("event", event), ("task_type", task_type)))


async def test_metrics_add_up_across_two_web_and_two_worker_processes(
        backing: tuple[str, str], tmp_path: Path) -> None:
    pg, rd = backing
    mpdir = tmp_path / "prom"
    mpdir.mkdir()
    cluster = await start_cluster(pg, rd, tmp_path / "c", workers=2,
                                  PROMETHEUS_MULTIPROC_DIR=str(mpdir))
    web_b = WebServer(cluster.env, tmp_path / "c" / "web-b.log")
    await asyncio.to_thread(web_b.start)
    try:
        async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as a, \
                httpx.AsyncClient(base_url=web_b.url, timeout=30) as b:
            ids = []
            for c in (a, b) * 10:
                r = await c.post("/tasks", json={"type": "noop", "params": {"events": 5}})
                ids.append(r.json()["task_id"])
            for tid in ids:
                await wait_terminal(a, tid)

            async def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
                m = await _scrape(a)
                return m if m.get(_task("completed")) == 20 else None

            m = await eventually(counted)
            assert m[_task("submitted")] == 20  # 10 through each web process
            assert m[_task("started")] == 20
            assert m.get(_task("failed"), 0) == 0
            assert m[("taskstream_task_run_seconds_count", (("task_type", "noop"),))] == 20
            assert m[("taskstream_task_queue_wait_seconds_count", (("task_type", "noop"),))] \
                == 20
            # started + 5 progress + completed per task, through the workers' event logs.
            assert m[("taskstream_events_persisted_total", ())] >= 20 * 7
            assert m[("taskstream_eventlog_batch_size_count", ())] >= 1
            assert (await _scrape(b))[_task("completed")] == 20  # any web process: same sum
            pids = {p.name.rsplit("_", 1)[-1] for p in mpdir.glob("counter_*.db")}
            assert len(pids) >= 3  # two webs and at least one worker wrote counters

            # An open stream on web B shows on web A; B's SIGKILL takes it out of the sum.
            long = (await b.post("/tasks", json={"type": "demo", "params": {
                "duration": 20, "steps": 20}})).json()["task_id"]
            streams = ("taskstream_open_streams", ())
            async with b.stream("GET", f"/tasks/{long}/stream") as resp:
                assert resp.status_code == 200
                await eventually(lambda: _gauge(a, streams, 1))
                web_b.send_signal(signal.SIGKILL)
                await asyncio.to_thread(web_b.p.wait)  # type: ignore[union-attr]
            await eventually(lambda: _gauge(a, streams, 0))
            await a.post(f"/tasks/{long}/cancel")
    finally:
        web_b.kill()
        await drop_cluster(pg, cluster)


async def _gauge(c: httpx.AsyncClient, key: tuple[str, tuple[tuple[str, str], ...]],
                 want: float) -> bool:
    return (await _scrape(c)).get(key, 0) == want


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "failed": [],
                        "checks": {"postgres": "ok", "redis": "ok", "hub": "ok"}}


async def test_readyz_names_the_dependency_that_failed(env: dict[str, str],
                                                       tmp_path: Path) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    web = WebServer({**env, "DATABASE_URL": dead, "TASKSTREAM_SIGNING_KEY": "k" * 32,
                     "TASKSTREAM_LOG_FORMAT": "json", "LOG_LEVEL": "INFO"},
                    tmp_path / "web.log")
    await asyncio.to_thread(web.start)
    try:
        async with httpx.AsyncClient(base_url=web.url, timeout=10) as c:
            assert (await c.get("/healthz")).status_code == 200  # alive all the same
            r = await c.get("/readyz")
            assert r.status_code == 503
            body = r.json()
            assert body["failed"] == ["postgres"] and body["checks"]["redis"] == "ok"
    finally:
        web.stop()
    lines = [ln for ln in (tmp_path / "web.log").read_text().splitlines() if ln.strip()]
    docs = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert docs and all({"time", "level", "logger", "message"} <= d.keys() for d in docs)
    assert any("authentication is OFF" in d["message"] for d in docs)
