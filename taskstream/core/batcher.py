"""Group commit, the pattern the event log and submissions share: callers queue an item and
wait; one runner takes everything queued (up to ``max_batch``), commits it in one go, and
answers every caller — so under load N items cost one commit, and when idle one item costs
no extra wait.

A batcher with a second stage (``_settle``, e.g. the event log's flush and publish) answers
its callers only after it, and runs it for one batch while the next batch's ``_commit``
goes on: the two round trips overlap instead of adding up. Second stages run one at a time,
in batch order, and at most one behind the commits."""

import asyncio
import contextlib
import logging
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    #: Subclasses with a ``_settle`` stage set this.
    settles = False

    def __init__(self, name: str, max_batch: int) -> None:
        self._name = name
        self._max_batch = max_batch
        # A plain list and one wake-up future, not an asyncio.Queue: the queue's put, get and
        # task_done (and the Event its join keeps) were a tenth of a worker's CPU per event.
        self._items: list[tuple[T, asyncio.Future[R]]] = []
        self._wake: asyncio.Future[None] | None = None  # the runner waits for items
        self._unanswered = 0  # queued or in a batch not yet answered
        self._drained: asyncio.Future[None] | None = None  # close() waits for none
        self._runner: asyncio.Task[None] | None = None
        self._tail: asyncio.Task[None] | None = None  # the second stage in flight

    async def _commit(self, items: list[T]) -> list[R]:
        """Commit a batch; one result per item, in order. Raising fails every caller."""
        raise NotImplementedError

    async def _settle(self, items: list[T], results: list[R]) -> None:
        """The second stage of a committed batch (``settles``); raising fails every
        caller of the batch."""

    async def settled(self) -> None:
        """Wait for the second stage in flight, if any (its failure is its callers')."""
        tail = self._tail
        if tail is not None and tail is not asyncio.current_task():
            await asyncio.wait([tail])

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=self._name)

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._runner is None:
            return
        if self._unanswered:
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)  # one close cancelled leaves it for another
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner
        self._runner = None

    async def _submit(self, item: T) -> R:
        return await self._enqueue(item)

    def _enqueue(self, item: T) -> "asyncio.Future[R]":
        """Queue an item without waiting; the future resolves once its batch is committed."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._items.append((item, fut))
        self._unanswered += 1
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._items:
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
            batch = self._items[:self._max_batch]
            del self._items[:self._max_batch]
            try:
                results = await self._commit([item for item, _ in batch])
            except Exception as exc:
                self._answer(batch, exc)
                continue
            if not self.settles:
                self._answer(batch, results)
                continue
            await self.settled()  # at most one second stage behind
            self._tail = asyncio.create_task(self._second(batch, results),
                                             name=f"{self._name}-settle")

    async def _second(self, batch: list[tuple[T, "asyncio.Future[R]"]],
                      results: list[R]) -> None:
        try:
            await self._settle([item for item, _ in batch], results)
        except Exception as exc:
            self._answer(batch, exc)
        else:
            self._answer(batch, results)

    def _answer(self, batch: list[tuple[T, "asyncio.Future[R]"]],
                outcome: "list[R] | Exception") -> None:
        """Every caller of the batch gets its result, or the batch's error."""
        if isinstance(outcome, Exception):
            # One line, no traceback: each caller receives the exception and handles it
            # (a database or Redis outage is routine) or lets it reach a log of its own.
            log.warning("%s: batch of %d failed: %r", self._name, len(batch), outcome)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(outcome)
                    # Marked as seen: the failure is logged above, once; a caller that
                    # queued without waiting (a task's progress) may end before it looks.
                    fut.exception()
        else:
            for (_, fut), res in zip(batch, outcome, strict=True):
                if not fut.done():
                    fut.set_result(res)
        self._unanswered -= len(batch)
        if not self._unanswered and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
