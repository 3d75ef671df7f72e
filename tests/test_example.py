"""The example user package (examples/acme_tasks), installed as a user would (a copy, built by
pip into a directory of its own; the project's venv stays as it is), run by a real web
process and worker over the API: an HTTP call that the service retries, one that fails at
once, a CPU-bound task followed over SSE, and the typed client."""

import asyncio
import json
import lzma
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from tests.cluster import Cluster, drop_cluster, start_cluster
from tests.conftest import wait_terminal
from tests.sse import collect, payload

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "acme_tasks"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --target`` of a copy of the example: a directory for PYTHONPATH."""
    tmp = tmp_path_factory.mktemp("acme")
    src = shutil.copytree(EXAMPLE, tmp / "src",
                          ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "--target", str(site), str(src)],
                   check=True, capture_output=True, timeout=300)
    return site


class FlakyAPI(BaseHTTPRequestHandler):
    """``/flaky/<name>`` answers 503 to its first two requests, then JSON; anything else
    is a 404. Counts requests per path."""

    hits: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            n = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if not self.path.startswith("/flaky/"):
            self._send(404, {"error": "no such thing"})
        elif n <= 2:
            self._send(503, {"error": "try again"})
        else:
            self._send(200, {"path": self.path, "request": n})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
async def acme(backing: tuple[str, str], installed: Path,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """Web and worker as the example's Procfile runs them, the test server allowed."""
    cluster = await start_cluster(
        *backing, tmp_path_factory.mktemp("acme-logs"), workers=1,
        PYTHONPATH=str(installed), TASKSTREAM_TASKS="acme_tasks.tasks",
        ACME_FETCH_ALLOWED_HOSTS="127.0.0.1")
    yield cluster
    await drop_cluster(backing[0], cluster)


@pytest.fixture
async def client(acme: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=acme.web.url, timeout=30) as c:
        yield c


async def submit(client: httpx.AsyncClient, type_: str, params: dict[str, Any]) -> str:
    r = await client.post("/tasks", json={"type": type_, "params": params})
    assert r.status_code == 202, r.text
    task_id: str = r.json()["task_id"]
    return task_id


async def events(client: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.get(f"/tasks/{task_id}/events")).json()["items"]
    return items


def test_the_entry_point_alone_finds_the_example(installed: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from taskstream.discovery import load_tasks; "
                               "print(' '.join(sorted(load_tasks())))"],
        env={**os.environ, "PYTHONPATH": str(installed), "TASKSTREAM_TASKS": ""},
        capture_output=True, text=True, check=True, timeout=60)
    assert {"fetch", "compress", "demo"} <= set(out.stdout.split())


async def test_the_catalogue_publishes_the_example_types(client: httpx.AsyncClient) -> None:
    types = {t["type"]: t for t in (await client.get("/task-types")).json()}
    assert types["fetch"]["max_attempts"] == 4
    assert types["fetch"]["params_schema"]["required"] == ["url"]
    assert types["compress"]["soft_timeout"] == 300
    r = await client.post("/tasks", json={"type": "compress", "params": {"text": "x",
                                                                         "chunks": 0}})
    assert r.status_code == 422 and "chunks" in r.json()["detail"]


async def test_fetch_is_retried_until_the_api_answers(acme: Cluster, api: str,
                                                      installed: Path) -> None:
    """With the typed client, as the README shows it."""
    script = textwrap.dedent(f"""
        import asyncio, json
        from taskstream import AsyncClient
        from acme_tasks.tasks import FetchParams, fetch

        async def main() -> None:
            async with AsyncClient({acme.web.url!r}) as ts:
                task = await ts.submit(fetch, FetchParams(url={api + "/flaky/typed"!r}))
                result = await ts.wait(task, timeout=60)
                print(json.dumps({{"task_id": task.task_id, "result": result}}))

        asyncio.run(main())
    """)
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": str(installed)})
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    body = {"path": "/flaky/typed", "request": 3}
    assert answer["result"] == {"status": 200, "attempt": 3, "bytes": len(json.dumps(body)),
                                "data": body}
    assert FlakyAPI.hits["/flaky/typed"] == 3
    async with httpx.AsyncClient(base_url=acme.web.url) as c:
        retries = [e for e in await events(c, answer["task_id"]) if e["type"] == "retrying"]
    assert [e["data"]["reason"] for e in retries] == ["error", "error"]
    assert "TransientHTTPError: HTTP 503 from 127.0.0.1" in retries[0]["data"]["error"]


async def test_fetch_fails_at_once_on_a_404(client: httpx.AsyncClient, api: str) -> None:
    task_id = await submit(client, "fetch", {"url": api + "/missing"})
    done = await wait_terminal(client, task_id)
    assert done["status"] == "failed" and done["attempts"] == 1
    assert done["error"] == "PermanentError: HTTP 404 from 127.0.0.1; not retried"
    assert FlakyAPI.hits["/missing"] == 1
    assert "retrying" not in [e["type"] for e in await events(client, task_id)]


async def test_fetch_refuses_hosts_the_operator_did_not_allow(client: httpx.AsyncClient,
                                                              api: str) -> None:
    task_id = await submit(client, "fetch", {"url": api.replace("127.0.0.1", "localhost")})
    done = await wait_terminal(client, task_id)
    assert done["status"] == "failed" and done["attempts"] == 1
    assert "localhost resolves to a non-public address" in done["error"]


async def test_compress_reports_each_chunk_followed_over_sse(client: httpx.AsyncClient) -> None:
    params = {"text": "the quick brown fox ", "repeat": 50_000, "chunks": 5, "preset": 1}
    task_id = await submit(client, "compress", params)
    status, messages = await collect(client, f"/tasks/{task_id}/stream")
    assert status == 200
    snapshots = [payload(m) for m in messages if m.event == "message"]
    assert snapshots[-1]["status"] == "completed"
    progress = [s["progress"] for s in snapshots]
    assert progress == sorted(progress) and progress[-1] == 100
    assert [int(m.id) for m in messages if m.id] == sorted(int(m.id) for m in messages if m.id)

    data = b"the quick brown fox " * 50_000
    step = len(data) // 5
    packed = [lzma.compress(data[i * step:(i + 1) * step], preset=1) for i in range(5)]
    result = snapshots[-1]["result"]
    assert result["complete"] and result["chunks"] == 5 and result["bytes_in"] == len(data)
    assert result["bytes_out"] == sum(len(p) for p in packed)
    reported = [e["message"] for e in await events(client, task_id) if e["type"] == "progress"]
    assert reported == [f"chunk {i}/5: {step} -> {len(p)} bytes"
                        for i, p in enumerate(packed, 1)]
