"""What task code sees: its params, its attempt, and a small API to report progress."""

import json
import time
from typing import Any

import asyncpg

from core.eventlog import EventLog
from core.events import NewEvent
from core.settings import Settings
from core.states import EventType


class AttemptSuperseded(Exception):
    """This attempt's writes are refused: the task was cancelled or re-run elsewhere."""


class SoftTimeLimitExceeded(Exception):
    """Raised once, at the first report after the soft time limit: clean up, or return a
    partial result. The hard limit cancels the task some time later."""


class TaskContext:
    def __init__(self, *, task_id: str, owner: str, attempt: int, worker_id: str,
                 eventlog: EventLog, pool: asyncpg.Pool, settings: Settings,
                 soft_timeout: float | None = None) -> None:
        self.task_id = task_id
        self.owner = owner
        self.attempt = attempt
        self.worker_id = worker_id
        self.pool = pool
        self.settings = settings
        self._eventlog = eventlog
        self._progress = 0.0
        self._soft_deadline = time.monotonic() + soft_timeout if soft_timeout else None
        self.soft_timed_out = False

    @property
    def current_progress(self) -> float:
        return self._progress

    async def progress(self, percent: float, message: str | None = None, *,
                       data: Any = None) -> None:
        """Report progress (0-100). It never goes backwards within an attempt."""
        if not 0 <= percent <= 100:
            raise ValueError(f"progress must be within 0..100, got {percent}")
        self._progress = max(self._progress, float(percent))
        await self._emit(EventType.PROGRESS, progress=self._progress, message=message, data=data)

    async def log(self, message: str) -> None:
        """A log line on the task's stream and history; status and progress unchanged."""
        await self._emit(EventType.LOG, message=message)

    async def partial(self, data: Any, message: str | None = None) -> None:
        """Partial results (say, the first summaries of a hundred) as they become ready."""
        await self._emit(EventType.PARTIAL, data=data, message=message)

    async def _emit(self, etype: EventType, *, progress: float | None = None,
                    message: str | None = None, data: Any = None) -> None:
        if (self._soft_deadline is not None and not self.soft_timed_out
                and time.monotonic() > self._soft_deadline):
            self.soft_timed_out = True
            raise SoftTimeLimitExceeded("soft time limit exceeded")
        if data is not None:
            json.dumps(data)  # fail in the task's code, not in the batch writer
        res = await self._eventlog.append(NewEvent(
            task_id=self.task_id, owner=self.owner, type=etype, attempt=self.attempt,
            progress=progress, message=message, data=data,
        ))
        if res.outcome != "ok":
            raise AttemptSuperseded(f"task {self.task_id} attempt {self.attempt}: {res.outcome}")
