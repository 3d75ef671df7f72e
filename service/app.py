"""The web process: ``uvicorn service.app:create_app --factory`` (the Procfile's ``web:``)."""

import asyncio
import gc
import logging
import secrets
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import resources
from types import FrameType
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig

from service import errors, sse
from service.deps import Resources
from service.fast_stream import StreamFirstAPI
from service.fast_submit import FastSubmit
from service.heap import HeapFreezer
from service.hub import Hub
from service.limits import BodyLimit, InflightGauge, StreamSlots, SubmitRate
from service.routes import routers
from service.stale import StaleStreams
from service.submissions import Submissions
from service.worker_types import WorkerTypes
from taskstream.core import logs, metrics, queue, redisconn, store, tracing
from taskstream.core.auth import KeyCache
from taskstream.core.constants import control_channel, hub_client_name
from taskstream.core.db import close_pool, create_engine, create_pool, until_reachable
from taskstream.core.eventlog import EventLog
from taskstream.core.settings import Settings
from taskstream.core.tasktypes import Catalogue

log = logging.getLogger(__name__)

_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
#: How long a starting web process waits for PostgreSQL to read its ticket-signing key.
_SECRET_WAIT = 30.0


def _end_streams_on_signal(hub: Hub) -> None:
    """On SIGTERM/SIGINT, end every open stream at once, then let the server's own handler
    run. Streams never end by themselves, so uvicorn would otherwise wait out its graceful
    timeout before a deploy completes; clients resume on another process. The hub ends each
    stream cleanly (the response finishes); sse-starlette's own watcher is told as well."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: FrameType | None,
                    previous: Callable[[int, FrameType | None], Any] = previous) -> None:
            loop.call_soon_threadsafe(hub.shutdown)
            sse.server_exiting()
            previous(signum, frame)

        signal.signal(sig, handler)


async def _open(stack: AsyncExitStack, settings: Settings) -> Resources:
    """The process's pools and background writers, each registered on ``stack`` as soon as
    it exists, so they close in reverse order — also when start-up fails half-way."""
    pool = await create_pool(settings.database_url, min_size=settings.db_pool_min,
                             max_size=settings.db_pool_max,
                             statement_cache_size=settings.db_statement_cache_size)
    stack.push_async_callback(close_pool, pool)
    engine = create_engine(settings.database_url, pool_size=settings.db_engine_pool_size,
                           statement_cache_size=settings.db_statement_cache_size)
    stack.push_async_callback(engine.dispose)
    arq = await queue.connect(settings)
    stack.push_async_callback(arq.aclose)
    hub = Hub(lambda: redisconn.connect(settings, socket_connect_timeout=2,
                                        health_check_interval=10,
                                        client_name=hub_client_name(settings.namespace)),
              control_channel=control_channel(settings.namespace),
              buffer=settings.stream_buffer)
    await hub.start()
    stack.push_async_callback(hub.close)
    stale = StaleStreams(hub, pool, settings.stream_check_interval)
    stale.start()
    stack.push_async_callback(stale.close)
    eventlog = EventLog(pool, arq, settings.namespace, max_batch=settings.eventlog_max_batch)
    eventlog.start()
    stack.push_async_callback(eventlog.close)
    rate = SubmitRate(arq, settings.namespace)
    rate.start()
    stack.push_async_callback(rate.close)
    catalogue = Catalogue.load(settings)
    submissions = Submissions(pool, arq, eventlog, settings, rate, InflightGauge(), catalogue,
                              WorkerTypes(pool, settings.lease_seconds))
    submissions.start()
    stack.push_async_callback(submissions.close)
    if settings.signing_key:
        signing_key = settings.signing_key.encode()
    else:
        # Start-up while PostgreSQL is briefly away: wait for it instead of crash-looping.
        signing_key = bytes.fromhex(await until_reachable(
            lambda: store.server_secret(pool, "stream_tickets", secrets.token_hex(32)),
            _SECRET_WAIT))
    return Resources(
        settings, pool, arq, hub, eventlog,
        keys=KeyCache(settings.key_cache_seconds),
        submissions=submissions,
        engine=engine,
        catalogue=catalogue,
        streams=StreamSlots(settings.max_streams_per_tenant, settings.max_streams_per_process),
        signing_key=signing_key,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.log_format == "json":
        logs.configure("json")
    tracing.setup(settings.tracing, "taskstream-web")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            metrics.reap_dead()  # live gauges of web processes that were SIGKILLed
            stack.callback(metrics.process_exit)
            stack.callback(tracing.shutdown)
            app.state.resources = res = await _open(stack, settings)
            _end_streams_on_signal(res.hub)
            # Everything built so far lives as long as the process: out of the collector's
            # way, so collections under load do not walk it. Measured (bench submission, 3
            # runs each, interleaved): p99 41-43 ms with, 76-103 ms without; 1,535-1,701 vs
            # 1,204-1,486 req/s.
            gc.collect()
            gc.freeze()
            freezer = HeapFreezer(settings.gc_freeze_interval, settings.gc_full_interval,
                                  ended=lambda: res.hub.ended,
                                  full_after=settings.heap_full_after_streams())
            freezer.start()
            stack.push_async_callback(freezer.close)
            if not settings.auth:
                log.warning("authentication is OFF (TASKSTREAM_AUTH=false): every caller is "
                            "the anonymous tenant; never expose this beyond your machine")
            yield

    app = StreamFirstAPI(
        # Streams are opened outside every layer (service.fast_stream); with tracing on, by
        # the route, so that they have their spans.
        fast_stream=not tracing.enabled(),
        # Request spans come from our own instrumentation (core.tracing) when tracing is on;
        # FastAPI's native telemetry would otherwise ask the OpenTelemetry providers (and
        # the environment) on every request whether it is configured.
        telemetry=None if tracing.enabled() else _NO_TELEMETRY,
        title="Taskstream",
        version="0.1.0",
        description="Long-running tasks behind a REST API, with progress pushed over SSE.",
        lifespan=lifespan,
    )
    errors.install(app)
    tracing.instrument_app(app)
    if not tracing.enabled():  # inside BodyLimit: a body over the limit is still its 413
        app.add_middleware(FastSubmit)
    app.add_middleware(BodyLimit, max_bytes=settings.max_json_bytes)
    for router in routers:
        app.include_router(router)

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, object]:
        """Liveness and whether the pub/sub hub is connected. No authentication."""
        res: Resources = app.state.resources
        return {"status": "ok", "hub_connected": res.hub.connected, "streams": res.hub.streams,
                "auth": res.settings.auth}

    # The dashboard's modules and stylesheet, served as written (no build step).
    app.mount("/static", StaticFiles(packages=[("service", "static")]), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        page = resources.files("service.static").joinpath("index.html").read_text()
        return HTMLResponse(page)

    return app
