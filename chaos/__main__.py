"""``python -m chaos``: see the package docstring (``python -m chaos --help``)."""

import argparse
import asyncio
import sys
from pathlib import Path

import chaos
from chaos.run import ChaosConfig, run_chaos


def main(argv: list[str] | None = None) -> int:
    defaults = ChaosConfig()
    ap = argparse.ArgumentParser(
        prog="python -m chaos", description=chaos.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=defaults.tasks, help="tasks to submit")
    ap.add_argument("--workers", type=int, default=defaults.workers, help="worker processes")
    ap.add_argument("--webs", type=int, default=defaults.webs, help="web processes")
    ap.add_argument("--duration", type=float, default=defaults.duration,
                    help="seconds of chaos (submissions fill the first 85%%)")
    ap.add_argument("--seed", type=int, default=defaults.seed,
                    help="seeds the task mix and the fault schedule")
    ap.add_argument("--followers", type=int, default=defaults.task_followers,
                    help="SSE clients on task streams (plus 4 on the tenant stream)")
    ap.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout,
                    help="seconds to wait, after the chaos, for every task to end")
    ap.add_argument("--batches", type=int, default=defaults.batches,
                    help="POST /batches during the window")
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size,
                    help="children per batch")
    ap.add_argument("--dir", type=Path, default=None, help="data dir and logs (kept)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    a = ap.parse_args(argv)
    cfg = ChaosConfig(tasks=a.tasks, workers=a.workers, webs=a.webs, duration=a.duration,
                      seed=a.seed, task_followers=a.followers, drain_timeout=a.drain_timeout,
                      batches=a.batches, batch_size=a.batch_size,
                      root=a.dir, keep=a.keep)
    result = asyncio.run(run_chaos(cfg, say=lambda s: print(s, flush=True)))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
