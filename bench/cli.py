"""``python -m bench [--quick | --full | --tiny] [--scenario NAME ...]``

Runs the scenarios against a fresh database and Redis namespace, prints a table of medians
over the rounds with ratios against the baselines measured in the same run, and writes every
round's raw figures to ``bench/results/<timestamp>-<mode>.json``. The exit status is 1 when a
correctness check failed (a task not done, an event not received) — never because of a
timing target.
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from bench import (
    batches,
    celery_env,
    ends,
    limits,
    llm,
    search,
    streams,
    tasks,
    tokens,
    tutorial,
)
from bench.common import SIZES, Outcome, Row, Run
from bench.env import RESULTS_DIR, make_env, raise_fd_limit
from bench.net import set_token

SCENARIOS: dict[str, Callable[[Run], Awaitable[Outcome]]] = {
    "throughput": tasks.throughput,
    "events": tasks.events,
    "latency": streams.latency,
    "capacity": streams.capacity,
    "ends": ends.ends,
    "waiting": streams.waiting,
    "submission": tasks.submission,
    "scaleout": tasks.scaleout,
    "tutorial": tutorial.tutorial,
    "limits": limits.limits,
    "tokens": tokens.tokens,
    "batches": batches.batches,
    "search": search.search,
    "summaries": llm.summaries,
}
#: Not in ``--tiny`` unless asked for (it runs a whole second stack: too slow for a smoke run).
NOT_TINY = {"tutorial"}
#: Need Celery's venv: skipped by ``--no-celery`` unless asked for.
NEEDS_CELERY = {"tutorial"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="a few minutes (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="bigger sizes, more rounds (under 20 minutes)")
    mode.add_argument("--tiny", dest="mode", action="store_const", const="tiny",
                      help="smoke sizes, one round (the test suite)")
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                    help="run only this scenario (repeatable)")
    ap.add_argument("--rounds", type=int, help="override the mode's number of rounds")
    ap.add_argument("--token-clients", type=int,
                    help="tokens scenario: SSE clients (default: the mode's, 1,000 in --quick)")
    ap.add_argument("--token-runs", type=int, help="tokens scenario: concurrent runs")
    ap.add_argument("--no-celery", action="store_true",
                    help="skip the Celery peer (no venv is created)")
    ap.add_argument("--database-url", default=os.environ.get("BENCH_ADMIN_DATABASE_URL"),
                    help="an admin PostgreSQL URL (default: the project's dev services)")
    ap.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL"))
    ap.add_argument("--out", type=Path, help="where to write the JSON results")
    ns = ap.parse_args(argv)
    ns.mode = ns.mode or "quick"
    return ns


def product_dependencies() -> list[str]:
    """The distributions the product itself declares (not an extra's, not the bench's): the
    versions that the figures were measured with."""
    names = []
    for req in metadata.requires("taskstream") or []:
        if "extra ==" in req:
            continue
        names.append(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0])
    return sorted(set(names))


async def meta(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "-"

    cpu = _cpu_model()
    conn = await asyncpg.connect(run.env.database_url)
    try:
        pg = await conn.fetchval("SHOW server_version")
        sync = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    r = Redis.from_url(run.env.redis_url)
    try:
        redis_version = (await r.info("server"))["redis_version"]
    finally:
        await r.aclose()
    versions = {p: version(p) for p in product_dependencies()}
    versions["postgresql"] = f"{pg} (synchronous_commit={sync})"
    versions["redis-server"] = redis_version
    versions["python"] = platform.python_version()
    if not args.no_celery:
        with contextlib.suppress(Exception):
            versions.update(celery_env.versions())
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "mode": run.mode,
        "sizes": asdict(run.sizes),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
                    "cpu_reference_ms_start": round(cpu_reference_ms(), 1),
                    "memory_gb": round(os.sysconf("SC_PAGE_SIZE")
                                       * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
        "versions": versions,
    }


#: The reference loop's size: 0.15-0.2 s of one core on this sandbox.
REFERENCE_LOOP = 3_000_000


def cpu_reference_ms(repeat: int = 3) -> float:
    """CPU milliseconds of a fixed pure-Python loop, the median of ``repeat``: how fast this
    (shared, noisy) machine runs Python right now. A loop like it moved 1.8x within a minute
    here; absolute-time figures of a run are read against it."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        x = 0
        for i in range(REFERENCE_LOOP):
            x += i * i
        times.append((time.process_time() - t0) * 1000)
    return statistics.median(times)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "" and x <= 1:
        return f"{x:.0%}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(rows: list[Row]) -> str:
    head = ["scenario", "metric", "taskstream", "baseline", "baseline value", "ratio",
            "target", "met"]
    body = [[r.scenario, r.metric, f"{fmt(r.value, r.unit)} {r.unit}".strip(), r.baseline,
             f"{fmt(r.baseline_value, r.unit)} {r.unit}".strip() if r.baseline else "",
             f"{r.ratio:.2f}x" if r.ratio is not None else "", r.target,
             {True: "yes", False: "NO", None: ""}[r.met]] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(b, widths, strict=True)) + " |"
              for b in body]
    return "\n".join(lines)


async def amain(args: argparse.Namespace) -> int:
    fds = raise_fd_limit()
    sizes = SIZES[args.mode]
    if args.rounds:
        from dataclasses import replace

        sizes = replace(sizes, rounds=args.rounds, stream_rounds=min(args.rounds,
                                                                       sizes.stream_rounds))
    if args.token_clients or args.token_runs:
        from dataclasses import replace

        sizes = replace(sizes, token_clients=args.token_clients or sizes.token_clients,
                        token_runs=args.token_runs or sizes.token_runs)
    env = await make_env(args.database_url, args.redis_url)
    set_token(env.token)
    run = Run(env=env, sizes=sizes, mode=args.mode, celery=not args.no_celery)
    names = args.scenario or [
        n for n in SCENARIOS if not (args.mode == "tiny" and n in NOT_TINY)
        and not (args.no_celery and n in NEEDS_CELERY)]
    results: dict[str, Any] = {}
    rows: list[Row] = []
    failed: list[str] = []
    try:
        info = await meta(run, args)
        info["fd_limit"] = fds
        run.log(f"bench {args.mode}: database {env.db_name}, namespace {env.namespace}, "
                f"scenarios {', '.join(names)}")
        for name in names:
            t0 = time.perf_counter()
            try:
                out = await SCENARIOS[name](run)
            except Exception as exc:  # report and go on with the other scenarios
                run.log(f"scenario {name} failed: {exc!r}")
                out = Outcome()
                out.check(f"{name}: ran to the end", False)
                out.notes.append(repr(exc))
            out.notes.append(f"took {time.perf_counter() - t0:.0f}s")
            results[name] = out.to_json()
            rows += out.rows
            failed += [f"{name}: {k}" for k, ok in out.checks.items() if not ok]
    finally:
        await env.destroy()
    info["machine"]["cpu_reference_ms_end"] = round(cpu_reference_ms(), 1)
    report = {"meta": info, "results": results, "failed_checks": failed,
              "table": [asdict(r) for r in rows]}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = args.out or RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.mode}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print()
    print(f"Taskstream bench ({args.mode}), {info['date']}; {info['machine']['cpus']} cpus "
          f"{info['machine']['cpu']}; medians of {sizes.rounds} rounds "
          f"({sizes.stream_rounds} for many-stream scenarios)")
    m = info["machine"]
    print(f"CPU reference loop (lower is faster): {m['cpu_reference_ms_start']:.0f} ms at the "
          f"start, {m['cpu_reference_ms_end']:.0f} ms at the end")
    print(table(rows))
    print()
    for k, v in info["versions"].items():
        print(f"  {k}: {v}")
    print(f"raw results: {path}")
    if failed:
        print("FAILED CHECKS:\n  " + "\n  ".join(failed))
        return 1
    print("all correctness checks passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(amain(args))
    return uvloop.run(amain(args))
