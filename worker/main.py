"""The worker process: ``python -m worker`` (the Procfile's ``worker:`` line).

Builds the settings explicitly, then runs an arq ``Worker`` whose only job function is the
runtime's ``run_task``. Pools are opened in ``on_startup`` and closed in ``on_shutdown``,
reachable from jobs through the typed context.
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from typing import Any, TypedDict

import asyncpg
from arq.worker import Retry, Worker, func
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core import queue
from core.constants import RUN_TASK_FUNCTION, control_channel, queue_name
from core.db import create_pool
from core.eventlog import TRANSIENT_DB_ERRORS, EventLog
from core.queue import redis_settings
from core.serialization import deserialize, serialize
from core.settings import Settings
from worker import sweeper
from worker.runtime import Runtime
from worker.tasks import load_all

log = logging.getLogger("worker")


class WorkerContext(TypedDict):
    settings: Settings
    pool: asyncpg.Pool
    redis: Redis
    eventlog: EventLog
    runtime: Runtime
    control: "asyncio.Task[None]"
    sweeper: "asyncio.Task[None]"


class ResilientWorker(Worker):
    """arq's worker, except that Redis going away does not kill it: polling pauses and
    running tasks keep going (they write to PostgreSQL, not Redis)."""

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            log.warning("queue poll failed (%s); retrying", exc)
            await asyncio.sleep(1.0)


async def run_task(ctx: dict[str, Any], task_id: str) -> str:
    runtime: Runtime = ctx["runtime"]
    try:
        return await runtime.run(task_id)
    except TRANSIENT_DB_ERRORS as exc:
        # PostgreSQL away before the task was claimed: let arq run this job again shortly
        # (the sweeper would also find it pending, but later).
        log.warning("job for %s deferred: database unavailable (%s)", task_id, exc)
        raise Retry(defer=1.0) from exc


async def _listen_control(redis: Redis, settings: Settings, runtime: Runtime) -> None:
    """Cancellation requests arrive on one control channel; the worker running the task acts."""
    delay = 0.1
    while True:
        try:
            async with redis.pubsub() as ps:
                await ps.subscribe(control_channel(settings.namespace))
                delay = 0.1
                async for msg in ps.listen():
                    if msg.get("type") != "message":
                        continue
                    try:
                        body = json.loads(msg["data"])
                    except ValueError:
                        continue
                    if isinstance(body, dict) and isinstance(body.get("cancel"), str):
                        runtime.request_cancel(body["cancel"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away: reconnect with backoff
            log.warning("control channel lost (%s); reconnecting", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def build_worker(settings: Settings, *, burst: bool = False,
                 worker_id: str | None = None) -> Worker:
    worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    async def startup(ctx: dict[str, Any]) -> None:
        pool = await create_pool(settings.database_url, min_size=settings.db_pool_min,
                                 max_size=settings.db_pool_max)
        redis: Redis = ctx["redis"]
        eventlog = EventLog(pool, redis, settings.namespace,
                            max_batch=settings.eventlog_max_batch)
        eventlog.start()
        runtime = Runtime(settings=settings, pool=pool, eventlog=eventlog, arq=ctx["redis"],
                          worker_id=worker_id, implementations=load_all())
        ctx.update(settings=settings, pool=pool, eventlog=eventlog, runtime=runtime,
                   control=asyncio.create_task(_listen_control(redis, settings, runtime)),
                   sweeper=asyncio.create_task(
                       sweeper.run_forever(pool, ctx["redis"], eventlog, runtime, settings)))

    async def shutdown(ctx: dict[str, Any]) -> None:
        for name in ("control", "sweeper"):
            bg = ctx.get(name)
            if bg is not None:
                bg.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bg
        if "eventlog" in ctx:
            await ctx["eventlog"].close()
        if "pool" in ctx:
            await ctx["pool"].close()

    return ResilientWorker(
        functions=[func(run_task, name=RUN_TASK_FUNCTION, max_tries=1_000_000)],
        queue_name=queue_name(settings.namespace),
        redis_settings=redis_settings(settings),
        job_serializer=serialize,
        job_deserializer=deserialize,
        on_startup=startup,
        on_shutdown=shutdown,
        max_jobs=settings.worker_max_jobs,
        poll_delay=settings.worker_poll_delay,
        health_check_interval=settings.worker_health_check_interval,
        job_timeout=queue.arq_job_timeout(settings),
        keep_result=0,
        burst=burst,
        handle_signals=not burst,
        # SIGTERM: stop taking jobs, give running ones this long, then re-queue the rest.
        job_completion_wait=settings.shutdown_grace,
    )


def use_uvloop() -> None:
    """Run the worker on uvloop (arq takes whatever loop is current when it is built): the
    event loop's own overhead is a large share of a progress event's cost in the worker."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return
    asyncio.set_event_loop(uvloop.new_event_loop())


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    use_uvloop()
    build_worker(Settings()).run()


if __name__ == "__main__":
    main()
