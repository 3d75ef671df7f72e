"""The worker process: ``python -m worker`` (the Procfile's ``worker:`` line).

Builds the settings explicitly, then runs the queue's arq worker (``core.queue``) whose only
job function is the runtime's ``run_task``. Start-up is a stack (``AsyncExitStack``): the
database pool, the event log, the runtime and the background loops are closed in reverse
order at shutdown, and also when start-up fails half-way.
"""

import asyncio
import logging
import os
import socket
import uuid
from contextlib import AsyncExitStack
from typing import Any

from arq.connections import ArqRedis

from taskstream.core import control, logs, metrics, queue, store, tracing
from taskstream.core.backoff import Backoff
from taskstream.core.constants import control_channel
from taskstream.core.db import TRANSIENT_DB_ERRORS, close_pool, create_pool
from taskstream.core.eventlog import EventLog
from taskstream.core.settings import Settings
from taskstream.core.states import RunOutcome
from taskstream.core.tasktypes import Catalogue
from worker import batches, retention, scheduler, sweeper, webhooks
from worker.runtime import Runtime

log = logging.getLogger("worker")

#: Cancellations (a second apart) a background loop gets at shutdown before it is left.
STOP_TRIES = 10


async def run_task(ctx: dict[str, Any], task_id: str) -> RunOutcome:
    runtime: Runtime = ctx["runtime"]
    try:
        return await runtime.run(task_id)
    except TRANSIENT_DB_ERRORS as exc:
        # PostgreSQL away before the task was claimed: let arq run this job again shortly
        # (the sweeper would also find it pending, but later).
        log.warning("job for %s deferred: database unavailable (%s)", task_id, exc)
        raise queue.RunAgainLater(defer=1.0) from exc


async def _listen_control(redis: ArqRedis, settings: Settings, runtime: Runtime) -> None:
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
                    task_id = control.decode_cancel(msg["data"])
                    if task_id is not None:
                        runtime.request_cancel(task_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away: reconnect with backoff
            log.warning("control channel lost (%s); reconnecting", exc)
            await backoff.sleep()


async def _stop(task: "asyncio.Task[None]") -> None:
    """Cancel a background loop and wait for it. One still running a second after its
    cancellation (a library swallowed it) is named in the log and cancelled again, so the
    shutdown goes on instead of hanging until the platform's SIGKILL."""
    for waited in range(1, STOP_TRIES + 1):
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
        if task.done():
            break
        log.warning("background loop %s still running %ds after its cancellation",
                    task.get_name(), waited)
    if task.done() and not task.cancelled():
        task.result()  # its own error, if it ended with one


async def _start(ctx: dict[str, Any], stack: AsyncExitStack, settings: Settings,
                 worker_id: str) -> None:
    """Everything a job needs, each piece registered on ``stack`` as soon as it exists."""
    redis: ArqRedis = ctx["redis"]  # arq's own connection
    pool = await create_pool(settings.database_url, min_size=settings.db_pool_min,
                             max_size=settings.db_pool_max,
                             statement_cache_size=settings.db_statement_cache_size,
                             wait=settings.startup_db_wait)
    stack.push_async_callback(close_pool, pool)
    eventlog = EventLog(pool, redis, settings.namespace, max_batch=settings.eventlog_max_batch)
    eventlog.start()
    stack.push_async_callback(eventlog.close)
    catalogue = Catalogue.load(settings)
    if "document_process" in catalogue or "reindex" in catalogue:
        from taskstream.builtin.embedding import warm_in_background

        warm_in_background(settings)  # the model loads while the worker starts taking jobs
    runtime = Runtime(settings=settings, pool=pool, eventlog=eventlog, arq=redis,
                      worker_id=worker_id, catalogue=catalogue)
    stack.push_async_callback(runtime.close)
    await store.announce_worker_types(pool, worker_id, catalogue.versions())
    stack.push_async_callback(store.forget_worker_types, pool, worker_id)
    await scheduler.declare(pool, catalogue, settings)
    ctx["runtime"] = runtime
    loops = {"control": _listen_control(redis, settings, runtime),
             "sweeper": sweeper.run_forever(pool, redis, eventlog, runtime, settings),
             "scheduler": scheduler.run_forever(pool, redis, eventlog, catalogue, settings),
             "batches": batches.run_forever(pool, eventlog, redis, settings),
             "webhooks": webhooks.run_forever(pool, settings),
             "retention": retention.run_forever(pool, settings)}
    for name, loop in loops.items():
        stack.push_async_callback(_stop, asyncio.create_task(loop, name=name))


def build_worker(settings: Settings, *, burst: bool = False,
                 worker_id: str | None = None) -> queue.BatchingWorker:
    worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    async def startup(ctx: dict[str, Any]) -> None:
        stack = AsyncExitStack()
        try:
            await _start(ctx, stack, settings, worker_id)
        except BaseException:
            await stack.aclose()
            raise
        ctx["stack"] = stack

    async def shutdown(ctx: dict[str, Any]) -> None:
        stack: AsyncExitStack | None = ctx.pop("stack", None)
        if stack is not None:
            await stack.aclose()

    return queue.build_worker(settings, run_task, on_startup=startup, on_shutdown=shutdown,
                              burst=burst)


def use_uvloop() -> None:
    """Run the worker on uvloop (arq takes whatever loop is current when it is built): the
    event loop's own overhead is a large share of a progress event's cost in the worker."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return
    asyncio.set_event_loop(uvloop.new_event_loop())


def main() -> None:
    settings = Settings()
    logs.configure(settings.log_format)
    tracing.setup(settings.tracing, "taskstream-worker")
    use_uvloop()
    try:
        build_worker(settings).run()
    finally:
        tracing.shutdown()
        metrics.process_exit()


if __name__ == "__main__":
    main()
