"""OpenTelemetry (the ``otel`` extra): one trace from ``POST /tasks`` in the web process
through the queue wait to the run and its durable steps in the worker, exported by the SDK's
console exporter (one JSON object per span, to a file both processes append to)."""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import drop_cluster, start_cluster
from tests.conftest import eventually, wait_terminal

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
pytestmark = pytest.mark.timeout(90)


def _spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


async def test_one_trace_spans_submission_queue_wait_and_run(backing: tuple[str, str],
                                                             tmp_path: Path) -> None:
    pg, rd = backing
    spans_file = tmp_path / "spans.jsonl"
    cluster = await start_cluster(pg, rd, tmp_path / "c", workers=1,
                                  TASKSTREAM_TRACING="console",
                                  TASKSTREAM_TRACING_FILE=str(spans_file),
                                  TASKSTREAM_TASKS="tests.tasktypes_steps")
    try:
        async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
            r = await c.post("/tasks", json={"type": "stepper",
                                             "params": {"dir": str(tmp_path)}})
            tid = r.json()["task_id"]
            await wait_terminal(c, tid)

            def run_span() -> list[dict[str, Any]] | None:
                spans = _spans(spans_file)
                return spans if any(s["name"] == "run stepper" for s in spans) else None

            async def found() -> list[dict[str, Any]] | None:
                return run_span()

            spans = await eventually(found)
    finally:
        await drop_cluster(pg, cluster)

    by_id = {s["context"]["span_id"]: s for s in spans}
    run = next(s for s in spans if s["name"] == "run stepper")
    wait = next(s for s in spans if s["name"] == "queue wait")
    post = next(s for s in spans if s["name"] == "POST /tasks"
                and s["resource"]["attributes"]["service.name"] == "taskstream-web")
    trace_id = post["context"]["trace_id"]
    assert run["context"]["trace_id"] == wait["context"]["trace_id"] == trace_id
    assert run["resource"]["attributes"]["service.name"] == "taskstream-worker"
    assert run["attributes"]["taskstream.task_id"] == tid
    assert run["attributes"]["taskstream.outcome"] == "completed"
    # Both worker spans hang off the request's span, which the worker never saw.
    assert run["parent_id"] == wait["parent_id"] == post["context"]["span_id"]
    assert post["context"]["span_id"] in by_id
    # The steps (one runs in a thread) are children of the run.
    steps = sorted((s for s in spans if s["name"].startswith("step ")),
                   key=lambda s: s["attributes"]["taskstream.step_index"])
    assert [s["name"] for s in steps] == ["step one", "step two", "step three", "step four"]
    for s in steps:
        assert s["parent_id"] == run["context"]["span_id"]
        assert s["context"]["trace_id"] == trace_id
