"""The Celery peer: ``python -m bench.celery_peer`` from Celery's own venv (``bench.celery_env``).

Imports only the standard library, celery and redis. Environment: BENCH_CELERY_BROKER (a
Redis URL with the baselines' DB index), BENCH_CELERY_PREFIX (this run's key prefix),
BENCH_CELERY_WORKERS, BENCH_CELERY_POOL, BENCH_CELERY_CONCURRENCY. It starts the workers, then
reads commands on stdin — ``run N`` enqueues N no-op tasks with ``delay()`` and prints a JSON
line once the workers have run them all; ``quit`` stops the workers.
"""

import json
import os
import signal
import subprocess
import sys
import time

from celery import Celery  # type: ignore[import-not-found, unused-ignore]
from redis import Redis

BROKER = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:56379/12")
PREFIX = os.environ.get("BENCH_CELERY_PREFIX", "bench:celery")
QUEUE = f"{PREFIX}:q"

app = Celery("bench_celery_peer", broker=BROKER)
app.conf.update(task_ignore_result=True, task_default_queue=QUEUE, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True, worker_send_task_events=False,
                task_serializer="json", accept_content=["json"])


@app.task(name="noop")  # type: ignore[untyped-decorator, unused-ignore]
def noop() -> None:
    """The same work as the others: nothing, then count the job as done."""
    _redis().incr(f"{PREFIX}:done")


_client: Redis | None = None


def _count(key: str) -> int:
    return int(_redis().get(key) or 0)  # type: ignore[arg-type, unused-ignore]


def _redis() -> Redis:
    global _client
    if _client is None:
        _client = Redis.from_url(BROKER)
    return _client


def main() -> None:
    workers = int(os.environ.get("BENCH_CELERY_WORKERS", "1"))
    pool = os.environ.get("BENCH_CELERY_POOL", "threads")
    concurrency = os.environ.get("BENCH_CELERY_CONCURRENCY", "50")
    r = _redis()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench.celery_peer", "worker",
             f"--pool={pool}", f"--concurrency={concurrency}", "--loglevel=WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", f"w{i}.{PREFIX}@%h", "-Q", QUEUE],
            stdout=sys.stderr, start_new_session=True)
        for i in range(workers)
    ]
    try:
        # Ready when a probe job per worker has been run.
        r.set(f"{PREFIX}:done", 0)
        deadline = time.monotonic() + 60
        for _ in range(workers * 4):
            noop.delay()
        while _count(f"{PREFIX}:done") < workers * 4:
            if time.monotonic() > deadline:
                raise SystemExit("celery workers did not start")
            time.sleep(0.05)
        time.sleep(1.0)  # let every worker finish starting
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            n = int(cmd[1])
            r.set(f"{PREFIX}:done", 0)
            t0 = time.perf_counter()
            for _ in range(n):
                noop.delay()
            t_enq = time.perf_counter() - t0
            while _count(f"{PREFIX}:done") < n:
                time.sleep(0.005)
            print(json.dumps({"seconds": time.perf_counter() - t0, "enqueue_seconds": t_enq,
                              "done": _count(f"{PREFIX}:done")}), flush=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for key in r.scan_iter(match=f"{PREFIX}*", count=1000):
            r.delete(key)
        # kombu's bookkeeping keys for our queue
        for key in ("unacked", "unacked_index", "_kombu.binding.celery",
                    f"_kombu.binding.{QUEUE}"):
            if key.startswith("_kombu.binding." + QUEUE):
                r.delete(key)


if __name__ == "__main__":
    main()
