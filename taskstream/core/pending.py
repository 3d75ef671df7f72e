"""How a task becomes pending: its pending event is durable (and published) first, then its
job goes on the queue. Submission, re-drive, retry and re-queue all take this path (a
submission publishes and queues at the same time, once durable: ``EventLog.publish``'s
``then``).

The order matters: a worker that takes the job must find the pending state in PostgreSQL.
If Redis refuses the job, the task stays pending and the sweeper enqueues it under the same
deterministic job id (``queue.job_id``), so nothing is lost and nothing runs twice.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from taskstream.core import queue
from taskstream.core.eventlog import EventLog
from taskstream.core.events import NewEvent
from taskstream.core.settings import Settings
from taskstream.core.states import Outcome, Status, target
from taskstream.core.store import Appended

log = logging.getLogger(__name__)


async def enqueue_pending(arq: ArqRedis, settings: Settings, jobs: Sequence[queue.Job],
                          *, defer_by: float | None = None) -> int:
    """Queue the jobs of tasks whose pending event (``Job.seq``) is durable; returns how
    many were new. Redis away: logged, and left to the sweeper."""
    if not jobs:
        return 0
    try:
        return await queue.enqueue(arq, settings, jobs, defer_by=defer_by)
    except (RedisError, OSError) as exc:
        log.warning("enqueue of %d tasks failed (%s); the sweeper will enqueue them",
                    len(jobs), exc)
        return 0


async def append_pending(eventlog: EventLog, arq: ArqRedis, settings: Settings,
                         event: NewEvent, *, options: Mapping[str, Any] | None,
                         defer_by: float | None = None) -> Appended:
    """Append an event that makes a task pending (a re-drive, a retry, a re-queue), then
    queue its job, with the priority and start time in the task's ``options``. Returns the
    append's outcome; a refused event queues nothing."""
    if target(event.type) != Status.PENDING:
        raise ValueError(f"{event.type} does not make a task pending")
    done = await eventlog.append(event)
    if done.outcome == Outcome.OK and done.event is not None:
        job = queue.Job.of(done.event.task_id, done.event.seq, options)
        await enqueue_pending(arq, settings, [job], defer_by=defer_by)
    return done
