"""The seed tutorial's contract, at curl level: upload, status, stream."""

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from taskstream.devservices.processes import WebServer, WorkerProc

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def curl(*args: str) -> str:
    out = subprocess.run(["curl", "-sS", "--max-time", "30", *args], check=True,
                         capture_output=True, text=True)
    return out.stdout


async def test_upload_status_stream_with_curl(sse_web: WebServer, worker: WorkerProc,
                                              tmp_path: Path) -> None:
    web = sse_web
    doc = tmp_path / "doc.txt"
    doc.write_text("Taskstream processes documents pushed over SSE. " * 200)
    up = json.loads(await asyncio.to_thread(curl, "-F", f"file=@{doc}", f"{web.url}/upload"))
    assert set(up) >= {"task_id", "status"}
    task_id = up["task_id"]

    raw = await asyncio.to_thread(curl, "-N", f"{web.url}/tasks/{task_id}/stream")
    blocks = [b for b in raw.split("\n\n") if b.strip() and not b.startswith(":")]
    datas = []
    for block in blocks:
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        assert "event" not in fields  # unnamed events
        assert fields["id"].isdigit()
        datas.append(json.loads(fields["data"]))
    assert all({"task_id", "status", "progress", "result"} <= set(d) for d in datas)
    assert datas[-1]["status"] == "completed"
    assert datas[-1]["result"]["word_count"] == 1200

    status = json.loads(await asyncio.to_thread(curl, f"{web.url}/tasks/{task_id}"))
    assert {"task_id", "status", "progress", "result", "error"} <= set(status)
    assert status["status"] == "completed" and status["progress"] == 100
