"""What task code sees: its params, its attempt, and a small API to report progress.

Reporting is pipelined: ``progress``/``log``/``partial`` queue the event for the event log
(group commit, then publish) and return at once, so a task that reports often is not slowed to
one database round trip per report, and a worker's batches grow with its load. Order is kept:
a task's events are written in the order reported, and its terminal event after all of them.
Back-pressure: with more than ``settings.progress_window`` of the attempt's events not yet
durable, the next report waits for the oldest. A refusal (the attempt was superseded:
cancelled or re-run elsewhere) surfaces as ``AttemptSuperseded`` at the next report or at
``flush()``; ``await ctx.flush()`` waits until everything reported is durable and published.
"""

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
from redis.asyncio import Redis

from taskstream.context import AttemptSuperseded, SoftTimeLimitExceeded, TextOut
from taskstream.core import store
from taskstream.core.eventlog import EventLog
from taskstream.core.events import NewEvent
from taskstream.core.live import LiveWriter
from taskstream.core.settings import Settings
from taskstream.core.states import EventType, Outcome


class WorkerContext:
    """``taskstream.TaskContext`` as a worker implements it."""

    def __init__(self, *, task_id: str, owner: str, attempt: int, worker_id: str,
                 eventlog: EventLog, pool: asyncpg.Pool, settings: Settings,
                 soft_timeout: float | None = None, redis: Redis | None = None) -> None:
        self.task_id = task_id
        self.owner = owner
        self.attempt = attempt
        self.worker_id = worker_id
        self.pool = pool
        self.settings = settings
        self.redis = redis  # the live lane's connection (None: text streams are durable only)
        self._eventlog = eventlog
        self._progress = 0.0
        self._window = max(1, settings.progress_window)
        self._pending: deque[asyncio.Future[store.Appended]] = deque()
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

    def text_stream(self, name: str) -> AbstractAsyncContextManager[TextOut]:
        """Model output as it comes: ``await out.write(delta)`` sends it to the live lane
        (token frames, no database write); a clean exit records the whole text once, as a
        durable ``text`` event ``{"stream", "text", "length"}``."""
        return self._text_stream(name)

    @contextlib.asynccontextmanager
    async def _text_stream(self, name: str) -> AsyncIterator[TextOut]:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValueError("a text stream's name is a non-empty string of at most 200 "
                             "characters")
        writer = None
        if self.redis is not None:
            writer = LiveWriter(self.redis, self.settings.namespace, task_id=self.task_id,
                                owner=self.owner, attempt=self.attempt, stream=name,
                                interval=self.settings.live_frame_interval,
                                ttl=self.settings.live_ttl)
        out = TextStream(name, writer)
        try:
            yield out
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            await writer.close()
        text = out.text
        await self._emit(EventType.TEXT, data={"stream": name, "text": text,
                                               "length": len(text)})
        if writer is not None:
            await self.flush()  # durable first: then readers may skip the lane's copy
            await writer.mark_done()

    async def _emit(self, etype: EventType, *, progress: float | None = None,
                    message: str | None = None, data: Any = None) -> None:
        if (self._soft_deadline is not None and not self.soft_timed_out
                and time.monotonic() > self._soft_deadline):
            self.soft_timed_out = True
            raise SoftTimeLimitExceeded("soft time limit exceeded")
        if data is not None:
            json.dumps(data)  # fail in the task's code, not in the batch writer
        self._settle_done()
        fut = self._eventlog.enqueue(NewEvent(
            task_id=self.task_id, owner=self.owner, type=etype, attempt=self.attempt,
            progress=progress, message=message, data=data,
        ))
        fut.add_done_callback(_retrieve)
        self._pending.append(fut)
        while len(self._pending) > self._window:
            await asyncio.shield(self._pending[0])
            self._settle_done()

    async def flush(self) -> None:
        """Wait until every event reported so far is durable and published."""
        while self._pending:
            await asyncio.shield(self._pending[-1])
            self._settle_done()

    def _settle_done(self) -> None:
        """Drop the written events from the head of the queue; raise on a refused one."""
        while self._pending and self._pending[0].done():
            res = self._pending.popleft().result()  # a failed batch raises its error here
            if res.outcome != Outcome.OK:
                self._pending.clear()
                raise AttemptSuperseded(
                    f"task {self.task_id} attempt {self.attempt}: {res.outcome}")


class TextStream:
    """What ``ctx.text_stream(name)`` yields: ``write`` deltas, read ``text``."""

    def __init__(self, name: str, writer: LiveWriter | None) -> None:
        self.name = name
        self._writer = writer
        self._parts: list[str] = []
        self._text: str | None = ""

    async def write(self, delta: str) -> None:
        if not isinstance(delta, str):
            raise TypeError(f"write() takes str, not {type(delta).__name__}")
        if not delta:
            return
        self._parts.append(delta)
        self._text = None
        if self._writer is not None:
            self._writer.write(delta)

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "".join(self._parts)
            self._parts = [self._text]
        return self._text


def _retrieve(fut: "asyncio.Future[Any]") -> None:
    """Mark a failed batch's error as seen: the task may end before it looks at it."""
    if not fut.cancelled():
        fut.exception()
