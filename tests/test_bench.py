"""The benchmark suite runs end to end on tiny sizes and its correctness checks hold.

No timing is asserted here (the machine is shared and noisy): only that every scenario ran,
every task reached its terminal status and every event was received, for Taskstream and for
each baseline. The figures themselves come from ``python -m bench --quick`` / ``--full``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {"throughput", "events", "latency", "capacity", "ends", "waiting", "submission",
             "scaleout", "limits", "summaries", "batches", "search", "tokens"}


@pytest.mark.timeout(1200)
def test_bench_tiny_runs_every_scenario_and_its_checks_hold(
    backing: tuple[str, str], tmp_path: Path
) -> None:
    admin_pg, redis_url = backing
    out = tmp_path / "bench.json"
    args = [sys.executable, "-m", "bench", "--tiny", "--database-url", admin_pg,
            "--redis-url", redis_url, "--out", str(out)]
    if os.environ.get("BENCH_TEST_NO_CELERY"):
        args.append("--no-celery")
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1100)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["failed_checks"] == [], report["failed_checks"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = report["results"]
    assert set(results) == SCENARIOS
    for name, res in results.items():
        assert res["rows"], f"{name} produced no figures: {res['notes']}"
        assert res["checks"], f"{name} checked nothing"
        assert all(res["checks"].values()), (name, res["checks"])
    checks = {k for res in results.values() for k in res["checks"]}
    for expected in ("throughput taskstream x1: every task done",
                     "throughput raw arq x2: every task done",
                     "events taskstream: every event published",
                     "events one-by-one: every event persisted",
                     "latency 20: every event received",
                     "capacity 50 starlette: every stream reached the terminal event",
                     "capacity 50 lean: every stream reached the terminal event",
                     "ends 20 bare: every stream opened and ended",
                     "ends 20 lean: every stream opened and ended",
                     "ends 20 starlette: every stream opened and ended",
                     "waiting taskstream: every event received",
                     "scale-out streams on web b: every event received",
                     "batches submit 100: 202 and every child stored",
                     "batches documents 5: each child's end on the parent stream once",
                     "search documents: every document processed and its vectors stored",
                     "search queries: every answer 200 with k hits",
                     "tokens 50/s: every SSE client's tokens are the durable text, no gap or "
                     "repeat",
                     "tokens 50/s: every WebSocket client's tokens are the durable text"):
        assert expected in checks, sorted(checks)
    if "--no-celery" not in args:
        assert "throughput celery x1: every task done" in checks
    table = {(r["scenario"], r["metric"]) for r in report["table"]}
    assert ("4 cost of waiting", "DB queries/s, 20 waiting streams") in table


async def test_the_sse_client_reads_a_response_however_it_is_split() -> None:
    """The bench's SSE reader (``bench.net``) gets the same messages whether a response
    arrives whole or a few bytes per read: comments, multi-line data, a ``retry:`` after the
    data, a named event whose data quotes ``data:``, and nothing read after the last chunk."""
    import asyncio

    from bench.net import SSEProtocol, Stream

    class Transport:
        def close(self) -> None:
            pass

    messages = [b'id: 1\r\ndata: {"seq": 1, "message": "not a stamp"}\r\n\r\n',
                b": keep-alive\r\n\r\n",
                b'id: 2\r\ndata: {"seq": 2,\r\ndata: "status": "running"}\r\nretry: 5\r\n\r\n',
                b'event: token\r\ndata: {"delta": "data: x"}\r\n\r\n',
                b'id: 3\r\ndata: {"seq": 3, "status": "completed"}\r\nretry: 100\r\n\r\n']
    body = b"".join(b"%x\r\n%s\r\n" % (len(m), m) for m in messages) + b"0\r\n\r\n"
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + body
    loop = asyncio.get_running_loop()
    for step in (1, 2, 3, 4, 5, 7, 11, 64, len(raw)):
        s = Stream("/tasks/x/stream")
        seen: list[dict[str, object]] = []
        p = SSEProtocol(s, "h", 1, True, loop.create_future(),
                        on_message=lambda _, msg, out=seen: out.append(msg))
        p.transport = Transport()  # type: ignore[assignment]  # what close() needs
        for i in range(0, len(raw), step):
            p.data_received(raw[i:i + step])
        p.data_received(b"\r\n")  # after the end: ignored
        assert seen == [{"seq": 1, "message": "not a stamp"}, {"seq": 2, "status": "running"},
                        {"delta": "data: x"}, {"seq": 3, "status": "completed"}], step
        assert (s.status, s.last_seq, s.seqs_ok, s.terminal, s.closed) == \
            (200, 3, True, True, True), step
