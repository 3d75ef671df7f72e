"""The service through PgBouncer in transaction mode (Debian's ``pgbouncer``): migrations,
submissions, runs, streams, reads, webhooks' and retention's SQL, with server connections
shared between every client (pool of 4) — so any statement or session state that outlived
a transaction would fail here."""

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from taskstream.core import store_ops
from taskstream.core.constants import ANONYMOUS_OWNER
from taskstream.core.db import create_pool
from taskstream.core.migrate import migrate
from taskstream.devservices.processes import WebServer, WorkerProc, fast_env, free_port
from taskstream.devservices.scratch import create_database, drop_database
from tests.conftest import eventually, wait_terminal

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
pytestmark = [
    pytest.mark.skipif(not os.access(PGBOUNCER, os.X_OK),
                       reason="Debian's pgbouncer is not installed (apt-get install pgbouncer; "
                              "scripts/bootstrap.sh does as root)"),
    pytest.mark.timeout(120),
]


@pytest.fixture
def bouncer(backing: tuple[str, str]) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of the test PostgreSQL; yields its address."""
    pg = urlsplit(backing[0])
    root = Path(tempfile.mkdtemp(prefix="ts-pgbouncer-"))
    root.chmod(0o777)  # pgbouncer refuses root: it runs as nobody
    port = free_port()
    (root / "users.txt").write_text(f'"{pg.username}" ""\n')
    (root / "pgbouncer.ini").write_text(f"""[databases]
* = host={pg.hostname} port={pg.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {root}/users.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 500
logfile = {root}/pgbouncer.log
pidfile = {root}/pgbouncer.pid
""")
    user = [] if os.geteuid() else ["-u", "nobody"]
    proc = subprocess.Popen([PGBOUNCER, *user, str(root / "pgbouncer.ini")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


async def _wait_port(addr: str) -> None:
    host, port = addr.split(":")

    async def up() -> bool:
        try:
            _, w = await asyncio.open_connection(host, int(port))
        except OSError:
            return False
        w.close()
        return True

    await eventually(up, timeout=10)


async def test_the_service_runs_through_pgbouncer_in_transaction_mode(
        backing: tuple[str, str], bouncer: str, tmp_path: Path) -> None:
    admin_pg, redis_url = backing
    name = f"ts_bouncer_{uuid.uuid4().hex[:8]}"
    direct = await create_database(admin_pg, name, migrated=False)
    await _wait_port(bouncer)
    pg = urlsplit(direct)
    via = f"postgresql://{pg.username}@{bouncer}/{name}"
    try:
        # Two migrators at once through the bouncer: transaction-scoped locks take turns.
        first, second = await asyncio.gather(migrate(via, 0), migrate(via, 0))
        assert sorted(first + second) == sorted(set(first + second)) and first + second

        env = fast_env(via, redis_url, f"pb{uuid.uuid4().hex[:6]}",
                       TASKSTREAM_DB_STATEMENT_CACHE_SIZE="0", TASKSTREAM_DB_POOL_MAX="6",
                       TASKSTREAM_DB_ENGINE_POOL_SIZE="3")
        web = WebServer(env, tmp_path / "web.log")
        worker = WorkerProc(env, tmp_path / "worker.log").start()
        await asyncio.to_thread(web.start)
        try:
            async with httpx.AsyncClient(base_url=web.url, timeout=30) as c:
                ids = await asyncio.gather(*(
                    c.post("/tasks", json={"type": "noop", "params": {"events": 20}})
                    for _ in range(30)))
                demo = (await c.post("/tasks", json={"type": "demo", "params": {
                    "duration": 1, "steps": 5}})).json()["task_id"]
                async with c.stream("GET", f"/tasks/{demo}/stream") as resp:
                    statuses = [ln async for ln in resp.aiter_lines()
                                if ln.startswith("data:")]
                assert '"completed"' in statuses[-1]
                for r in ids:
                    t = await wait_terminal(c, r.json()["task_id"])
                    assert t["status"] == "completed", t
                page = (await c.get("/tasks", params={"limit": 100})).json()["items"]
                assert len(page) == 31  # the SQLModel read side, through the bouncer too
                events = (await c.get(f"/tasks/{demo}/events")).json()["items"]
                assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
                assert (await c.get("/readyz")).status_code == 200
                assert (await c.delete(f"/tasks/{demo}")).status_code == 204
        finally:
            web.stop()
            worker.stop()
        pool = await create_pool(via, min_size=1, max_size=2, statement_cache_size=0)
        try:
            await store_ops.set_tenant_retention(pool, ANONYMOUS_OWNER, 1e-9)
            assert await store_ops.prune_tasks(pool, 0, 10) == 10
        finally:
            await pool.close()
    finally:
        await drop_database(admin_pg, name)
