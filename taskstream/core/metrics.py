"""Every Prometheus metric, defined once, and the ``/metrics`` page.

Several processes: prometheus-client's **multiprocess mode**. With ``PROMETHEUS_MULTIPROC_DIR``
set (before the process starts: prometheus-client reads it at import), every web and worker
process of a host writes its figures to small mmapped files there, and any web process's
``/metrics`` sums them all. Chosen over per-process endpoints because a worker has no HTTP
port on a Procfile platform (nothing to scrape) and one scrape target per host is what a
Prometheus config or a hosted agent expects. Without the variable, each process counts for
itself (a single-process deployment, the tests). A process killed with SIGKILL cannot clean
up its live gauges; ``reap_dead()`` (at web start-up and per scrape) forgets those of pids
that no longer exist. The directory must be emptied when the whole host restarts
(``scripts/run.sh`` does).

Hot paths stay cheap: the event log records one counter and one histogram per *batch* (not
per event); the runtime a handful per task.
"""

import os
import re
from pathlib import Path

# prometheus-client writes its files there from the first metric defined below on: a
# directory named but not yet made would fail the process at import.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

#: Lifecycle transitions by task type; ``event`` is one of TASK_EVENTS.
TASKS = Counter("taskstream_tasks", "Tasks by lifecycle event and type",
                ["event", "task_type"])
SUBMITTED, STARTED, COMPLETED, FAILED, RETRIED, CANCELLED = TASK_EVENTS = (
    "submitted", "started", "completed", "failed", "retried", "cancelled")

RUN_SECONDS = Histogram(
    "taskstream_task_run_seconds", "Run time of one attempt, start to its end", ["task_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
QUEUE_WAIT = Histogram(
    "taskstream_task_queue_wait_seconds", "Pending until started (per attempt)", ["task_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600))
EVENTS = Counter("taskstream_events_persisted", "Events made durable by the event log")
BATCH_SIZE = Histogram("taskstream_eventlog_batch_size", "Events per group commit",
                       buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000))
OPEN_STREAMS = Gauge("taskstream_open_streams", "SSE streams open now",
                     multiprocess_mode="livesum")
HUB_RECONNECTS = Counter("taskstream_hub_reconnects", "Pub/sub hub reconnections to Redis")
LEASE_EXPIRIES = Counter("taskstream_lease_expiries",
                         "Running tasks found with an expired lease (their worker lost)")
LEASE_RECOVERIES = Counter("taskstream_lease_recoveries",
                           "Tasks of a lost worker re-queued for another attempt")
WEBHOOK_DELIVERIES = Counter("taskstream_webhook_attempts",
                             "Webhook delivery attempts by outcome", ["outcome"])
PRUNED = Counter("taskstream_retention_pruned", "Rows removed by retention", ["what"])


_task_children: dict[tuple[str, str], Counter] = {}
_run_children: dict[str, tuple[Histogram, Histogram]] = {}


def task_event(event: str, task_type: str) -> None:
    """One lifecycle transition; the labelled child is looked up once per (event, type)
    (``labels()`` validates and locks on every call)."""
    child = _task_children.get((event, task_type))
    if child is None:
        child = _task_children[(event, task_type)] = TASKS.labels(event, task_type)
    child.inc()


def per_type(task_type: str) -> tuple[Histogram, Histogram]:
    """(run time, queue wait) histograms of a task type, looked up once."""
    pair = _run_children.get(task_type)
    if pair is None:
        pair = _run_children[task_type] = (RUN_SECONDS.labels(task_type),
                                           QUEUE_WAIT.labels(task_type))
    return pair


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


_PID_FILE = re.compile(r"_(\d+)\.db$")


def reap_dead() -> int:
    """Forget the live gauges of processes that died without cleaning up (SIGKILL)."""
    path = multiprocess_dir()
    if path is None:
        return 0
    reaped = 0
    for f in Path(path).glob("gauge_live*.db"):
        m = _PID_FILE.search(f.name)
        if m and not _alive(int(m.group(1))):
            multiprocess.mark_process_dead(int(m.group(1)), path)  # type: ignore[no-untyped-call]
            reaped += 1
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_exit() -> None:
    """A process's clean exit: its live gauges leave the sum."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def render() -> tuple[bytes, str]:
    """The exposition of this host's processes (multiprocess) or of this process."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    reap_dead()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
