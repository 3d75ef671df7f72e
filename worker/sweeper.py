"""Heartbeats and the sweeper: how a task outlives the worker that was running it.

* Every worker renews, once per ``heartbeat_interval``, the lease of each task it runs (one
  UPDATE per worker, however many tasks). The same query tells it which of its tasks were
  asked to cancel, in case that pub/sub message was lost.
* Every worker also sweeps, once per ``sweep_interval`` (safe to run in all of them at once):
  a running task whose lease expired lost its worker — it is re-queued (a fresh attempt
  fences every late write of the old one) or, after ``max_crashes``, failed as
  ``worker_lost``; a pending task whose job is missing from the queue (a web process died
  between insert and enqueue, or Redis lost its data) is enqueued again under its
  deterministic job id, so two sweepers cannot enqueue it twice — unless it is suspended in
  ``ctx.wait_for`` on purpose; a suspended run whose wait timed out, or whose signal came
  but whose sender died before re-queueing it, is queued again.
"""

import asyncio
import logging
from dataclasses import dataclass

import asyncpg
from arq.connections import ArqRedis

from taskstream.core import metrics, queue, store, store_steps, waits
from taskstream.core.eventlog import EventLog
from taskstream.core.events import NewEvent
from taskstream.core.pending import append_pending
from taskstream.core.settings import Settings
from taskstream.core.states import EventType, FailureReason, Outcome
from worker.runtime import Runtime

log = logging.getLogger(__name__)

#: Extra jobs for one pending state before giving up on it (each needs a worker to die
#: between taking the job and claiming the task).
MAX_RESCUES = 5


@dataclass(slots=True)
class SweepReport:
    requeued: int = 0
    failed: int = 0
    reenqueued: int = 0
    resumed: int = 0


async def heartbeat_once(pool: asyncpg.Pool, runtime: Runtime, settings: Settings) -> int:
    held = await store.renew_leases(pool, runtime.worker_id, settings.lease_seconds,
                                    list(runtime.running))
    await store.touch_worker_types(pool, runtime.worker_id)
    for task_id, cancel_requested in held:
        if cancel_requested:
            runtime.request_cancel(task_id)
    return len(held)


async def sweep_once(pool: asyncpg.Pool, arq: ArqRedis, eventlog: EventLog,
                     settings: Settings, *, leases: bool = True) -> SweepReport:
    """One pass. ``leases=False`` skips expiring leases (right after a database outage,
    when live workers have not had the chance to renew theirs yet)."""
    report = SweepReport()
    for lost in await store.expired_leases(pool) if leases else []:
        metrics.LEASE_EXPIRIES.inc()
        if lost.cancel_requested:
            # Its worker died before it could honour the cancel: honour it here.
            res = await eventlog.append(NewEvent(
                task_id=lost.task_id, owner=lost.owner, type=EventType.CANCELLED,
                attempt=lost.attempts, error="cancelled by request (its worker was lost)",
            ))
            if res.outcome == Outcome.OK:
                report.failed += 1
                metrics.task_event(metrics.CANCELLED, lost.task_type)
            continue
        if lost.crashes + 1 >= settings.max_crashes:
            res = await eventlog.append(NewEvent(
                task_id=lost.task_id, owner=lost.owner, type=EventType.FAILED,
                attempt=lost.attempts, data={"reason": FailureReason.WORKER_LOST},
                error=f"worker lost {lost.crashes + 1} times running this task; giving up",
            ))
            if res.outcome == Outcome.OK:
                report.failed += 1
                metrics.task_event(metrics.FAILED, lost.task_type)
            continue
        res = await append_pending(eventlog, arq, settings, NewEvent(
            task_id=lost.task_id, owner=lost.owner, type=EventType.REQUEUED,
            attempt=lost.attempts,
            data={"reason": FailureReason.WORKER_LOST, "attempt": lost.attempts},
            message=f"attempt {lost.attempts} lost with its worker; re-queued",
        ), options=lost.options)
        if res.outcome == Outcome.OK:
            report.requeued += 1
            metrics.LEASE_RECOVERIES.inc()
    for task_id, seq, options in await store.stale_pending(pool, settings.pending_stale_seconds):
        jid = queue.job_id(task_id, seq)
        job = queue.Job.of(task_id, seq, options)  # with its priority, deferred to its run_at
        if not await queue.job_known(arq, jid):
            if await queue.enqueue(arq, settings, [job]):
                report.reenqueued += 1
            continue
        # Queued (maybe deferred for a retry) is fine. But a worker that took the job and
        # still has not claimed the task died in between: arq would wait out its in-progress
        # marker (the job timeout). Run it again under a rescue id; the claim in PostgreSQL
        # lets only one run start it.
        for rescue in range(1, MAX_RESCUES + 1):
            held = await queue.held_for(arq, settings, jid)
            if held is None or held < settings.pending_stale_seconds:
                break  # waiting in the queue, or taken just now: leave it be
            jid = queue.job_id(task_id, seq, rescue)
            if not await queue.job_known(arq, jid):
                if await queue.enqueue(arq, settings, [job], rescue=rescue):
                    report.reenqueued += 1
                break
    report.failed += await fail_unknown_types(pool, eventlog, settings)
    for waiting, name, timed_out in await store_steps.due_waits(
            pool, signal_grace=settings.pending_stale_seconds):
        # A suspended run whose wait timed out (its wait_for times out when it runs again),
        # or whose signal's sender died before re-queueing it.
        report.resumed += await waits.resume(pool, eventlog, arq, settings, waiting, name,
                                             timed_out=timed_out)
    if report.requeued or report.failed or report.reenqueued:
        log.warning("sweep: %s", report)
    return report


async def fail_unknown_types(pool: asyncpg.Pool, eventlog: EventLog, settings: Settings) -> int:
    """Pending tasks of a type that no live worker loads, submitted more than
    ``unknown_type_grace`` ago, fail with ``unknown_task_type`` instead of waiting forever."""
    workers, live = await store.live_worker_types(pool, settings.lease_seconds)
    if not workers:
        return 0  # this worker has not announced itself yet: judge nothing
    failed = 0
    for task_id, owner, task_type in await store.pending_of_unknown_types(
            pool, sorted(live), settings.unknown_type_grace):
        res = await eventlog.append(NewEvent(
            task_id=task_id, owner=owner, type=EventType.FAILED,
            data={"reason": FailureReason.UNKNOWN_TASK_TYPE},
            error=f"no running worker loads task type {task_type!r} (they load: "
                  f"{', '.join(sorted(live))}); start workers with its module in "
                  "TASKSTREAM_TASKS and re-drive the task",
        ))
        failed += res.outcome == Outcome.OK
    return failed


async def run_forever(pool: asyncpg.Pool, arq: ArqRedis, eventlog: EventLog, runtime: Runtime,
                      settings: Settings) -> None:
    """Heartbeat and sweep on their intervals, each in a loop of its own: a sweep that re-queues
    many tasks waits on the event log once per task, and a heartbeat queued behind it let
    this worker's own leases expire while it was alive (seen in the chaos run). A failure
    (database or Redis away) is logged and retried on the next tick, never fatal."""
    contact = _Contact()
    await asyncio.gather(_beat_forever(pool, runtime, settings, contact),
                         _sweep_forever(pool, arq, eventlog, settings, contact))


class _Contact:
    """Since when the heartbeat has reached the database without a break. Leases are judged
    only after a lease period of it: after an outage every worker's lease looks expired
    until its next heartbeat."""

    def __init__(self) -> None:
        self.since: float | None = None


async def _beat_forever(pool: asyncpg.Pool, runtime: Runtime, settings: Settings,
                        contact: _Contact) -> None:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await heartbeat_once(pool, runtime, settings)
            contact.since = started if contact.since is None else contact.since
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            contact.since = None
            log.warning("heartbeat failed: %s", exc)
        await asyncio.sleep(max(0.01, started + settings.heartbeat_interval - loop.time()))


async def _sweep_forever(pool: asyncpg.Pool, arq: ArqRedis, eventlog: EventLog,
                         settings: Settings, contact: _Contact) -> None:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            settled = contact.since is not None and \
                started - contact.since >= settings.lease_seconds
            await sweep_once(pool, arq, eventlog, settings, leases=settled)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("sweep failed: %s", exc)
        await asyncio.sleep(max(0.01, started + settings.sweep_interval - loop.time()))
