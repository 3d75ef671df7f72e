"""The chaos run's private deployment, and the faults it can suffer.

Its own PostgreSQL and Redis (``devservices`` in a temporary data dir, on free ports: never
the shared 55432/56379 nor the system's 5432/6379), a migrated database, web processes and
worker processes started as the Procfile starts them, with the fast recovery timings of
``devservices.processes.TEST_TIMINGS``. Blocking steps (pg_ctl, waiting for a web server)
run in threads so the run's clients keep going while a fault is being injected.
"""

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from taskstream import devservices
from taskstream.devservices.llmserver import LLMServer
from taskstream.devservices.processes import Proc, WebServer, WorkerProc, fast_env, free_port
from taskstream.devservices.scratch import create_database

#: What the model server does wrong, per request, all run long: rate limits (Retry-After),
#: server errors, streams cut before or after their first token, slow first tokens.
MODEL_FAULTS: dict[str, object] = {
    "rates": {"429": 0.04, "503": 0.04, "cut": 0.03, "cut_early": 0.03, "slow_first": 0.05},
    "retry_after": 0.2, "slow_first_seconds": 0.5, "token_delay": 0.01}


@dataclass(slots=True)
class Fault:
    """One injected fault, in wall-clock seconds (comparable with PostgreSQL's now())."""

    kind: str
    started: float
    ended: float
    detail: str = ""


@dataclass(slots=True)
class WorkerLife:
    """One process life of a worker slot: its pid and how it ended."""

    slot: int
    pid: int
    started: float
    ended: float | None = None
    how: str = ""  # killed | died (exit N) | stopped


@dataclass
class Deployment:
    root: Path
    webs: int
    workers: int
    extra_env: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    database_url: str = ""
    web_procs: list[WebServer] = field(default_factory=list)
    worker_procs: list[WorkerProc] = field(default_factory=list)
    lives: list[WorkerLife] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    paused: set[int] = field(default_factory=set)  # worker slots under SIGSTOP
    down: set[int] = field(default_factory=set)  # worker slots killed, not yet restarted
    webs_down: set[int] = field(default_factory=set)  # web processes killed on purpose
    web_deaths: list[str] = field(default_factory=list)
    outages: int = 0  # Redis or PostgreSQL faults in progress
    last_outage_end: float = 0.0

    def __post_init__(self) -> None:
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        pg_port = free_port()
        redis_port = free_port()
        while redis_port == pg_port:
            redis_port = free_port()
        services = self.root / "services"
        self.pg = devservices.Postgres(services, pg_port)
        self.redis = devservices.Redis(services, redis_port)
        #: The model server the agent runs call; it misbehaves too (MODEL_FAULTS).
        self.llm = LLMServer(self.logs / "llmserver.log")

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.redis.start)
        await asyncio.to_thread(self.pg.start)
        self.database_url = await create_database(self.pg.url, "chaos")
        await asyncio.to_thread(self.llm.start)
        await asyncio.to_thread(self.llm.faults, **MODEL_FAULTS)
        self.env = fast_env(self.database_url, self.redis.url,
                            f"chaos{uuid.uuid4().hex[:6]}", TASKSTREAM_LLM_BASE_URL=self.llm.url,
                            TASKSTREAM_LLM_RETRY_BACKOFF="0.05", TASKSTREAM_LLM_READ_TIMEOUT="5",
                            **self.extra_env)
        self.web_procs = [WebServer(self.env, self.logs / f"web{i}.log") for i in range(self.webs)]
        await asyncio.gather(*(asyncio.to_thread(w.start) for w in self.web_procs))
        self.worker_procs = [WorkerProc(self.env, self.logs / f"worker{i}.log")
                             for i in range(self.workers)]
        for slot in range(self.workers):
            self._start_worker(slot)

    async def stop(self) -> list[str]:
        """Everything down: workers (SIGTERM, they are idle by now), web, Redis, PostgreSQL.
        Each step is tried whatever happened before; returns what went wrong."""
        errors: list[str] = []
        for slot in list(self.paused):
            self._signal(slot, signal.SIGCONT)
        self.paused.clear()
        steps: list[tuple[str, Callable[[], object]]] = [
            *((f"worker {i}", lambda w=w: w.stop(signal.SIGTERM, 10))
              for i, w in enumerate(self.worker_procs)),
            *((f"web {i}", w.stop) for i, w in enumerate(self.web_procs)),
            ("Redis", self.redis.stop), ("PostgreSQL", self._stop_pg),
            ("the model server", self.llm.stop)]
        for name, step in steps:
            try:
                await asyncio.to_thread(step)
            except Exception as exc:  # keep tearing down; report it
                errors.append(f"stopping {name}: {exc}")
        for slot in range(len(self.worker_procs)):
            self._end_life(slot, "stopped")
        return errors

    def _stop_pg(self) -> None:
        try:
            self.pg.stop("fast")
        except devservices.DevServiceError:
            master = self.pg.running()  # pg_ctl could not do it: signal the postmaster
            if master is None:
                raise
            os.kill(master.pid, signal.SIGINT)  # fast shutdown
            raise

    @property
    def urls(self) -> list[str]:
        return [w.url for w in self.web_procs]

    # -- workers ---------------------------------------------------------------------------
    def worker_pid(self, slot: int) -> int | None:
        proc = self.worker_procs[slot]
        return proc.pid if proc.alive else None

    def _start_worker(self, slot: int) -> None:
        proc = self.worker_procs[slot].start()
        self.lives.append(WorkerLife(slot, proc.pid, time.time()))

    def _end_life(self, slot: int, how: str) -> None:
        for life in reversed(self.lives):
            if life.slot == slot and life.ended is None:
                life.ended, life.how = time.time(), how
                return

    def _signal(self, slot: int, sig: int) -> None:
        pid = self.worker_pid(slot)
        if pid is not None:
            os.kill(pid, sig)

    async def kill_worker(self, slot: int, down_for: float) -> None:
        """SIGKILL a worker mid-task, then start a fresh process in its slot."""
        pid = self.worker_pid(slot)
        t0 = time.time()
        self.down.add(slot)
        try:
            await asyncio.to_thread(self.worker_procs[slot].kill)
            self._end_life(slot, "killed")
            await asyncio.sleep(down_for)
            self._start_worker(slot)
        finally:
            self.down.discard(slot)
        self.faults.append(Fault("kill worker", t0, time.time(), f"slot {slot} pid {pid}"))

    async def pause_worker(self, slot: int, paused_for: float) -> None:
        """SIGSTOP past its lease (its tasks are re-run elsewhere), then SIGCONT."""
        pid = self.worker_pid(slot)
        t0 = time.time()
        self.paused.add(slot)
        self._signal(slot, signal.SIGSTOP)
        try:
            await asyncio.sleep(paused_for)
        finally:
            self._signal(slot, signal.SIGCONT)
            self.paused.discard(slot)
        self.faults.append(Fault("pause worker", t0, time.time(),
                                 f"slot {slot} pid {pid}, SIGSTOP for {paused_for:.1f}s"))

    async def reap(self) -> list[str]:
        """Restart processes that exited without being told to; return what happened."""
        out: list[str] = []
        for slot, w in enumerate(self.worker_procs):
            if w.returncode is not None and slot not in self.down:
                self._end_life(slot, f"died (exit {w.returncode})")
                self._start_worker(slot)
        for i, web in enumerate(self.web_procs):
            if web.returncode is not None and i not in self.webs_down:
                msg = f"web {i} exited by itself (code {web.returncode}); restarted"
                self.web_deaths.append(msg)
                out.append(msg)
                await asyncio.to_thread(web.start)
        return out

    async def kill_web(self, i: int, down_for: float) -> None:
        """SIGKILL a web process (its streams cut mid-flight), then start it on its port."""
        web = self.web_procs[i]
        t0 = time.time()
        pid = web.pid
        self.webs_down.add(i)
        try:
            await asyncio.to_thread(web.kill)
            await asyncio.sleep(down_for)
            await asyncio.to_thread(web.start)
        finally:
            self.webs_down.discard(i)
        self.faults.append(Fault("kill web", t0, time.time(), f"web {i} pid {pid}"))

    # -- backing services --------------------------------------------------------------------
    def calm_since(self) -> float:
        """When the last Redis/PostgreSQL outage ended; +inf while one is under way."""
        return float("inf") if self.outages else self.last_outage_end

    async def restart_redis(self, down_for: float) -> None:
        t0 = time.time()
        self.outages += 1
        try:
            await asyncio.to_thread(self.redis.stop)
            await asyncio.sleep(down_for)
            await asyncio.to_thread(self.redis.start)
        finally:
            self.outages -= 1
            self.last_outage_end = time.time()
        self.faults.append(Fault("restart Redis", t0, time.time(),
                                 f"down {down_for:.1f}s; its data (the queue) is lost"))

    async def stop_postgres(self, mode: Literal["fast", "immediate"], down_for: float) -> None:
        t0 = time.time()
        self.outages += 1
        try:
            await asyncio.to_thread(self.pg.stop, mode)
            await asyncio.sleep(down_for)
            await asyncio.to_thread(self.pg.start)
        finally:
            self.outages -= 1
            self.last_outage_end = time.time()
        kind = "stop PostgreSQL" if mode == "fast" else "crash PostgreSQL"
        self.faults.append(Fault(kind, t0, time.time(),
                                 f"pg_ctl stop -m {mode}, down {time.time() - t0:.1f}s"))

    def log_files(self) -> list[Path]:
        procs: list[Proc] = [*self.web_procs, *self.worker_procs, self.llm]
        return [p.log for p in procs]
