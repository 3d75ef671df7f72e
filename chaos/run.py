"""One chaos run, start to verdict: deploy, load, break things, drain, check, report."""

import asyncio
import contextlib
import json
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import asyncpg

from chaos import batches, cron, ops
from chaos.api import Api
from chaos.checks import Check, check_all
from chaos.deployment import Deployment
from chaos.faults import Chaos, FaultPlan, Sampler
from chaos.followers import Followers, Probe
from chaos.leases import losses
from chaos.report import render
from chaos.snapshot import snapshot
from chaos.tasktypes import STEP_RUNS_DDL
from chaos.workload import TaskSpec, make_specs, submit_all
from taskstream.core.constants import ANONYMOUS_OWNER
from taskstream.core.db import create_pool


@dataclass
class ChaosConfig:
    tasks: int = 1000
    workers: int = 4
    webs: int = 2
    duration: float = 90.0  # the chaos window; submissions fill its first submit_share
    seed: int = 1
    task_followers: int = 16
    tenant_followers: int = 4
    patient_every: int = 4  # every n-th follower never hangs up by itself
    submit_share: float = 0.85
    batches: int = 8  # POST /batches during the window, each of batch_size children
    batch_size: int = 50
    drain_timeout: float = 120.0  # after the window, for every task to reach its end
    plan: FaultPlan = field(default_factory=FaultPlan)
    root: Path | None = None  # data dir and logs; a fresh temp dir by default
    keep: bool = False  # keep the data dir even when the run passes

    @classmethod
    def small(cls, **overrides: object) -> "ChaosConfig":
        """The test-suite version: 60 tasks, 2 workers, one kill, one Redis restart, one
        short PostgreSQL stop; about 25 s end to end."""
        plan = FaultPlan(kill_every=(1.0, 1.0), max_kills=1, kill_from=0.25,
                         redis_restart_at=0.45, redis_down=1.0, pg_stop_at=0.65, pg_down=2.0,
                         pg_crash_at=None, pause_at=None)
        base = cls(tasks=60, workers=2, webs=1, duration=16.0, task_followers=6, batches=3,
                   batch_size=10,
                   tenant_followers=2, patient_every=3, submit_share=0.8, drain_timeout=30.0,
                   plan=plan)
        return replace(base, **overrides)  # type: ignore[arg-type]


@dataclass
class Result:
    checks: list[Check]
    summary: str
    root: Path

    @property
    def violations(self) -> int:
        return sum(len(c.violations) for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.violations == 0


async def run_chaos(cfg: ChaosConfig, say: Callable[[str], None] = print) -> Result:
    rng = random.Random(cfg.seed)  # noqa: S311 - a reproducible schedule
    root = cfg.root or Path(tempfile.mkdtemp(prefix="taskstream-chaos-"))
    prom = root / "prometheus"
    prom.mkdir(parents=True, exist_ok=True)
    dep = Deployment(root, cfg.webs, cfg.workers,
                     extra_env={"TASKSTREAM_STREAM_KEEPALIVE": "2",
                                "TASKSTREAM_TASKS": "chaos.tasktypes",
                                "PROMETHEUS_MULTIPROC_DIR": str(prom), **ops.ENV})
    t0 = time.time()
    result: Result | None = None
    try:
        say(f"chaos: starting PostgreSQL :{dep.pg.port}, Redis :{dep.redis.port}, "
            f"{cfg.webs} web, {cfg.workers} workers in {root}")
        await dep.start()
        pool = await create_pool(dep.database_url, min_size=0, max_size=4)
        await pool.execute(STEP_RUNS_DDL)
        api = Api(dep.urls, rng)
        try:
            # A hard bound on the whole run, whatever hangs: the window, the drain, the
            # followers' wind-down and the checks.
            async with asyncio.timeout(cfg.duration + cfg.drain_timeout + 180):
                result = await _run(cfg, rng, dep, pool, api, say, t0)
        finally:
            await api.aclose()
            await pool.close()
    finally:
        for problem in await dep.stop():
            say(f"chaos: teardown: {problem}")
        if result is not None and result.ok and not cfg.keep and cfg.root is None:
            shutil.rmtree(root, ignore_errors=True)
    assert result is not None
    return result


async def _run(cfg: ChaosConfig, rng: random.Random, dep: Deployment, pool: asyncpg.Pool,
               api: Api, say: Callable[[str], None], t0: float) -> Result:
    specs = make_specs(cfg.tasks, rng)
    batch_specs = batches.make_batches(cfg.batches, cfg.batch_size, rng)
    hooks = ops.Ops()
    await hooks.start(api, pool)
    sampler = Sampler(pool)
    chaos = Chaos(dep, cfg.plan, sampler, rng)
    fol = Followers(api, rng, calm_since=dep.calm_since)
    final_tenant_seq: list[int] = []
    background = [asyncio.create_task(sampler.run())]

    def task_probe(task_id: str) -> Probe:
        async def probe(cursor: int) -> tuple[int, float | None]:
            last = await pool.fetchval("SELECT last_seq FROM tasks WHERE task_id = $1::uuid",
                                       task_id)
            at = await pool.fetchval(
                """SELECT extract(epoch FROM created_at)::float8 FROM task_events
                   WHERE task_id = $1::uuid AND seq = $2""", task_id, cursor + 1)
            return int(last or 0), at
        return probe

    async def tenant_probe(cursor: int) -> tuple[int, float | None]:
        # The followed tenant only (the retention check seeds another one).
        last = await pool.fetchval(
            "SELECT coalesce(max(last_seq), 0) FROM tenants WHERE owner = $1", ANONYMOUS_OWNER)
        at = await pool.fetchval(
            """SELECT extract(epoch FROM created_at)::float8 FROM task_events
               WHERE owner = $2 AND tenant_seq > $1 ORDER BY tenant_seq LIMIT 1""", cursor,
            ANONYMOUS_OWNER)
        return int(last), at

    followers = [asyncio.create_task(fol.task_follower(i % cfg.patient_every == 0, task_probe))
                 for i in range(cfg.task_followers)]
    followers += [asyncio.create_task(fol.tenant_follower(
        i % cfg.patient_every == 0, tenant_probe,
        lambda: final_tenant_seq[0] if final_tenant_seq else None))
        for i in range(cfg.tenant_followers)]

    def accepted(spec: TaskSpec) -> None:
        assert spec.task_id is not None
        fol.accepted(spec.task_id)

    try:
        say(f"chaos: {cfg.tasks} tasks over {cfg.duration * cfg.submit_share:.0f}s, "
            f"faults for {cfg.duration:.0f}s (seed {cfg.seed})")
        schedule_id = await cron.start(api)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(submit_all(api, specs, cfg.duration * cfg.submit_share,
                                      on_accept=accepted))
            tg.create_task(chaos.run(cfg.duration))
            tg.create_task(batches.submit_batches(api, batch_specs,
                                                  cfg.duration * cfg.submit_share))
        fol.stop_picking.set()
        ids = [s.task_id for s in specs if s.task_id]
        ids += await batches.task_ids(pool, batch_specs)
        ids += await cron.stop(api, pool, schedule_id)
        say(f"chaos: window over at {time.time() - t0:.0f}s; waiting up to "
            f"{cfg.drain_timeout:.0f}s for {len(ids)} tasks to end")
        left = await _drain(pool, ids, cfg.drain_timeout)
        say(f"chaos: drained at {time.time() - t0:.0f}s ({left} not terminal)")
        final_tenant_seq.append(int(await pool.fetchval(
            "SELECT coalesce(max(tenant_seq), 0) FROM task_events WHERE owner = $1",
            ANONYMOUS_OWNER)))
        await hooks.settle(pool, 60)
        await hooks.scrape(dep.urls)
        _, pending = await asyncio.wait(followers, timeout=30)
        fol.hard_stop.set()
        if pending:
            await asyncio.wait(pending, timeout=20)
    finally:
        for t in [*followers, *background]:
            t.cancel()
        await asyncio.gather(*followers, *background, return_exceptions=True)
        await hooks.close()
    snap = await snapshot(pool)
    lost = losses(snap, dep.lives, sampler.owners, dep.faults)
    checks = check_all(snap, specs, fol.follows, lost) + await hooks.checks(snap, pool)
    checks.append(await batches.check_batches(pool, batch_specs))
    _dump(dep, specs, fol, chaos)
    title = (f"Taskstream chaos run ({_code_version()}): seed {cfg.seed}, {cfg.tasks} tasks, "
             f"{cfg.workers} workers, {cfg.webs} web, {cfg.duration:.0f}s window, "
             f"{time.time() - t0:.0f}s in all")
    summary = render(title=title, dep=dep, chaos=chaos, specs=specs, api=api,
                     follows=fol.follows, snap=snap, checks=checks, lost=lost, t0=t0)
    summary += "\n" + "\n".join(hooks.summary())
    result = Result(checks, summary, dep.root)
    verdict = "OK: no violations" if result.ok else f"FAILED: {result.violations} violations"
    say(summary + f"\n\nRESULT: {verdict}; logs and chaos.json in {dep.root}"
        + ("" if result.ok else " (kept)"))
    return result


def _code_version() -> str:
    """``git describe`` of the code under test (``-dirty`` with uncommitted changes)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=8"],  # noqa: S607
                             cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return "code version unknown"
    return f"code {out.stdout.strip()}"


def _dump(dep: Deployment, specs: list[TaskSpec], fol: Followers, chaos: Chaos) -> None:
    """Everything the run saw, for a post-mortem: ``<root>/chaos.json``."""
    doc = {
        "faults": [asdict(f) for f in dep.faults],
        "worker_lives": [asdict(w) for w in dep.lives],
        "notes": chaos.notes,
        "paused_attempts": chaos.paused_attempts,
        "attempt_owners": [[t, a, w] for (t, a), w in chaos.sampler.owners.items()],
        "tasks": [{"n": s.n, "kind": s.kind, "key": s.key, "body": s.body,
                   "task_id": s.task_id, "accepted_at": s.accepted_at, "replayed": s.replayed,
                   "refused": s.refused, "notes": s.notes} for s in specs],
        "follows": [{"kind": f.kind, "task_id": f.task_id, "patient": f.patient,
                     "connections": f.connections, "ended": f.ended, "problems": f.problems,
                     "stalls": f.stalls, "seen": [asdict(x) for x in f.seen]}
                    for f in fol.follows],
    }
    (dep.root / "chaos.json").write_text(json.dumps(doc))


async def _drain(pool: asyncpg.Pool, ids: list[str], patience: float) -> int:
    """Wait until every accepted task is terminal; returns how many are not."""
    deadline = time.monotonic() + patience
    left = len(ids)
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            left = int(await pool.fetchval(
                """SELECT count(*) FROM tasks WHERE task_id = ANY($1::uuid[])
                   AND status NOT IN ('completed', 'failed', 'cancelled')""", ids))
            if left == 0:
                return 0
        await asyncio.sleep(0.5)
    return left
