"""`python -m taskstream.devservices up|down|restart|status|env`.

`up` and `env` print `DATABASE_URL=...` and `REDIS_URL=...` on stdout (everything else goes to
stderr), so a shell can do: `export $(python -m taskstream.devservices up)`.
`status` exits 0 when both servers run, 3 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from taskstream.devservices import (
    DEFAULT_PG_PORT,
    DEFAULT_REDIS_PORT,
    DevServiceError,
    Postgres,
    Redis,
    default_data_dir,
)
from taskstream.devservices.binaries import BACKEND_ENV, preference


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m taskstream.devservices",
        description="Project-local PostgreSQL and Redis.",
        epilog=f"{BACKEND_ENV}=pypi|system forces where the server binaries come from.",
    )
    parser.add_argument("command", choices=["up", "down", "restart", "status", "env"])
    parser.add_argument("--dir", type=Path, default=None, help="data dir (default: <repo>/.data)")
    parser.add_argument("--pg-port", type=int, default=DEFAULT_PG_PORT)
    parser.add_argument("--redis-port", type=int, default=DEFAULT_REDIS_PORT)
    parser.add_argument(
        "--mode", choices=["fast", "immediate"], default="fast",
        help="PostgreSQL stop mode for down/restart (immediate = crash-like)",
    )  # fmt: skip
    return parser


def _print_env(postgres: Postgres, redis: Redis) -> None:
    print(f"DATABASE_URL={postgres.url}")
    print(f"REDIS_URL={redis.url}")


def _status(postgres: Postgres, redis: Redis) -> int:
    master = postgres.running()
    if master is None:
        print(f"postgres: stopped ({postgres.data_dir})")
    else:
        print(f"postgres: running pid={master.pid} {postgres.url} ({master.pgdata})")
    pid = redis.pid()
    print(f"redis: running pid={pid} {redis.url}" if pid else f"redis: stopped ({redis.dir})")
    print(f"backend preference: {preference()}")
    return 0 if master is not None and pid is not None else 3


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data_dir = args.dir if args.dir is not None else default_data_dir()
    postgres, redis = Postgres(data_dir, args.pg_port), Redis(data_dir, args.redis_port)
    try:
        if args.command in ("down", "restart"):
            postgres.stop(args.mode)
            redis.stop()
            print(f"devservices: stopped ({postgres.data_dir})", file=sys.stderr)
        if args.command in ("up", "restart"):
            redis.start()
            postgres.start()
            print(f"devservices: running ({postgres.data_dir})", file=sys.stderr)
        if args.command in ("up", "restart", "env"):
            _print_env(postgres, redis)
        if args.command == "status":
            return _status(postgres, redis)
    except DevServiceError as exc:
        print(f"devservices: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
