"""The chaos run: does every task still reach exactly one end when things break?

From the repository root (``chaos`` and ``tests`` are not installed packages):

    .venv/bin/python -m chaos [--tasks 1000] [--workers 4] [--duration 90] [--seed 1]

It deploys Taskstream privately: its own PostgreSQL and Redis (devservices, free ports, a
temporary data dir; the shared 55432/56379 and the system's 5432/6379 are never touched), a
migrated database, 2 web processes and N worker processes with the fast recovery timings of
``devservices.processes.TEST_TIMINGS`` (lease 2 s, heartbeat and sweep 0.5 s). Then, for
``--duration`` seconds:

* it submits ``--tasks`` tasks of mixed kinds (``chaos.workload``: short and long ``demo``,
  ``demo`` that fails then succeeds on retry or exhausts its budget, ``noop`` bursts, hard
  timeouts, cancellations, tasks of durable steps, tasks that wait for a signal the run sends
  0.5-4 s after submitting them) with ``POST /tasks``, each with an Idempotency-Key, retrying a 503
  or 429 after its Retry-After and a connection error after a pause (a retry can never
  duplicate a task), and records every HTTP status it sees;
* it SIGKILLs a random busy worker every 2-5 s and restarts it; restarts Redis once (the
  queue is lost with it); stops PostgreSQL for 5 s once; crashes it once (``pg_ctl stop -m
  immediate``, then recovery); SIGSTOPs a busy worker past its lease once, then resumes it;
* it keeps 20 SSE clients (16 on task streams, 4 on the tenant stream ``/stream``) reading,
  dropping and resuming with Last-Event-ID (header or ``?last_event_id=``) throughout.

Then it waits (bounded) for every task to end and checks, against PostgreSQL and against
what the clients received:

1. every accepted task exists, once per Idempotency-Key, in a terminal status (none stuck);
2. each task has exactly one terminal event (completed/failed/cancelled), matching its status;
3. no write of a superseded attempt was accepted: after a ``requeued`` (worker_lost) or
   ``retrying`` or ``suspended`` event for attempt k, nothing of attempt k follows; attempts
   go up by one;
4. every task's seq is gap-free 1..last_seq and nothing follows its terminal event;
5. each task ended as its kind allows (a retried task completes, a dead one fails with
   ``error``, a completed one carries its result...);
6. no task failed as a poison pill (``worker_lost``) while one of its "lost" workers was alive;
7. every resuming client saw every event of its stream exactly once, in order, to the end
   (a task stream ends with its terminal event, then 204), and no live stream stalled;
8. no event reached a client that PostgreSQL lacks;
9. no HTTP 5xx other than 503, every 503/429 with Retry-After, no web process died.
10. a cron schedule firing every second through the window fired each slot exactly once
    and skipped none (its outages are shorter than the misfire grace).
11. no completed durable step ran again: each step's executions (a row per run, written by
    the step itself) come from attempts up to the one that recorded it, never later;
12. no wait resumed twice after one suspension (a signal resumes a run at most once).

It prints a summary (faults with their times, outcomes per kind, lease losses and how soon a
SIGKILLed task ran again, every HTTP status seen, stream statistics, the checks with their
violations, error counts from each process log) and exits 0 without a violation, 1 with any;
the data dir (process logs, ``chaos.json`` with everything the clients saw) is kept after a
failure, or always with ``--keep``. About two minutes with the defaults on two cores (the drain
adds up to ``--drain-timeout`` if tasks get stuck). ``tests/test_chaos.py`` runs the same code
small (``ChaosConfig.small()``: 60 tasks, 2 workers, one kill, one Redis restart, one short
PostgreSQL stop; about 30 s).
"""

from chaos.faults import FaultPlan
from chaos.run import ChaosConfig, Result, run_chaos

__all__ = ["ChaosConfig", "FaultPlan", "Result", "run_chaos"]
