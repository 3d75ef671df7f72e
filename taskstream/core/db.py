"""Database handles: the asyncpg pool (hot paths: appends, claims, streams) and the
SQLAlchemy async engine (SQLModel reads and key management); jsonb is orjson in both. Also
what counts as the database being briefly away."""

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import orjson
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from taskstream.core.backoff import Backoff

log = logging.getLogger(__name__)
T = TypeVar("T")

Pool = asyncpg.Pool

#: Errors that mean the database is briefly away, not the data wrong: the same work is
#: retried (or answered with 503 + Retry-After), never failed.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.InternalClientError,  # a pooled connection the server terminated (asyncpg#1069)
    asyncpg.PostgresConnectionError,
    asyncpg.CrashShutdownError,
)


def _encode(value: Any) -> str:
    # orjson: a progress event's data is encoded here on the hot path, ~5x faster than json
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


async def _init(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=_encode, decoder=orjson.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's default reset query (advisory unlock, CLOSE ALL,
    UNLISTEN, RESET ALL): one more round trip and ~0.1 ms of server CPU per use, for session
    state this code never creates (settings are transaction-local; migrations lock on their own
    connection). An open transaction is still rolled back by asyncpg before this runs."""


async def until_reachable(call: Callable[[], Awaitable[T]], within: float,
                          deadline: float | None = None) -> T:
    """``call()``, tried again with backoff while PostgreSQL is away, for up to ``within``
    seconds (or until the monotonic ``deadline``): a process starting during an outage or a
    restart waits for the database instead of exiting, which a platform answers with
    growing restart delays."""
    until = time.monotonic() + within if deadline is None else deadline
    backoff = Backoff(first=0.1, cap=2.0)
    while True:
        try:
            return await call()
        except TRANSIENT_DB_ERRORS as exc:
            if time.monotonic() + backoff.delay > until:
                raise
            log.warning("database unavailable at start-up (%s); retrying in %.1fs", exc,
                        backoff.delay)
            await backoff.sleep()


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, wait: float = 0.0,
                      **kw: Any) -> Pool:
    """The asyncpg pool. ``wait``: seconds to keep trying while PostgreSQL is away
    (``until_reachable``), its first connection included."""
    deadline = time.monotonic() + wait

    async def make() -> Pool:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                         init=_init, reset=_keep_session, **kw)
        assert pool is not None
        return pool

    pool = await until_reachable(make, wait, deadline)
    if wait:  # an empty pool (min_size 0) connects nowhere until first used
        try:
            await until_reachable(lambda: pool.execute("SELECT 1"), wait, deadline)
        except BaseException:
            await pool.close()
            raise
    return pool


#: How long a process's shutdown waits for its pool's connections to come back. asyncpg's
#: close() waits for every one with no bound: a connection kept by a bug would hang the
#: shutdown until the platform's SIGKILL, and name nothing.
POOL_CLOSE_WAIT = 10.0


async def close_pool(pool: Pool, within: float = POOL_CLOSE_WAIT) -> None:
    """Close the pool; after ``within`` seconds, say so and drop the connections in use."""
    closing = asyncio.ensure_future(pool.close())
    try:
        await asyncio.wait({closing}, timeout=within)
    finally:
        if not closing.done():
            log.error("database pool: %d connection(s) still in use %gs after its close "
                      "began; terminating them", pool.get_size() - pool.get_idle_size(), within)
            closing.cancel()  # close() terminates the pool when cancelled
            await asyncio.wait({closing})
    if not closing.cancelled():
        closing.result()  # close()'s own error, if any


def async_url(dsn: str) -> URL:
    """SQLAlchemy's name for the same database: ``postgresql+asyncpg://`` (settings normalize
    every URL to ``postgresql://``, which SQLAlchemy would read as psycopg2). Query
    parameters become asyncpg.connect() arguments there, so libpq's ``sslmode`` becomes
    asyncpg's ``ssl`` (same values)."""
    url = make_url(dsn)
    if url.drivername not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url.drivername}://…")
    query = dict(url.query)
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    return url.set(drivername="postgresql+asyncpg", query=query)


def create_engine(dsn: str, *, pool_size: int = 5,
                  statement_cache_size: int = 100) -> AsyncEngine:
    """The SQLModel read side's engine (over asyncpg). Connections open on first use, so a
    process starts while PostgreSQL is away; jsonb goes through orjson as in the pool.

    ``statement_cache_size=0`` (behind PgBouncer in transaction mode): neither asyncpg nor
    SQLAlchemy's dialect keeps prepared statements, and the dialect names each one uniquely,
    so a statement never meets a server connection that has another of the same name."""
    connect_args: dict[str, Any] = {}
    if statement_cache_size == 0:
        connect_args = {"statement_cache_size": 0, "prepared_statement_cache_size": 0,
                        "prepared_statement_name_func": _unique_statement_name}
    return create_async_engine(
        async_url(dsn), pool_size=pool_size, max_overflow=0,
        json_serializer=_encode, json_deserializer=orjson.loads, connect_args=connect_args,
    )


def _unique_statement_name() -> str:
    return f"__ts_{uuid.uuid4().hex}__"
