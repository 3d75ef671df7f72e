"""Starting a task of a limited type: the 'started' event goes through ts_start_limited
(migration 070), which counts the running tasks of the type (and key) under advisory locks
and refuses when a limit is full.

A refused task stays pending. The first refusal of a wait appends one 'waiting' event (its
stream says why) and hands over to a job for that new pending state (the job id follows the
task's last event, see ``queue.job_id``); later refusals append nothing: the job runs again
after a delay that grows with the wait (0.2 s doubling to 2 s, with jitter).
"""

import logging
import random
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
from arq.connections import ArqRedis

from taskstream.core import queue, store
from taskstream.core.batcher import Batcher
from taskstream.core.eventlog import EventLog
from taskstream.core.events import NewEvent
from taskstream.core.limits import (
    CONCURRENCY_KEY,
    ConcurrencyKeyError,
    LimitReason,
    concurrency_key,
)
from taskstream.core.pending import append_pending
from taskstream.core.settings import Settings
from taskstream.core.states import EventType
from taskstream.declaration import TaskDef

log = logging.getLogger(__name__)

FIRST_DELAY: Final = 0.2
MAX_DELAY: Final = 2.0


class Starter(Batcher[store.LimitedStart, "tuple[store.Appended, store.Limited | None]"]):
    """The starts of limited tasks whose jobs a worker took together: one transaction, one
    flush and one publish (persist, then publish) for the batch."""

    def __init__(self, pool: asyncpg.Pool, eventlog: EventLog) -> None:
        super().__init__("limited-starts", 500)
        self._pool = pool
        self._eventlog = eventlog

    async def try_start(self, item: store.LimitedStart
                        ) -> tuple[store.Appended, store.Limited | None]:
        return await self._submit(item)

    async def _commit(self, items: list[store.LimitedStart]
                      ) -> list[tuple[store.Appended, store.Limited | None]]:
        results = await store.start_limited(self._pool, items)
        await self._eventlog.publish([a.event for a, _ in results if a.event is not None])
        return results


async def start(starter: Starter, eventlog: EventLog, arq: ArqRedis, settings: Settings,
                task: store.Task, spec: TaskDef[Any, Any], started: NewEvent
                ) -> store.Appended:
    """Append ``started`` if a slot is free (flushed and published). Refused: outcome
    LIMITED (the wait is recorded and the task's next job queued), or RunAgainLater."""
    key = task.options.get(CONCURRENCY_KEY)
    if key is None and spec.key is not None:
        try:  # stored before its type had a key function
            key = concurrency_key(spec, task.params, task.owner)
        except ConcurrencyKeyError as exc:
            log.warning("task %s: %s; counted without a key", task.task_id, exc)
    res, limited = await starter.try_start(
        store.LimitedStart(started, spec.limit, key, spec.key_limit))
    if limited is None:
        return res
    if limited.waiting_since is not None:
        waited = (datetime.now(UTC) - limited.waiting_since).total_seconds()
        raise queue.RunAgainLater(defer=delay(waited))
    by_type = limited.reason == LimitReason.LIMIT
    cap = spec.limit if by_type else spec.key_limit
    what = f"{spec.name!r}" if by_type else f"{spec.name!r} for key {key!r}"
    data: dict[str, Any] = {"reason": limited.reason, "running": limited.running, "limit": cap}
    if not by_type:
        data["key"] = key
    await append_pending(eventlog, arq, settings, NewEvent(
        task_id=task.task_id, owner=task.owner, type=EventType.WAITING,
        message=f"waiting: {limited.running} of {cap} {what} running", data=data,
    ), options=task.options, defer_by=delay(0.0))
    return res


def delay(waited: float) -> float:
    """The next try of a waiting task: about as long as it has waited, 0.2 s to 2 s, with
    jitter so that the waiting tasks of a type do not all try at once."""
    base = min(MAX_DELAY, max(FIRST_DELAY, waited))
    return base * (0.75 + random.random() / 2)  # noqa: S311 - jitter, not cryptography
