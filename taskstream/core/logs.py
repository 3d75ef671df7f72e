"""Log set-up for both processes: human-readable lines, or one JSON object per line
(``TASKSTREAM_LOG_FORMAT=json``) for a log pipeline: time, level, logger, message, the
process, the exception if any (and trace/span ids where OpenTelemetry's logging
instrumentation put them on the record)."""

import logging
import os
from datetime import UTC, datetime
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key in ("otelTraceID", "otelSpanID"):  # set by opentelemetry's log correlation
            value = getattr(record, key, None)
            if value and value != "0":
                doc["trace_id" if key == "otelTraceID" else "span_id"] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure(log_format: str, level: str | None = None) -> None:
    """Root logging for a process; uvicorn's loggers propagate to it (their own handlers
    are removed so each line is written once, in one format)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else
                         logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO"))
    if log_format == "json":
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            lg = logging.getLogger(name)
            lg.handlers[:] = []
            lg.propagate = True
