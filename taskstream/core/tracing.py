"""OpenTelemetry tracing, off unless configured (``TASKSTREAM_TRACING``; the ``otel`` extra).

One trace spans a task: the web process's request span (``POST /tasks``, from
opentelemetry-instrumentation-fastapi) is the parent; the submission stores its W3C
``traceparent`` in the task's options; the worker continues that trace with a ``queue wait``
span (from when the task became pending to its start) and a ``run <type>`` span per attempt,
current inside the task's code, so ``ctx.step`` spans and any span the user's code opens nest
under it.

Exporters: ``otlp`` (the SDK's OTLP/HTTP exporter, configured by the standard
``OTEL_EXPORTER_OTLP_*`` variables), ``console`` (one JSON object per span on stdout, or
appended to ``TASKSTREAM_TRACING_FILE``). Off: nothing is imported, and the hot paths pay one
boolean test.
"""

import contextlib
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

_enabled = False
TRACEPARENT = "traceparent"


def enabled() -> bool:
    return _enabled


def setup(mode: str, service_name: str) -> bool:
    """Install a tracer provider for this process; False when tracing is off."""
    global _enabled
    if mode == "off":
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
    )

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter: SpanExporter
    if mode == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    else:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        path = os.environ.get("TASKSTREAM_TRACING_FILE")
        out = open(path, "a", buffering=1) if path else None  # the process's whole life
        exporter = ConsoleSpanExporter(
            out=out, formatter=lambda span: span.to_json(indent=None) + "\n") \
            if out else ConsoleSpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _enabled = True
    return True


def shutdown() -> None:
    if _enabled:
        from opentelemetry import trace

        provider: Any = trace.get_tracer_provider()
        with contextlib.suppress(Exception):
            provider.shutdown()


def instrument_app(app: Any) -> None:
    """Server spans for every request of the web app (FastAPI)."""
    if _enabled:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span (to store with a task), or None."""
    if not _enabled:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get(TRACEPARENT)


@contextlib.contextmanager
def task_run(options: dict[str, Any], task_id: str, task_type: str, attempt: int,
             pending_since: datetime) -> Iterator[Any]:
    """In the worker: the queue-wait span (already over) and the run span (yielded; None when
    off), current while the attempt runs, both in the trace the submission started."""
    if not _enabled:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract(
        {TRACEPARENT: str(options.get(TRACEPARENT) or "")})
    tracer = trace.get_tracer("taskstream.worker")
    attrs: dict[str, str | int] = {"taskstream.task_id": task_id,
                                   "taskstream.task_type": task_type,
                                   "taskstream.attempt": attempt}
    wait = tracer.start_span("queue wait", context=parent, attributes=attrs,
                             start_time=int(pending_since.timestamp() * 1e9))
    wait.end()
    with tracer.start_as_current_span(f"run {task_type}", context=parent,
                                      attributes=attrs) as span:
        yield span


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A child span of whatever is current (a step inside a run); nothing when off."""
    if not _enabled:
        yield
        return
    from opentelemetry import trace

    with trace.get_tracer("taskstream").start_as_current_span(name, attributes=attributes):
        yield
