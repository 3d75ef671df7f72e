"""Persist, then publish: the group-committing event writer used by workers (and the API).

Concurrent ``append`` calls from many running tasks queue up while one batch is being written;
the next batch takes everything queued, so under load N events cost one round trip and one
commit. Only after the commit are the events published on Redis, pipelined, each on its task's
channel and its tenant's channel. PostgreSQL is the truth: a publish that fails is logged and
the streams catch up from the database (gap fill / hub resync).
"""

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core import store
from core.constants import task_channel, tenant_channel
from core.events import Event, NewEvent

log = logging.getLogger(__name__)

#: Errors after which the same batch is retried: the database is away, not the data wrong.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)

_Item = tuple[NewEvent, "asyncio.Future[store.Appended]"]


class EventLog:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, namespace: str, *,
                 max_batch: int = 1000) -> None:
        self._pool = pool
        self._redis = redis
        self._ns = namespace
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0  # observability: how well group commit is grouping
        self.events = 0

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="eventlog")

    async def close(self) -> None:
        """Flush what is queued, then stop."""
        if self._runner is None:
            return
        await self._queue.join()
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner
        self._runner = None

    async def append(self, event: NewEvent) -> store.Appended:
        """Return once the event is durable and published (or refused: illegal / fenced)."""
        fut: asyncio.Future[store.Appended] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((event, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self._write([e for e, _ in batch])
            except Exception as exc:  # a real error in the data: fail this batch's callers
                log.exception("event batch of %d refused", len(batch))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                self._done(len(batch))
                continue
            await self.publish([r.event for r in results if r.event is not None])
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
            self._done(len(batch))

    def _done(self, n: int) -> None:
        for _ in range(n):
            self._queue.task_done()

    async def _write(self, events: Sequence[NewEvent]) -> list[store.Appended]:
        delay = 0.05
        while True:
            try:
                results = await store.append_events(self._pool, events)
                self.batches += 1
                self.events += len(events)
                return results
            except TRANSIENT_DB_ERRORS as exc:
                # PostgreSQL briefly away: keep the events and try again; lose nothing.
                log.warning("event write failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        for attempt in range(3):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for ev in events:
                        raw = ev.encode()
                        pipe.publish(task_channel(self._ns, ev.task_id), raw)
                        pipe.publish(tenant_channel(self._ns, ev.owner), raw)
                    await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                log.warning("publish failed (%s), attempt %d", exc, attempt + 1)
                await asyncio.sleep(0.05 * (attempt + 1))
        log.error("dropped publish of %d events; streams will catch up from PostgreSQL",
                  len(events))

