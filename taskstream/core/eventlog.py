"""Persist, then publish: the group-committing event writer used by workers (and the API).

Concurrent ``append`` calls from many running tasks queue up while one batch is being written;
the next batch takes everything queued, so under load N events cost one round trip and one
commit. The batch commits asynchronously (migration 030: the tenant's counter row is unlocked
without waiting for the disk, so writers from every process overlap), then ``ts_flush()``
makes it durable — concurrent flushes from all processes share one WAL fsync. Only then are
the events published on Redis, pipelined, each on its task's channel and its tenant's
channel, and only then does ``append`` return. The flush and publish of one batch overlap
the append of the next (a second stage, ``core.batcher``), in batch order. PostgreSQL is the
truth: a publish that fails is logged and the streams catch up from the database (gap fill /
hub resync).

Code that appends events outside this class (``store.create_tasks``) must call ``flush()``
or ``publish()`` before it tells anyone about them.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import msgpack
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from taskstream.core import metrics, store
from taskstream.core.backoff import Backoff
from taskstream.core.batcher import Batcher
from taskstream.core.constants import task_channel, tenant_channel
from taskstream.core.db import TRANSIENT_DB_ERRORS
from taskstream.core.events import Event, NewEvent

log = logging.getLogger(__name__)

#: ARGV[1] = one msgpack array: task channel, tenant channel, message; repeated per event.
#: One argument, not three per event: redis-py encodes and frames every argument in Python,
#: and that was a tenth of a worker's time per event (Redis's Lua has cmsgpack built in).
_PUBLISH_LUA = """
local a = cmsgpack.unpack(ARGV[1])
for i = 1, #a, 3 do
    redis.call('PUBLISH', a[i], a[i + 2])
    redis.call('PUBLISH', a[i + 1], a[i + 2])
end
return #a / 3
"""
#: Events per script call, so that one call never blocks Redis for long.
_PUBLISH_CHUNK = 500


class EventsLost(RuntimeError):
    """Events that a transaction appended are not in the database after all (it was lost
    in a PostgreSQL crash before reaching the disk)."""


class EventLog(Batcher[NewEvent, store.Appended]):
    def __init__(self, pool: asyncpg.Pool, redis: Redis, namespace: str, *,
                 max_batch: int = 1000) -> None:
        super().__init__("eventlog", max_batch)
        self._pool = pool
        self._redis = redis
        self._ns = namespace
        self._script = redis.register_script(_PUBLISH_LUA)
        self._script_ok = True
        self.batches = 0  # observability: how well group commit is grouping
        self.events = 0

    async def append(self, event: NewEvent) -> store.Appended:
        """Return once the event is durable and published (or refused: illegal / fenced)."""
        return await self._submit(event)

    def enqueue(self, event: NewEvent) -> "asyncio.Future[store.Appended]":
        """Queue the event and return at once; the future resolves as ``append`` returns.
        Events queued by one caller are written in the order queued."""
        return self._enqueue(event)

    # Two stages (see core.batcher): a batch is appended (its transaction commits
    # asynchronously), then made durable and published while the next batch is appended.

    settles = True
    _recovering = False  # a flush failed: its batch may be written again, before any other

    async def _commit(self, events: list[NewEvent]) -> list[store.Appended]:
        return await self._append(events)

    async def _settle(self, events: list[NewEvent], results: list[store.Appended]) -> None:
        await self._durable(events, results)
        await self._publish([r.event for r in results if r.event is not None])

    async def _durable(self, events: Sequence[NewEvent], results: list[store.Appended]) -> None:
        """Make the appended batch durable; events a database crash lost are written again
        (``results`` updated in place)."""
        backoff = Backoff()
        verify = False
        while True:
            try:
                if not verify:
                    await store.flush(self._pool)
                    self._recovering = False
                    self.batches += 1
                    self.events += len(events)
                    metrics.EVENTS.inc(len(events))  # per batch, not per event
                    metrics.BATCH_SIZE.observe(len(events))
                    return
                # The flush failed: PostgreSQL may have restarted before our asynchronous
                # commit reached the disk. Whatever is not there any more is written again.
                lost = await self._missing([r.event for r in results if r.event is not None])
                redo = [i for i, r in enumerate(results)
                        if r.event is not None and (r.event.task_id, r.event.seq) in lost]
                if redo:
                    log.warning("%d events lost in a database restart; writing them again",
                                len(redo))
                    again = await self._append([events[i] for i in redo])
                    for i, res in zip(redo, again, strict=True):
                        results[i] = res
                verify = False
            except TRANSIENT_DB_ERRORS as exc:
                self._recovering = True
                log.warning("event flush failed (%s); retrying in %.2fs", exc, backoff.delay)
                await backoff.sleep()
                verify = True

    async def _append(self, events: Sequence[NewEvent]) -> list[store.Appended]:
        backoff = Backoff()
        while True:
            if self._recovering:
                # The batch before may have lost events in a crash and is writing them
                # again: they go first, or a task's events would be stored out of order.
                await self.settled()
            try:
                return await store.append_events(self._pool, events)
            except TRANSIENT_DB_ERRORS as exc:
                # PostgreSQL briefly away: keep the events and try again; lose nothing.
                log.warning("event write failed (%s); retrying in %.2fs", exc, backoff.delay)
                await backoff.sleep()
                await self.settled()  # as above, once the database is back

    async def _missing(self, events: Sequence[Event]) -> set[tuple[str, int]]:
        """Flush, and return the (task_id, seq) of those events that are not in the table."""
        keys = {(e.task_id, e.seq) for e in events}
        return keys - await store.flush_and_find(self._pool, list(keys))

    async def flush(self, events: Sequence[Event] = ()) -> None:
        """Make every commit so far durable. If the first try fails (PostgreSQL restarting),
        ``events`` are checked to be still there: an asynchronous commit that had not reached
        the disk is gone, and then nobody may be told of it (EventsLost)."""
        backoff = Backoff()
        for attempt in range(6):
            try:
                if attempt == 0 or not events:
                    await store.flush(self._pool)
                    return
                lost = await self._missing(events)
                if lost:
                    task_id, seq = min(lost)
                    raise EventsLost(f"event {seq} of task {task_id} is not stored")
                return
            except TRANSIENT_DB_ERRORS as exc:
                if attempt == 5:
                    raise
                log.warning("event flush failed (%s); retrying in %.2fs", exc, backoff.delay)
                await backoff.sleep()

    async def publish(self, events: Sequence[Event],
                      then: Callable[[], Awaitable[object]] | None = None) -> None:
        """Publish events appended outside the writer: made durable first, then sent. Flushes
        even with none: a caller that read rows others committed (an idempotent replay of a
        task another batch just created) must not answer before they are on disk.

        ``then`` (queueing the jobs of these events' tasks) runs once they are durable, at
        the same time as they are sent: a worker may then publish a task's ``started``
        before its ``created`` goes out, which a stream takes as a gap and fills from
        PostgreSQL (service.streams), so the order on Redis need not be kept; the two round
        trips overlap instead of adding up (a 1,000-task batch sends ~1,000 of each)."""
        await self.flush(events)
        if then is None:
            await self._publish(events)
        else:
            await asyncio.gather(self._publish(events), then())

    async def _publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        for attempt in range(3):
            try:
                for i in range(0, len(events), _PUBLISH_CHUNK):
                    await self._send(events[i:i + _PUBLISH_CHUNK])
                return
            except (RedisError, OSError) as exc:
                log.warning("publish failed (%s), attempt %d", exc, attempt + 1)
                await asyncio.sleep(0.05 * (attempt + 1))
        log.error("dropped publish of %d events; streams will catch up from PostgreSQL",
                  len(events))

    async def _send(self, events: Sequence[Event]) -> None:
        """Every event on its task's and its tenant's channel, in order, in one command.

        A script with one packed argument costs the client a fraction of what two PUBLISH
        commands per event in a pipeline do (redis-py packs every command in Python).
        Where scripting is refused, a pipeline does the same.
        """
        if self._script_ok:
            args: list[str] = []
            for ev in events:
                args += (task_channel(self._ns, ev.task_id), tenant_channel(self._ns, ev.owner),
                         ev.encode())
            try:
                await self._script(args=[msgpack.packb(args)])
                return
            except ResponseError as exc:
                if "NOSCRIPT" in str(exc):
                    raise
                log.warning("publish script refused (%s); using a pipeline", exc)
                self._script_ok = False
        async with self._redis.pipeline(transaction=False) as pipe:
            for ev in events:
                raw = ev.encode()
                pipe.publish(task_channel(self._ns, ev.task_id), raw)
                pipe.publish(tenant_channel(self._ns, ev.owner), raw)
            await pipe.execute()
