"""What a running task sees: ``TaskContext``, the API task code uses to report.

Reports are pipelined: ``progress``, ``log`` and ``partial`` return once the event is queued
for the worker's group-committed event log (so a task that reports often is not slowed to
one database round trip per report); order is kept, and ``flush()`` waits until everything
reported is durable and published. A task that reports faster than the log can write waits
at its next report.

Cancellation reaches task code as ``asyncio.CancelledError`` at its next ``await``: clean up
in ``finally`` (or ``except CancelledError: ...; raise``). The soft time limit raises
``SoftTimeLimitExceeded`` once, at the first report past it; the hard limit cancels.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable


class SoftTimeLimitExceeded(Exception):
    """Raised once, at the first report after the soft time limit: clean up, or return a
    partial result. The hard limit cancels the task some time later."""


class AttemptSuperseded(Exception):
    """This attempt's reports are refused: the task was cancelled or re-run elsewhere. Let
    it propagate; the task's outcome is decided by whoever superseded this attempt."""


class TextOut(Protocol):
    """A text stream being written (``ctx.text_stream``)."""

    async def write(self, delta: str) -> None:
        """Append model output; it reaches followers as token frames within ~50 ms."""

    @property
    def text(self) -> str:
        """The text so far."""


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

    def text_stream(self, name: str) -> AbstractAsyncContextManager[TextOut]:
        """``async with ctx.text_stream("answer") as out: await out.write(delta)``: live
        token frames while it runs; on a clean exit one durable ``text`` event
        ``{"stream", "text", "length"}``."""
