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
from collections.abc import Callable
from typing import Any, TypedDict

import asyncpg
from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.utils import to_ms
from arq.worker import Retry, Worker, func
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from core import queue
from core.backoff import Backoff
from core.batcher import Batcher
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


class _Finisher(Batcher[Callable[[Pipeline], None], None]):
    """arq's per-job end-of-run transaction, for every job that ends meanwhile in one."""

    def __init__(self, redis: Redis) -> None:
        super().__init__("arq-finish", 500)
        self._redis = redis

    async def finish(self, add: Callable[[Pipeline], None]) -> None:
        await self._submit(add)

    async def _commit(self, items: list[Callable[[Pipeline], None]]) -> list[None]:
        async with self._redis.pipeline(transaction=True) as tr:
            for add in items:
                add(tr)
            await tr.execute()
        return [None] * len(items)


class ResilientWorker(Worker):
    """arq's worker, except that Redis going away does not kill it (polling pauses and
    running tasks keep going: they write to PostgreSQL, not Redis), and that its per-job
    Redis bookkeeping is batched: a poll claims all the jobs it can take in one round trip
    (instead of four per job), and jobs that end together are finished in one transaction."""

    _finisher: _Finisher | None = None

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            log.warning("queue poll failed (%s); retrying", exc)
            await asyncio.sleep(1.0)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs with the same checks and markers (``queue.claim_jobs``), batched."""
        claimed = await queue.claim_jobs(self.pool, self.queue_name, job_ids,
                                         self.max_jobs - self.job_counter,
                                         int(self.in_progress_timeout_s * 1000))
        for job_id, score in claimed:
            await self.sem.acquire()  # free: at most max_jobs - job_counter were claimed
            self.job_counter += 1
            t = self.loop.create_task(self.run_job(job_id, score))
            t.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = t

    async def finish_job(self, job_id: str, finish: bool, result_data: bytes | None,
                         result_timeout_s: float | None, keep_result_forever: bool,
                         incr_score: int | None, keep_in_progress: float | None) -> None:
        """arq's finish_job, the same commands, queued into a shared transaction."""

        def add(tr: Pipeline) -> None:
            delete_keys = []
            in_progress_key = in_progress_key_prefix + job_id
            if keep_in_progress is None:
                delete_keys.append(in_progress_key)
            else:
                tr.pexpire(in_progress_key, to_ms(keep_in_progress) or 0)
            if finish:
                if result_data:
                    expire = None if keep_result_forever else result_timeout_s
                    tr.set(result_key_prefix + job_id, result_data, px=to_ms(expire))
                delete_keys += [retry_key_prefix + job_id, job_key_prefix + job_id]
                tr.zrem(abort_jobs_ss, job_id)
                tr.zrem(self.queue_name, job_id)
            elif incr_score:
                tr.zincrby(self.queue_name, incr_score, job_id)
            if delete_keys:
                tr.delete(*delete_keys)

        if self._finisher is None:
            self._finisher = _Finisher(self.pool)
            self._finisher.start()
        await self._finisher.finish(add)

    async def close(self) -> None:
        await super().close()
        if self._finisher is not None:
            await self._finisher.close()


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
    backoff = Backoff(first=0.1, cap=5.0)
    while True:
        try:
            async with redis.pubsub() as ps:
                await ps.subscribe(control_channel(settings.namespace))
                backoff.reset()
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
            await backoff.sleep()


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
        if "runtime" in ctx:
            await ctx["runtime"].close()
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
