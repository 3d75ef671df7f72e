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
import inspect
import json
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel
from redis.asyncio import Redis

from taskstream.context import AttemptSuperseded, SoftTimeLimitExceeded, TextStream
from taskstream.core import store, store_steps, tracing
from taskstream.core.constants import SIGNAL_NAME_PATTERN
from taskstream.core.eventlog import EventLog
from taskstream.core.events import NewEvent
from taskstream.core.live import LiveWriter
from taskstream.core.settings import Settings
from taskstream.core.states import EventType, Outcome
from taskstream.declaration import StepOrderError, WaitTimeout

#: Step names are labels on the stream and keys of the record; a wait's step is "wait:<name>".
MAX_STEP_NAME = 200
WAIT_STEP_PREFIX = "wait:"


class Suspend(BaseException):
    """Raised by ``wait_for`` to park the run; the runtime turns it into a ``suspended`` event.
    A BaseException, so that task code's ``except Exception`` does not swallow it."""

    def __init__(self, name: str, deadline: datetime | None) -> None:
        super().__init__(name)
        self.name = name
        self.deadline = deadline


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
        self._tid = uuid.UUID(task_id)
        self._record: dict[int, store_steps.StepRecord] | None = None  # loaded on first use
        self._next_step = 0
        self._step_names: set[str] = set()

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

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A durable step (see ``taskstream.TaskContext.step``)."""
        idx, recorded = await self._claim_step(name)
        if recorded is not None:
            return recorded.result
        await self._emit(EventType.STEP_STARTED, data={"step": name, "index": idx})
        # Durable before the step runs (with the previous step's step_completed): a step that
        # ran, even in an attempt that died inside it, has its step_started on the record.
        await self.flush()
        started = datetime.now(UTC)
        with tracing.span(f"step {name}", **{"taskstream.step": name,
                                             "taskstream.step_index": idx}):
            if inspect.iscoroutinefunction(fn):
                out: Any = await fn(*args, **kwargs)
            else:
                out = await asyncio.to_thread(fn, *args, **kwargs)
                if inspect.isawaitable(out):
                    out = await out
        result = _json_roundtrip(out, name)
        await self._record_step(idx, name, result, started)
        await self._emit(EventType.STEP_COMPLETED, data={"step": name, "index": idx})
        return result

    async def wait_for(self, name: str, *, timeout: float | None = None,  # noqa: ASYNC109
                       on_timeout: Literal["fail", "continue"] = "fail") -> Any:
        """Wait for a signal (see ``taskstream.TaskContext.wait_for``)."""
        if on_timeout not in ("fail", "continue"):
            raise ValueError(f"on_timeout must be 'fail' or 'continue', got {on_timeout!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if not re.match(SIGNAL_NAME_PATTERN, name):
            raise ValueError(f"a signal's name is 1-100 letters, digits and _ . : -, got {name!r}")
        step_name = WAIT_STEP_PREFIX + name
        idx, recorded = await self._claim_step(step_name)
        if recorded is not None:
            return _wait_payload(recorded.result)
        state = await store_steps.begin_wait(self.pool, self._tid, name, timeout)
        if state.signalled:
            outcome: dict[str, Any] = {"signal": name, "payload": state.payload}
        elif state.deadline is not None and state.deadline <= state.now:
            if on_timeout == "fail":
                await store_steps.reset_wait(self.pool, self._tid, name)  # a re-drive waits anew
                raise WaitTimeout(f"no signal {name!r} within {timeout}s")
            outcome = {"signal": name, "timed_out": True}
        else:
            await self.flush()  # what the run reported so far is durable before it parks
            self._next_step = idx  # this wait is asked for again when the run resumes
            self._step_names.discard(step_name)
            raise Suspend(name, state.deadline)
        await self._record_step(idx, step_name, outcome, datetime.now(UTC))
        return _wait_payload(outcome)

    def text_stream(self, name: str) -> AbstractAsyncContextManager[TextStream]:
        """Text written as produced, recorded whole as one ``text`` event at the end."""
        return self._text_stream(name)

    @asynccontextmanager
    async def _text_stream(self, name: str) -> AsyncIterator["RecordedText"]:
        """Model output as it comes: ``write()`` feeds the live lane (token frames, no
        database write, ``core.live``); a clean exit records the whole text once, as a
        durable ``text`` event ``{"stream", "text", "length"}``."""
        if not name or len(name) > MAX_STEP_NAME:
            raise ValueError(f"a text stream's name is 1..{MAX_STEP_NAME} characters")
        writer = None
        if self.redis is not None:
            writer = LiveWriter(self.redis, self.settings.namespace, task_id=self.task_id,
                                owner=self.owner, attempt=self.attempt, stream=name,
                                interval=self.settings.live_frame_interval,
                                ttl=self.settings.live_ttl)
        out = RecordedText(writer)
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

    async def _claim_step(self, name: str) -> tuple[int, store_steps.StepRecord | None]:
        """The next step's index, and its record if an earlier attempt completed it."""
        if not name or len(name) > MAX_STEP_NAME:
            raise ValueError(f"a step's name is 1..{MAX_STEP_NAME} characters, got {name!r}")
        if name in self._step_names:
            raise StepOrderError(f"step {name!r} asked for twice in one run: names are unique")
        if self._record is None:
            self._record = {r.idx: r for r in
                            await store_steps.recorded_steps(self.pool, self._tid)}
        idx = self._next_step
        self._next_step += 1
        self._step_names.add(name)
        rec = self._record.get(idx)
        if rec is not None:
            if rec.name != name:
                raise StepOrderError(
                    f"step {idx} is {name!r} in this run but {rec.name!r} in the record of "
                    f"attempt {rec.attempt}: steps must be asked for in the same order")
            return idx, rec
        if any(r.name == name for r in self._record.values()):
            raise StepOrderError(f"step {name!r} is recorded at another position than {idx}")
        return idx, None

    async def _record_step(self, idx: int, name: str, result: Any, started: datetime) -> None:
        if not await store_steps.record_step(self.pool, self._tid, self.attempt, idx, name,
                                             result, started):
            raise AttemptSuperseded(
                f"task {self.task_id} attempt {self.attempt}: step {name!r} not recorded")
        assert self._record is not None
        self._record[idx] = store_steps.StepRecord(idx, name, self.attempt, result)

    async def _emit(self, etype: EventType, *, progress: float | None = None,
                    message: str | None = None, data: Any = None) -> None:
        if (self._soft_deadline is not None and not self.soft_timed_out
                and time.monotonic() > self._soft_deadline):
            self.soft_timed_out = True
            raise SoftTimeLimitExceeded("soft time limit exceeded")
        if data is not None:
            json.dumps(data)  # fail in the task's code, not in the batch writer
        self._settle_done()
        # Positional, in NewEvent's field order (task_id, owner, type, attempt, progress,
        # message, data): keywords cost twice as much, once per event.
        fut = self._eventlog.enqueue(NewEvent(
            self.task_id, self.owner, etype, self.attempt, progress, message, data))
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


class RecordedText:
    """``ctx.text_stream``'s writer: keeps the text for the durable ``text`` event and hands
    each delta to the live lane (no I/O here: the lane sends a frame per interval)."""

    def __init__(self, live: LiveWriter | None = None) -> None:
        self._parts: list[str] = []
        self._live = live

    async def write(self, delta: str) -> None:
        if not isinstance(delta, str):
            raise TypeError(f"text_stream writes str, got {type(delta).__name__}")
        if not delta:
            return
        self._parts.append(delta)
        if self._live is not None:
            self._live.write(delta)

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""


def _json_roundtrip(value: Any, step: str) -> Any:
    """The value as a later attempt will read it back from the record."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"step {step!r} returned a value that is not JSON: {exc}") from exc


def _wait_payload(outcome: Any) -> Any:
    """A resolved wait's record: the signal's payload, or None when it timed out."""
    return None if outcome.get("timed_out") else outcome.get("payload")


