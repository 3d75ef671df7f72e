"""The wrapper around every task: it owns the lifecycle, not arq's job hooks (which see neither
the function name nor the result, and are skipped on several failure paths).

For each job: claim the next attempt (fenced in PostgreSQL), validate params, run the task
under its soft and hard time limits, and end in exactly one terminal status — completed,
failed (with a useful error and a reason: error, timeout, worker_lost) or cancelled. A failed
attempt with budget left becomes a ``retrying`` event and a deferred job (exponential backoff
with jitter). A worker shutting down puts its unfinished tasks back to pending without
spending an attempt of their budget.
"""

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from arq.connections import ArqRedis
from pydantic import BaseModel, ValidationError

from taskstream.context import AttemptSuperseded, SoftTimeLimitExceeded
from taskstream.core import metrics, queue, store, store_steps, tracing, waits
from taskstream.core.batcher import Batcher
from taskstream.core.eventlog import EventLog
from taskstream.core.events import NewEvent
from taskstream.core.limits import is_limited
from taskstream.core.pending import append_pending
from taskstream.core.settings import Settings
from taskstream.core.states import (
    EventType,
    FailureReason,
    Outcome,
    RunOutcome,
    Status,
    is_terminal,
)
from taskstream.core.tasktypes import Catalogue
from taskstream.declaration import PermanentError, TaskDef
from worker import limits
from worker.context import Suspend, WorkerContext

log = logging.getLogger(__name__)

#: A run's end as queued: its event type, and the future of its write.
Ending = tuple[EventType, "asyncio.Future[store.Appended]"]
#: What a written end means for arq's log and the metrics.
_ENDS = {EventType.COMPLETED: RunOutcome.COMPLETED, EventType.FAILED: RunOutcome.FAILED,
         EventType.CANCELLED: RunOutcome.CANCELLED}


class TaskLoader(Batcher[uuid.UUID, "store.Task | None"]):
    """A poll starts up to max_jobs jobs at once: their task rows come in one query."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__("task-loader", 500)
        self._pool = pool

    async def load(self, task_id: uuid.UUID) -> store.Task | None:
        return await self._submit(task_id)

    async def _commit(self, items: list[uuid.UUID]) -> list[store.Task | None]:
        found = await store.get_tasks(self._pool, items)
        return [found.get(str(i)) for i in items]


class Runtime:
    def __init__(self, *, settings: Settings, pool: asyncpg.Pool, eventlog: EventLog,
                 arq: ArqRedis, worker_id: str, catalogue: Catalogue) -> None:
        self.settings = settings
        self.pool = pool
        self.eventlog = eventlog
        self.arq = arq
        self.worker_id = worker_id
        self.catalogue = catalogue
        self.running: dict[str, asyncio.Task[Any]] = {}
        self._cancel_requested: set[str] = set()
        self.loader = TaskLoader(pool)
        self.loader.start()
        self.starter = limits.Starter(pool, eventlog)
        self.starter.start()

    async def close(self) -> None:
        await self.loader.close()
        await self.starter.close()

    def request_cancel(self, task_id: str) -> bool:
        """Cancel a task running here (called on a control message). False if not here."""
        job = self.running.get(task_id)
        if job is None or task_id in self._cancel_requested:
            return False
        self._cancel_requested.add(task_id)
        job.cancel()
        return True

    async def run(self, task_id: str) -> RunOutcome:
        """Run one job; returns how it ended (for arq's log only: PostgreSQL has the truth)."""
        seen = Observed()
        outcome: RunOutcome | None = None
        try:
            outcome = await self._run(task_id, seen)
            return outcome
        finally:
            self._cancel_requested.discard(task_id)
            seen.finish(outcome)

    async def _run(self, task_id: str, seen: "Observed") -> RunOutcome:
        tid = _uuid(task_id)
        task = await self.loader.load(tid) if tid else None
        if task is None:
            log.warning("job for unknown task %r ignored", task_id)
            return RunOutcome.MISSING
        if is_terminal(task.status):
            return RunOutcome.ALREADY_FINISHED
        seen.task_type = task.task_type
        if task.cancel_requested and task.status == Status.PENDING:
            await self._append(task.owner, task_id, EventType.CANCELLED,
                               error="cancelled by request")
            return RunOutcome.CANCELLED
        wait = _until_run_at(task)
        if wait > 0:  # a clock ahead of ours, or a stray job: never start early
            raise queue.RunAgainLater(defer=wait)
        spec = self.catalogue.get(task.task_type)
        start = NewEvent(task_id=task_id, owner=task.owner, type=EventType.STARTED,
                         attempt=task.attempts + 1, worker_id=self.worker_id,
                         lease=self.settings.lease_seconds,
                         message=f"attempt {task.attempts + 1}")
        if spec is not None and is_limited(spec):
            started = await limits.start(self.starter, self.eventlog, self.arq,
                                         self.settings, task, spec, start)
        else:
            started = await self.eventlog.append(start)
        if started.outcome == Outcome.LIMITED:
            return RunOutcome.WAITING  # a later job starts it
        if started.outcome != Outcome.OK or started.event is None:
            # Cancelled while queued, or another worker holds it: not ours to run.
            return RunOutcome.NOT_OURS
        attempt = started.event.attempt
        seen.started(task, started.event.created_at)
        with tracing.task_run(task.options, task_id, task.task_type, attempt,
                              task.updated_at) as span:
            outcome = await self._attempt(task_id, task, spec, attempt)
            if span is not None:
                span.set_attribute("taskstream.outcome", outcome.value)
            return outcome

    async def _attempt(self, task_id: str, task: store.Task, spec: "TaskDef[Any, Any] | None",
                       attempt: int) -> RunOutcome:
        """One attempt of a started task, to its outcome."""
        opts = task.options
        soft = opts.get("soft_timeout") or (spec.soft_timeout if spec else None)
        ctx = WorkerContext(task_id=task_id, owner=task.owner, attempt=attempt,
                            worker_id=self.worker_id, eventlog=self.eventlog, pool=self.pool,
                            settings=self.settings, soft_timeout=soft, redis=self.arq)
        if spec is None:
            # Every worker of a deployment loads the same task modules (TASKSTREAM_TASKS).
            return await self._fail(
                ctx, f"unknown task type {task.task_type!r}: this worker loads "
                f"{', '.join(self.catalogue.names())}", FailureReason.UNKNOWN_TASK_TYPE)
        try:
            params = spec.params.model_validate(task.params)
        except ValidationError as exc:
            return await self._fail(ctx, f"invalid params: {exc.errors(include_url=False)}",
                                    FailureReason.ERROR)

        timeout = opts.get("timeout") or spec.timeout or self.settings.worker_job_timeout
        # The job queues the run's end in the very step its code returns (``_queue_end``):
        # the run's last reports are then still queued too, and share its batch.
        job = asyncio.create_task(_run_impl(spec, ctx, params, self._queue_end),
                                  name=f"task:{task_id}")
        self.running[task_id] = job
        try:
            async with asyncio.timeout(timeout):
                ending = await asyncio.shield(job)
        except TimeoutError:
            job.cancel()
            await _settle(job)
            if ended := _end_of(job):  # it returned as its limit passed, or ignored the cancel
                return await self._ended(ctx, *ended)
            return await self._failed_attempt(ctx, task, spec, FailureReason.TIMEOUT,
                                              f"timed out after {timeout:g}s (hard limit)")
        except asyncio.CancelledError:
            if task_id in self._cancel_requested:
                # The cancel endpoint's request: record it and finish normally.
                await _settle(job)
                if ended := _end_of(job):  # it swallowed its cancellation: "cancelled" end
                    return await self._ended(ctx, *ended)
                return await self._terminal(ctx, EventType.CANCELLED,
                                            error="cancelled by request")
            # The worker is shutting down past its grace period: stop the task and put it
            # back to pending (no attempt spent); arq re-queues this job for another worker.
            # A run whose end is already queued is over: the event log writes it on close.
            if not _end_of(job):
                job.cancel()
                await _settle(job)
                if not _end_of(job):  # it may still have returned meanwhile
                    await self._append(ctx.owner, task_id, EventType.REQUEUED,
                                       attempt=attempt,
                                       message="worker shutting down; task re-queued",
                                       data={"reason": FailureReason.SHUTDOWN})
            raise
        except AttemptSuperseded:
            return RunOutcome.SUPERSEDED
        except Suspend as parked:
            return await self._suspend(ctx, parked)
        except Exception as exc:
            if task_id in self._cancel_requested:
                return await self._terminal(ctx, EventType.CANCELLED,
                                            error="cancelled by request")
            if isinstance(exc, SoftTimeLimitExceeded):
                return await self._failed_attempt(ctx, task, spec, FailureReason.TIMEOUT,
                                                  f"timed out: soft limit of {soft:g}s")
            log.warning("task %s (%s) attempt %d raised %s", task_id, task.task_type,
                        attempt, type(exc).__name__, exc_info=exc)
            reason = FailureReason.PERMANENT if isinstance(exc, PermanentError) \
                else FailureReason.ERROR
            return await self._failed_attempt(ctx, task, spec, reason,
                                              f"{type(exc).__name__}: {exc}")
        finally:
            self.running.pop(task_id, None)
        return await self._ended(ctx, *ending)

    def _queue_end(self, ctx: WorkerContext, result: Any) -> "Ending":
        """The end of a run whose code returned ``result``, queued now (no I/O, no wait)."""
        if ctx.task_id in self._cancel_requested:  # the task swallowed its cancellation
            return self._queue_terminal(ctx, EventType.CANCELLED, error="cancelled by request")
        try:
            payload = _jsonable(result)
        except (TypeError, ValueError) as exc:
            return self._queue_failure(ctx, f"result is not JSON-serializable: {exc}",
                                       FailureReason.ERROR)
        return self._queue_terminal(ctx, EventType.COMPLETED, result=payload)

    async def _suspend(self, ctx: WorkerContext, parked: Suspend) -> RunOutcome:
        """Park the run (``ctx.wait_for``): the task goes back to pending with no job queued,
        and the signal or the sweeper (at the deadline) queues it again."""
        deadline = parked.deadline.isoformat() if parked.deadline else None
        res = await self._append(ctx.owner, ctx.task_id, EventType.SUSPENDED,
                                 attempt=ctx.attempt,
                                 message=f"waiting for signal {parked.name!r}",
                                 data={"signal": parked.name, "deadline": deadline})
        if res.outcome != Outcome.OK:
            return RunOutcome.SUPERSEDED
        tid = uuid.UUID(ctx.task_id)
        if await store_steps.suspend_wait(self.pool, tid, parked.name):
            # The signal came while this run was parking; its sender saw no suspended run.
            await waits.resume(self.pool, self.eventlog, self.arq, self.settings, tid,
                               parked.name)
        return RunOutcome.SUSPENDED

    async def _failed_attempt(self, ctx: WorkerContext, task: store.Task,
                              spec: TaskDef[Any, Any],
                              reason: FailureReason, error: str) -> RunOutcome:
        """Retry with backoff if the budget and the kind of failure allow, else fail."""
        max_attempts = int(task.options.get("max_attempts") or task.max_attempts)
        retryable = reason == FailureReason.ERROR or \
            (reason == FailureReason.TIMEOUT and spec.retry_timeouts)
        spent = task.failures + 1
        if not retryable or spent >= max_attempts:
            # A permanent error is an error that skips the retries.
            final = FailureReason.ERROR if reason == FailureReason.PERMANENT else reason
            return await self._fail(ctx, error, final)
        delay = backoff(spent, spec.backoff or self.settings.retry_backoff,
                        self.settings.retry_backoff_max)
        await append_pending(self.eventlog, self.arq, self.settings, NewEvent(
            task_id=ctx.task_id, owner=ctx.owner, type=EventType.RETRYING, attempt=ctx.attempt,
            error=error[:4000],
            message=f"retrying in {delay:.1f}s (failed attempt {spent} of {max_attempts})",
            data={"reason": reason, "attempt": ctx.attempt, "delay": round(delay, 3),
                  "error": error[:4000]},
        ), options=task.options, defer_by=delay)
        return RunOutcome.RETRYING

    async def _fail(self, ctx: WorkerContext, error: str, reason: FailureReason) -> RunOutcome:
        return await self._ended(ctx, *self._queue_failure(ctx, error, reason))

    def _queue_failure(self, ctx: WorkerContext, error: str, reason: FailureReason
                       ) -> "Ending":
        return self._queue_terminal(ctx, EventType.FAILED, error=error[:4000],
                                    data={"reason": reason})

    async def _terminal(self, ctx: WorkerContext, etype: EventType, *, result: Any = None,
                        error: str | None = None, data: Any = None) -> RunOutcome:
        return await self._ended(ctx, *self._queue_terminal(ctx, etype, result=result,
                                                            error=error, data=data))

    def _queue_terminal(self, ctx: WorkerContext, etype: EventType, *, result: Any = None,
                        error: str | None = None, data: Any = None) -> "Ending":
        """The attempt's end, queued behind its reports without waiting for them: those
        still queued share its batch, so one commit and one publish end the task, and a
        stream sends the last progress and the end in one write."""
        return etype, self.eventlog.enqueue(NewEvent(
            task_id=ctx.task_id, owner=ctx.owner, type=etype, attempt=ctx.attempt,
            progress=ctx.current_progress, result=result, error=error, data=data))

    async def _ended(self, ctx: WorkerContext, etype: EventType,
                     written: "asyncio.Future[store.Appended]") -> RunOutcome:
        """Wait for the run's reports and its queued end. Events are written in the order
        queued, so a report refused (the attempt superseded, or the task ended meanwhile)
        means its end is refused for the same reason: the end's outcome decides."""
        # A report's batch that failed (outages are retried there, not raised) is logged by
        # the event log; the end, written in a later batch, may still stand.
        with contextlib.suppress(Exception):
            await ctx.flush()
        res = await written
        if res.outcome == Outcome.OK:
            return _ENDS[etype]
        log.info("terminal %s for %s refused: %s", etype, ctx.task_id, res.outcome)
        return RunOutcome.SUPERSEDED if etype == EventType.COMPLETED else _ENDS[etype]

    async def _append(self, owner: str, task_id: str, etype: EventType, **kw: Any
                      ) -> store.Appended:
        return await self.eventlog.append(NewEvent(task_id=task_id, owner=owner, type=etype, **kw))


class Observed:
    """What one job's run tells the metrics (and the trace): its type, when it started."""

    __slots__ = ("t0", "task_type")

    def __init__(self) -> None:
        self.task_type = ""
        self.t0: float | None = None

    def started(self, task: store.Task, at: datetime) -> None:
        self.t0 = time.monotonic()
        metrics.task_event(metrics.STARTED, task.task_type)
        # Queue wait: from when the task last became pending (submission, retry, re-queue)
        # to its start, both on the database's clock.
        metrics.per_type(task.task_type)[1].observe(
            max(0.0, (at - task.updated_at).total_seconds()))

    def finish(self, outcome: RunOutcome | None) -> None:
        if outcome is None or not self.task_type:
            return  # an exception: the attempt is re-queued or recovered, not ended
        event = _OUTCOME_EVENTS.get(outcome)
        if event is not None:
            metrics.task_event(event, self.task_type)
        if self.t0 is not None:
            metrics.per_type(self.task_type)[0].observe(time.monotonic() - self.t0)


_OUTCOME_EVENTS = {RunOutcome.COMPLETED: metrics.COMPLETED, RunOutcome.FAILED: metrics.FAILED,
                   RunOutcome.CANCELLED: metrics.CANCELLED, RunOutcome.RETRYING: metrics.RETRIED}


def backoff(failures: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter in its upper half: base * 2^(n-1) * [0.5, 1)."""
    raw = min(cap, base * 2 ** (failures - 1))
    return float(raw * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not cryptography


async def _run_impl(spec: TaskDef[Any, Any], ctx: WorkerContext, params: BaseModel,
                    end: Callable[[WorkerContext, Any], Ending]) -> Ending:
    """The task's code; ``end`` queues the run's end in the same step it returns in."""
    return end(ctx, await spec.fn(ctx, params))


def _end_of(job: "asyncio.Task[Ending]") -> Ending | None:
    """The end a finished job queued, or None if its code did not return."""
    if job.done() and not job.cancelled() and job.exception() is None:
        return job.result()
    return None


async def _settle(job: asyncio.Task[Any]) -> None:
    """Wait for a cancelled task to run its finally blocks; its outcome no longer matters."""
    try:
        await job
    except BaseException:  # noqa: S110 - the task's own end is irrelevant now
        pass


def _until_run_at(task: store.Task) -> float:
    """Seconds until the task may start (its ``run_at`` option); <= 0: now."""
    run_at = task.options.get("run_at")
    if not run_at or task.status != Status.PENDING:
        return 0.0
    return (datetime.fromisoformat(run_at) - datetime.now(UTC)).total_seconds()


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    json.dumps(result)
    return result
