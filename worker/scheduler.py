"""Cron schedules, fired by every worker: each slot once, whichever worker gets there first.

At start-up a worker upserts the schedules its task modules declare (``@task(cron=...)``,
owned by ``SCHEDULE_OWNER``, one per type, so a re-deploy updates rather than duplicates)
and disables those whose declaration is gone. Then it loops: claim due schedules (rows held
by another worker are skipped), create their slots' tasks and advance them in one
transaction (``store.fire_due_schedules``), then publish the created events and enqueue the
tasks: persist, then publish, as a submission does. A worker that dies after the commit
leaves pending tasks that the sweeper enqueues.
"""

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
from arq.connections import ArqRedis
from pydantic import ValidationError

from taskstream.core import queue, schedules, store
from taskstream.core.constants import SCHEDULE_OWNER
from taskstream.core.eventlog import EventLog
from taskstream.core.pending import enqueue_pending
from taskstream.core.settings import Settings
from taskstream.core.tasktypes import Catalogue, scheduled

log = logging.getLogger(__name__)

#: Schedules one transaction claims; more due than this: the loop goes round again at once.
CLAIM_LIMIT = 50
#: Shortest sleep between claims, so that workers woken for the same slot do not spin.
MIN_SLEEP = 0.02
RETRY_UNPLANNABLE = timedelta(hours=1)


async def declare(pool: asyncpg.Pool, catalogue: Catalogue, settings: Settings) -> None:
    """Upsert the declared schedules; disable the declared schedules whose type this worker
    loads without a cron, or that no live worker loads any more."""
    now = datetime.now(UTC)
    declared: list[store.NewSchedule] = []
    for spec in catalogue.all():
        if spec.cron is None:
            continue
        try:
            schedules.check(spec.cron)
            params = catalogue.validate(spec.name, spec.cron_params).model_dump(mode="json")
        except (schedules.BadSchedule, ValidationError) as exc:
            log.error("task type %r: its cron schedule is not declared: %s", spec.name, exc)
            continue
        declared.append(store.NewSchedule(
            owner=SCHEDULE_OWNER, task_type=spec.name, params=params, cron=spec.cron,
            timezone="UTC", misfire=schedules.Misfire.SKIP,
            next_run_at=schedules.next_after(spec.cron, "UTC", now)))
    await store.declare_schedules(pool, SCHEDULE_OWNER, declared)
    names = {d.task_type for d in declared}
    _, live = await store.live_worker_types(pool, settings.lease_seconds)
    gone = [t for t in await store.declared_schedule_types(pool, SCHEDULE_OWNER)
            if t not in names and (t in catalogue or t not in live)]
    if gone:
        log.warning("declared schedules of %s disabled: no longer declared", sorted(gone))
        await store.disable_declared_schedules(pool, SCHEDULE_OWNER, gone)


class Firing:
    """Turns a claimed schedule into the tasks its due slots create (``store.Planner``)."""

    def __init__(self, catalogue: Catalogue, settings: Settings) -> None:
        self._catalogue = catalogue
        self._grace = settings.schedule_misfire_grace

    def __call__(self, due: store.DueSchedule, now: datetime
                 ) -> tuple[list[store.NewTask], datetime]:
        try:
            plan = schedules.plan(due.cron, due.timezone, schedules.Misfire(due.misfire),
                                  due.next_run_at, now, self._grace)
        except Exception as exc:  # e.g. a timezone this machine's tz database lacks
            log.error("schedule %s cannot be computed here (%s); retrying in an hour",
                      due.schedule_id, exc)
            return [], now + RETRY_UNPLANNABLE
        if plan.missed:
            log.warning("schedule %s missed slots before %s (%s)", due.schedule_id,
                        now.isoformat(), due.misfire)
        spec = self._catalogue.get(due.task_type)
        max_attempts = spec.max_attempts if spec is not None else 1
        options = scheduled({}, spec) if spec is not None else {}  # the type's priority
        return [store.NewTask(owner=due.owner, task_type=due.task_type, params=due.params,
                              max_attempts=max_attempts, options=options,
                              idempotency_key=schedules.slot_key(due.schedule_id, slot))
                for slot in plan.fire], plan.next_run_at


async def fire_once(pool: asyncpg.Pool, arq: ArqRedis, eventlog: EventLog, firing: Firing,
                    settings: Settings) -> int:
    """One claim: returns how many schedules it claimed."""
    claimed, created = await store.fire_due_schedules(pool, firing, CLAIM_LIMIT)
    if created:
        await eventlog.publish([ev for _, ev in created])  # durable first, then on Redis
        await enqueue_pending(arq, settings, [queue.Job.of(ev.task_id, ev.seq, task.options)
                                              for task, ev in created])
    return claimed


async def run_forever(pool: asyncpg.Pool, arq: ArqRedis, eventlog: EventLog,
                      catalogue: Catalogue, settings: Settings) -> None:
    """Fire due schedules, then sleep until the next is due (at most ``schedule_interval``,
    so that new and resumed schedules are seen). Failures are logged and retried."""
    firing = Firing(catalogue, settings)
    while True:
        delay = settings.schedule_interval
        try:
            if await fire_once(pool, arq, eventlog, firing, settings) >= CLAIM_LIMIT:
                delay = 0.0
            else:
                wait = await store.seconds_to_next_schedule(pool)
                if wait is not None:
                    delay = min(delay, wait)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("schedules: %s", exc)
        await asyncio.sleep(max(MIN_SLEEP, delay))
