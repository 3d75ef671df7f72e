"""A deploy as Heroku's Python buildpack does it, end to end: a fresh virtualenv that installs
``requirements.txt`` (the lock, with hashes) and nothing else, the app run from its source
folder, the Procfile's ``release``, ``web`` and ``worker`` lines started with a Heroku-style
``DATABASE_URL=postgres://…`` and ``REDIS_URL=rediss://…`` pointing at a Redis that speaks
only TLS with a self-signed certificate (as hosted Redis does). A task runs to completion
over SSE, and the web process stops within the platform's 30 s after SIGTERM, with no task
lost."""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from taskstream.devservices.processes import ROOT, Proc, free_port
from taskstream.devservices.scratch import create_database, drop_database
from tests.conftest import eventually
from tests.sse import messages, payload

PLATFORM_STOP_SECONDS = 30  # Heroku: SIGTERM, then SIGKILL 30 s later


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server listening only on TLS, with a fresh self-signed certificate."""
    server = shutil.which("redis-server")
    openssl = shutil.which("openssl")
    if server is None or openssl is None:
        pytest.skip("needs redis-server and openssl")
    d = tmp_path_factory.mktemp("tls-redis")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem")], check=True, capture_output=True)
    port = free_port()
    log = d / "redis.log"
    proc = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(d / "cert.pem"), "--tls-key-file", str(d / "key.pem"),
         "--tls-ca-cert-file", str(d / "cert.pem"), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(d), "--logfile", str(log)],
        start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while "Ready to accept connections" not in (log.read_text() if log.exists() else ""):
            if proc.poll() is not None:
                pytest.skip(f"this redis-server has no TLS: {log.read_text()[-300:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"TLS redis did not start: {log.read_text()[-500:]}")
            time.sleep(0.05)
        yield f"rediss://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def buildpack_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the buildpack makes: a virtualenv with exactly the lock's pins."""
    venv = tmp_path_factory.mktemp("buildpack") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", "--require-hashes", "-r",
         str(ROOT / "requirements.txt")],
        capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def database(backing: tuple[str, str]) -> Iterator[str]:
    """An empty database (the release phase migrates it), as a Heroku ``postgres://`` URL."""
    admin = backing[0]
    name = f"ts_deploy_{uuid.uuid4().hex[:8]}"
    url = asyncio.run(create_database(admin, name, migrated=False))
    yield "postgres://" + url.split("://", 1)[1]
    asyncio.run(drop_database(admin, name))


def _env(venv: Path, database_url: str, redis_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TASKSTREAM_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
               DATABASE_URL=database_url, REDIS_URL=redis_url, PORT=str(port),
               TASKSTREAM_AUTH="true", TASKSTREAM_SIGNING_KEY=uuid.uuid4().hex,
               TASKSTREAM_NAMESPACE=f"deploy{port}", LOG_LEVEL="WARNING")
    return env


def _start(line: str, env: dict[str, str], log: Path) -> Proc:
    # `exec`: the platform's SIGTERM reaches the process itself
    return Proc(["bash", "-c", f"exec {line}"], env, log).start()


# The buildpack install (the fixture) alone takes 1-2 minutes: the lock now carries the
# embedding model's wheel (wordllama, ~19 MB) and numpy/tokenizers.
@pytest.mark.timeout(900)
async def test_a_buildpack_deploy_runs_a_task_and_stops_cleanly(
        buildpack_venv: Path, database: str, tls_redis: str, tmp_path: Path) -> None:
    procfile = _procfile()
    assert {"release", "web", "worker"} <= set(procfile)
    port = free_port()
    env = _env(buildpack_venv, database, tls_redis, port)

    release = subprocess.run(["bash", "-c", procfile["release"]], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert release.returncode == 0, release.stdout + release.stderr
    key = subprocess.run(["bash", "-c", "python -m taskstream.core.keys create --tenant app"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    headers = {"Authorization": f"Bearer {key.stdout.strip()}"}

    web = _start(procfile["web"], env, tmp_path / "web.log")
    worker = _start(procfile["worker"], env, tmp_path / "worker.log")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers,
                                     timeout=30) as c:
            async def ready() -> bool:
                try:
                    return bool((await c.get("/health")).json()["hub_connected"])
                except httpx.HTTPError:
                    assert web.alive, web.tail()
                    return False

            await eventually(ready, timeout=60)
            assert (await c.get("/tasks")).status_code == 200
            assert (await c.get("/tasks", headers={"Authorization": ""})).status_code == 401

            # A task, followed over SSE to its end.
            r = await c.post("/tasks", json={"type": "demo",
                                             "params": {"duration": 1, "steps": 4}})
            assert r.status_code == 202, r.text
            tid = r.json()["task_id"]
            seen = []
            async with c.stream("GET", f"/tasks/{tid}/stream") as s:
                assert s.status_code == 200
                async for m in messages(s):
                    seen.append(payload(m))
            assert seen[-1]["status"] == "completed", seen
            assert [e["progress"] for e in seen if e["type"] == "progress"] == \
                [25.0, 50.0, 75.0, 100.0]

            # SIGTERM while a task runs and a stream is open: the web process ends fast;
            # the task, run by the worker, is not lost.
            r = await c.post("/tasks", json={"type": "demo",
                                             "params": {"duration": 4, "steps": 8}})
            tid = r.json()["task_id"]
            async with c.stream("GET", f"/tasks/{tid}/stream") as s:
                first = await anext(messages(s))
                assert payload(first)["task_id"] == tid
                sent = time.monotonic()
                web.send_signal(signal.SIGTERM)
                assert web.p is not None
                await asyncio.to_thread(web.p.wait, PLATFORM_STOP_SECONDS)
                stopped_in = time.monotonic() - sent
        assert stopped_in < PLATFORM_STOP_SECONDS, stopped_in
        # uvicorn ends a graceful shutdown by re-raising the signal it got
        assert web.returncode in (0, -signal.SIGTERM), web.tail()
        assert "Application shutdown complete" in (tmp_path / "web.log").read_text()

        conn = await asyncpg.connect(database.replace("postgres://", "postgresql://", 1))
        try:
            async def done() -> str | None:
                status = await conn.fetchval(
                    "SELECT status FROM tasks WHERE task_id = $1", uuid.UUID(tid))
                return status if status in ("completed", "failed", "cancelled") else None

            assert await eventually(done, timeout=60) == "completed"
        finally:
            await conn.close()
    finally:
        web.stop(timeout=30)
        worker.stop(timeout=30)


def test_app_json_describes_the_procfile_deploy() -> None:
    """app.json (review apps, the deploy button) runs what the Procfile runs, with the
    add-ons the service needs and the settings a deploy must choose."""
    import json

    app = json.loads((ROOT / "app.json").read_text())
    procfile = _procfile()
    assert set(app["formation"]) == set(procfile) - {"release"}  # release runs by itself
    plans = [a["plan"].split(":")[0] for a in app["addons"]]
    assert {"heroku-postgresql", "heroku-redis"} <= set(plans)
    env = app["env"]
    assert env["TASKSTREAM_AUTH"]["value"] == "true"
    assert env["TASKSTREAM_SIGNING_KEY"]["generator"] == "secret"
    from taskstream.core.settings import Settings

    for name in env:  # every variable it sets is one the service reads
        field = name.removeprefix("TASKSTREAM_").lower()
        assert field in Settings.model_fields, name
