"""Table growth per 1,000 tasks (README: Retention): ``python -m bench.growth [--tasks 1000]``.

A fresh database, one web and one worker process; it submits N ``demo`` tasks (10 progress
events each: 13 events per task with created, started, completed) and N/10 uploads of a
10 KB text file (each a ``document_process`` task), waits for all of them, runs VACUUM
ANALYZE, and prints the bytes each table (heap + indexes + TOAST) grew, per 1,000 tasks.
Then it prunes everything through the retention job and prints what is left.
"""

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from taskstream.core import store_ops
from taskstream.core.settings import Settings
from taskstream.devservices.processes import WebServer, WorkerProc, fast_env
from taskstream.devservices.scratch import create_database, drop_database
from worker import retention

TABLES = ["tasks", "task_events", "uploads", "upload_chunks", "document_chunks",
          "webhook_deliveries"]


async def main(n: int, admin_pg: str, redis_url: str) -> None:
    name = f"ts_growth_{uuid.uuid4().hex[:8]}"
    url = await create_database(admin_pg, name)
    logs = Path(tempfile.mkdtemp(prefix="ts-growth-"))
    env = fast_env(url, redis_url, f"g{uuid.uuid4().hex[:6]}")
    web = WebServer(env, logs / "web.log")
    worker = WorkerProc(env, logs / "worker.log").start()
    await asyncio.to_thread(web.start)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")
        before = await store_ops.table_bytes(conn, TABLES)
        text = ("The quick brown fox jumps over the lazy dog. " * 230)[:10_000].encode()
        async with httpx.AsyncClient(base_url=web.url, timeout=60) as c:
            ids: list[str] = []
            sem = asyncio.Semaphore(20)

            async def one(i: int) -> None:
                async with sem:
                    if i % 10 == 0:
                        r = await c.post("/upload", files={"file": (f"f{i}.txt", text,
                                                                    "text/plain")})
                    else:
                        r = await c.post("/tasks", json={"type": "demo", "params": {
                            "duration": 0, "steps": 10}})
                    r.raise_for_status()
                    ids.append(r.json()["task_id"])

            await asyncio.gather(*(one(i) for i in range(n)))
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                left = await conn.fetchval(
                    "SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')")
                if left == 0:
                    break
                await asyncio.sleep(1)
        await conn.execute("VACUUM ANALYZE")
        after = await store_ops.table_bytes(conn, TABLES)
        events = await conn.fetchval("SELECT count(*) FROM task_events")
        print(f"{n} tasks ({n // 10} of them uploads of 10 KB), {events} events")
        print("| table | bytes per 1,000 tasks |")
        print("|---|---|")
        for t in TABLES:
            print(f"| {t} | {(after[t] - before[t]) * 1000 // n:,} |")
        await store_ops.set_tenant_retention(conn, "public", 1e-9)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            t0 = time.monotonic()
            pruned = await retention.prune_once(pool, Settings(database_url=url))
            took = time.monotonic() - t0
        finally:
            await pool.close()
        rows = await conn.fetchval("SELECT count(*) FROM tasks")
        print(f"retention pass: {pruned} in {took:.2f}s; tasks left: {rows}")
    finally:
        await conn.close()
        web.stop()
        worker.stop()
        await drop_database(admin_pg, name)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:55432/postgres")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:56379/0")
    a = ap.parse_args()
    asyncio.run(main(a.tasks, a.database_url, a.redis_url))
