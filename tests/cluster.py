"""A private deployment for failure tests: its own database, Redis DB index and namespace,
one web process and N worker processes that a test may kill, pause or restart."""

import asyncio
import random
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from taskstream.devservices.processes import WebServer, WorkerProc, fast_env
from taskstream.devservices.scratch import create_database, drop_database, with_db


@dataclass
class Cluster:
    database_url: str
    redis_url: str
    env: dict[str, str]
    logs: Path
    web: WebServer
    workers: list[WorkerProc] = field(default_factory=list)

    def add_worker(self) -> WorkerProc:
        w = WorkerProc(self.env, self.logs / f"worker{len(self.workers)}.log")
        w.start()
        self.workers.append(w)
        return w

    def worker_by_pid(self, pid: int) -> WorkerProc:
        return next(w for w in self.workers if w.p is not None and w.pid == pid)

    def stop(self) -> None:
        for w in self.workers:
            w.send_signal(signal.SIGCONT)
            w.kill()
        self.web.stop()


async def start_cluster(admin_pg: str, redis_url: str, logs: Path, workers: int = 2,
                        **extra_env: str) -> Cluster:
    name = f"ts_cluster_{uuid.uuid4().hex[:10]}"
    db = await create_database(admin_pg, name)
    # arq's job keys are not namespaced: a Redis DB index of its own keeps them apart.
    redis = with_db(redis_url, str(random.randint(1, 15)))
    env = fast_env(db, redis, f"c{uuid.uuid4().hex[:8]}", **extra_env)
    logs.mkdir(parents=True, exist_ok=True)
    web = WebServer(env, logs / "web.log")
    await asyncio.to_thread(web.start)
    cluster = Cluster(db, redis, env, logs, web)
    for _ in range(workers):
        cluster.add_worker()
    return cluster


async def drop_cluster(admin_pg: str, cluster: Cluster) -> None:
    cluster.stop()
    await drop_database(admin_pg, cluster.database_url.rpartition("/")[2])
