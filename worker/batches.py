"""The batch driver: where a batch parent's lifecycle lives.

A parent has no code to run. Every ``batch_tick`` seconds each worker claims the open
batches no other worker holds (``FOR UPDATE SKIP LOCKED``) and, for each, from the
aggregate that the child events keep (migration 100) and the children that ended since:

1. starts the parent once a child has left 'pending';
2. when the policy broke with children still going, cancels them (fail fast);
3. appends ONE 'aggregate' event when something changed — counts, percent and the
   terminal events of the children that ended since the last one — so the parent's stream
   carries at most about one event per tick however fast its children report;
4. ends the parent once every child has ended: cancelled (by request), failed (policy) or
   completed. The state machine lets it end once; the batch row is marked done in the same
   transaction that claimed it, so a driver killed half-way leaves it to the next tick.
"""

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
from redis.asyncio import Redis

from taskstream.core import batches, store, store_batches
from taskstream.core.backoff import Backoff
from taskstream.core.db import TRANSIENT_DB_ERRORS
from taskstream.core.eventlog import EventLog
from taskstream.core.events import NewEvent
from taskstream.core.settings import Settings
from taskstream.core.states import EventType, FailureReason, Outcome, Status, is_terminal
from taskstream.core.store_batches import Batch

log = logging.getLogger(__name__)

#: Batches one tick looks at; the oldest first, the rest in the next tick.
_CLAIM = 200


async def tick(pool: asyncpg.Pool, eventlog: EventLog, redis: Redis, settings: Settings) -> int:
    """One pass over the open batches; returns how many it drove."""
    async with store.transaction(pool) as conn:
        claimed = await store_batches.claim_open(conn, _CLAIM)
        # The batches' events go to the event log together (one group commit for all);
        # their marks then go on this transaction's connection, one after another.
        marks = await asyncio.gather(*(_drive(b, pool, eventlog, redis, settings)
                                       for b in claimed))
        for b, (emitted, done, breached) in zip(claimed, marks, strict=True):
            await store_batches.mark(conn, b, emitted, done=done, breached=breached)
    return len(claimed)


async def _append(eventlog: EventLog, b: Batch, type: EventType, **kw: Any) -> Outcome:
    done = await eventlog.append(NewEvent(task_id=b.batch_id, owner=b.owner, type=type, **kw))
    if done.outcome == Outcome.OK and done.status:
        b.parent_status = done.status
    return done.outcome


async def _drive(b: Batch, pool: asyncpg.Pool, eventlog: EventLog, redis: Redis,
                 settings: Settings) -> tuple[dict[str, Any], bool, bool]:
    """One batch's step; returns its mark: (aggregate emitted, done, policy breached)."""
    agg = b.aggregate
    assert agg is not None
    if is_terminal(b.parent_status):  # ended, but the mark was lost with its driver
        return b.emitted or {}, True, b.breached
    if b.parent_status == Status.PENDING and agg.counts[Status.PENDING] < agg.total:
        await _append(eventlog, b, EventType.STARTED, message=batches.summary(agg))
    failed = batches.broken(b.policy, b.threshold, agg)
    breached = b.breached
    if failed and not breached and not agg.all_ended and not b.cancel_requested:
        breached = True
        await batches.cancel_children(pool, eventlog, redis, settings.namespace,
                                      uuid.UUID(b.batch_id), batches.failure(b, agg))
    now = batches.state(b, agg)
    if now != b.emitted or b.ends:
        await _append(eventlog, b, EventType.AGGREGATE, progress=agg.percent,
                      message=batches.summary(agg),
                      data={**now, "finished": [e.to_json() for e in b.ends]})
    done = False
    if agg.all_ended:
        if b.cancel_requested:
            end = await _append(eventlog, b, EventType.CANCELLED,
                                error=f"batch cancelled by request; {batches.summary(agg)}")
        elif failed:
            end = await _append(eventlog, b, EventType.FAILED, error=batches.failure(b, agg),
                                data={"reason": FailureReason.POLICY})
        else:
            if b.parent_status == Status.PENDING:
                await _append(eventlog, b, EventType.STARTED)
            end = await _append(eventlog, b, EventType.COMPLETED, result=now,
                                message=batches.summary(agg))
        done = end in (Outcome.OK, Outcome.ILLEGAL)
    return now, done, breached


async def run_forever(pool: asyncpg.Pool, eventlog: EventLog, redis: Redis,
                      settings: Settings) -> None:
    backoff = Backoff()
    while True:
        try:
            await tick(pool, eventlog, redis, settings)
            backoff.reset()
            await asyncio.sleep(settings.batch_tick)
        except asyncio.CancelledError:
            raise
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("batch driver: database unavailable (%s)", exc)
            await backoff.sleep()
        except Exception:  # never let one bad batch stop the driver
            log.exception("batch driver tick failed")
            await backoff.sleep()
