"""What a running task sees: ``TaskContext``, the API task code uses to report.

Reports are pipelined: ``progress``, ``log`` and ``partial`` return once the event is queued
for the worker's group-committed event log (so a task that reports often is not slowed to
one database round trip per report); order is kept, and ``flush()`` waits until everything
reported is durable and published. A task that reports faster than the log can write waits
at its next report.

Durable steps: ``await ctx.step("parse", fn, *args)`` runs ``fn`` once per task, not once per
attempt: its JSON result is recorded, and a retry, a crash recovery or a re-drive gets the
recorded result back and carries on at the first unfinished step. ``await ctx.wait_for(name)``
parks the run (no worker slot held) until a signal for ``name`` arrives.

Cancellation reaches task code as ``asyncio.CancelledError`` at its next ``await``: clean up
in ``finally`` (or ``except CancelledError: ...; raise``). The soft time limit raises
``SoftTimeLimitExceeded`` once, at the first report past it; the hard limit cancels.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol, TypeVar, overload, runtime_checkable

T = TypeVar("T")


class SoftTimeLimitExceeded(Exception):
    """Raised once, at the first report after the soft time limit: clean up, or return a
    partial result. The hard limit cancels the task some time later."""


class AttemptSuperseded(Exception):
    """This attempt's reports are refused: the task was cancelled or re-run elsewhere. Let
    it propagate; the task's outcome is decided by whoever superseded this attempt."""


@runtime_checkable
class TextStream(Protocol):
    """Text written as it is produced (a model's tokens): live to the task's followers, and
    recorded whole, as one ``text`` event, when the ``async with`` block ends."""

    async def write(self, delta: str) -> None:
        """Append ``delta`` to the text; followers see it within a few tens of ms."""

    @property
    def text(self) -> str:
        """Everything written so far."""


@runtime_checkable
class TaskContext(Protocol):
    #: The task's id (as in ``GET /tasks/{task_id}``) and its tenant.
    task_id: str
    owner: str
    #: 1 for the first run; a retry, or a re-run after a lost worker, counts up.
    attempt: int

    async def progress(self, percent: float, message: str | None = None, *,
                       data: Any = None) -> None:
        """Report progress, 0-100; it never goes backwards within an attempt. ``data`` (any
        JSON value) rides along on the event."""

    async def log(self, message: str) -> None:
        """A log line on the task's stream and history; status and progress unchanged."""

    async def partial(self, data: Any, message: str | None = None) -> None:
        """A partial result (say, the first summaries of a hundred) as soon as it is ready."""

    async def flush(self) -> None:
        """Wait until every report so far is durable and published."""

    @overload
    async def step(self, name: str, fn: Callable[..., Awaitable[T]], *args: Any,
                   **kwargs: Any) -> T: ...

    @overload
    async def step(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` as the durable step ``name`` and return its result.

        The result must be JSON (or a pydantic model); it is recorded in PostgreSQL, and a
        later attempt of this task (retry, crash recovery, re-drive) gets the recorded value
        back without calling ``fn`` again — so the value returned is always the JSON form
        (a tuple comes back as a list, a model as a dict). Names are unique within a run, and
        a run must ask for its steps in the recorded order; otherwise ``StepOrderError``
        fails the task. A plain (non-async) ``fn`` runs in a worker thread. ``step_started``
        and ``step_completed`` events are on the stream."""

    async def wait_for(self, name: str, *, timeout: float | None = None,  # noqa: ASYNC109
                       on_timeout: Literal["fail", "continue"] = "fail") -> Any:
        """Wait for the signal ``name`` (``POST /tasks/{id}/signals/{name}``, or a signed URL)
        and return its JSON payload. The run is suspended meanwhile: its worker slot is free,
        the task is ``pending`` with a ``suspended`` event, and when the signal arrives it is
        queued again and resumes after its completed steps (a wait is itself a step). After
        ``timeout`` seconds without a signal: ``WaitTimeout`` fails the task, or with
        ``on_timeout="continue"`` the wait returns None."""

    def text_stream(self, name: str) -> AbstractAsyncContextManager[TextStream]:
        """``async with ctx.text_stream("answer") as out: await out.write(token)``: text
        streamed live to followers as it is written, and recorded once, whole, as a ``text``
        event when the block ends normally."""

