"""The wrapper around every task: it owns the lifecycle, not arq's job hooks (which see neither
the function name nor the result, and are skipped on several failure paths).

For each job: claim the next attempt (fenced in PostgreSQL), validate params, run the task
with a timeout, and end in exactly one terminal status — completed, failed (with a useful
error) or cancelled. A worker shutting down puts the task back to pending instead.
"""

import asyncio
import json
import logging
import uuid
from typing import Any

import asyncpg
from pydantic import BaseModel, ValidationError

from core import store
from core.eventlog import EventLog
from core.events import NewEvent
from core.settings import Settings
from core.states import EventType, is_terminal
from core.tasktypes import TASK_TYPES
from worker.context import AttemptSuperseded, TaskContext
from worker.tasks import TaskFn

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, *, settings: Settings, pool: asyncpg.Pool, eventlog: EventLog,
                 worker_id: str, implementations: dict[str, TaskFn]) -> None:
        self.settings = settings
        self.pool = pool
        self.eventlog = eventlog
        self.worker_id = worker_id
        self.implementations = implementations
        self.running: dict[str, asyncio.Task[Any]] = {}
        self._cancel_requested: set[str] = set()

    def request_cancel(self, task_id: str) -> bool:
        """Cancel a task running here (called on a control message). False if not here."""
        job = self.running.get(task_id)
        if job is None:
            return False
        self._cancel_requested.add(task_id)
        job.cancel()
        return True

    async def run(self, task_id: str) -> str:
        """Run one job; returns how it ended (for arq's log only: PostgreSQL has the truth)."""
        try:
            return await self._run(task_id)
        finally:
            self._cancel_requested.discard(task_id)

    async def _run(self, task_id: str) -> str:
        tid = _uuid(task_id)
        task = await store.get_task(self.pool, tid) if tid else None
        if task is None:
            log.warning("job for unknown task %r ignored", task_id)
            return "missing"
        if is_terminal(task.status):
            return task.status
        started = await self._append(task.owner, task_id, EventType.STARTED,
                                     attempt=task.attempts + 1, worker_id=self.worker_id,
                                     message=f"attempt {task.attempts + 1}")
        if started.outcome != "ok" or started.event is None:
            # Cancelled while queued, or another worker holds it: not ours to run.
            return started.outcome
        attempt = started.event.attempt
        ctx = TaskContext(task_id=task_id, owner=task.owner, attempt=attempt,
                          worker_id=self.worker_id, eventlog=self.eventlog, pool=self.pool,
                          settings=self.settings)
        spec = TASK_TYPES.get(task.task_type)
        impl = self.implementations.get(task.task_type)
        if spec is None or impl is None:
            return await self._fail(ctx, f"unknown task type {task.task_type!r}")
        try:
            params = spec.params.model_validate(task.params)
        except ValidationError as exc:
            return await self._fail(ctx, f"invalid params: {exc.errors(include_url=False)}")

        timeout = spec.timeout or self.settings.worker_job_timeout
        job = asyncio.create_task(impl(ctx, params), name=f"task:{task_id}")
        self.running[task_id] = job
        try:
            async with asyncio.timeout(timeout):
                result = await asyncio.shield(job)
        except TimeoutError:
            job.cancel()
            await _settle(job)
            return await self._fail(ctx, f"timed out after {timeout:g}s")
        except asyncio.CancelledError:
            if task_id in self._cancel_requested:
                # The cancel endpoint's request: record it and finish normally.
                await _settle(job)
                await self._terminal(ctx, EventType.CANCELLED, error="cancelled by request")
                return "cancelled"
            # The worker is shutting down: stop the task, put it back for another worker.
            job.cancel()
            await _settle(job)
            await self._append(ctx.owner, task_id, EventType.REQUEUED, attempt=attempt,
                               message="worker shutting down; task re-queued")
            raise
        except AttemptSuperseded:
            return "superseded"
        except Exception as exc:
            if task_id in self._cancel_requested:
                await self._terminal(ctx, EventType.CANCELLED, error="cancelled by request")
                return "cancelled"
            log.exception("task %s (%s) attempt %d failed", task_id, task.task_type, attempt)
            return await self._fail(ctx, f"{type(exc).__name__}: {exc}")
        finally:
            self.running.pop(task_id, None)

        if task_id in self._cancel_requested:  # the task swallowed its cancellation
            await self._terminal(ctx, EventType.CANCELLED, error="cancelled by request")
            return "cancelled"
        try:
            payload = _jsonable(result)
        except (TypeError, ValueError) as exc:
            return await self._fail(ctx, f"result is not JSON-serializable: {exc}")
        await self._terminal(ctx, EventType.COMPLETED, result=payload)
        return "completed"

    async def _fail(self, ctx: TaskContext, error: str) -> str:
        await self._terminal(ctx, EventType.FAILED, error=error[:4000])
        return "failed"

    async def _terminal(self, ctx: TaskContext, etype: EventType, *, result: Any = None,
                        error: str | None = None) -> None:
        res = await self._append(ctx.owner, ctx.task_id, etype, attempt=ctx.attempt,
                                 result=result, error=error, progress=ctx.current_progress)
        if res.outcome != "ok":
            log.info("terminal %s for %s refused: %s", etype, ctx.task_id, res.outcome)

    async def _append(self, owner: str, task_id: str, etype: EventType, **kw: Any
                      ) -> store.Appended:
        return await self.eventlog.append(NewEvent(task_id=task_id, owner=owner, type=etype, **kw))


async def _settle(job: asyncio.Task[Any]) -> None:
    """Wait for a cancelled task to run its finally blocks; its outcome no longer matters."""
    try:
        await job
    except BaseException:  # noqa: S110 - the task's own end is irrelevant now
        pass


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
