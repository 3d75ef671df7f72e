"""The SQLModel engine's URL: the same database the asyncpg pool uses, through asyncpg; and
the asyncpg pool of a process that starts while PostgreSQL is away."""

import asyncio
import uuid

import asyncpg
import pytest
from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from taskstream.core import db, store_read
from taskstream.core.db import async_url, create_engine
from taskstream.core.eventlog import TRANSIENT_DB_ERRORS
from taskstream.core.settings import Settings
from taskstream.devservices.processes import free_port


def test_async_url_keeps_the_database_and_picks_asyncpg() -> None:
    url = async_url(Settings(database_url="postgres://u:p%40ss@db.example:6543/app").database_url)
    assert url.drivername == "postgresql+asyncpg"
    assert (url.username, url.password, url.host, url.port, url.database) == \
        ("u", "p@ss", "db.example", 6543, "app")


def test_sslmode_becomes_asyncpg_ssl() -> None:
    url = async_url("postgresql://u@h/app?sslmode=require&prepared_statement_cache_size=100")
    assert dict(url.query) == {"ssl": "require", "prepared_statement_cache_size": "100"}


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        async_url("mysql://u@h/app")


async def test_a_dropped_connection_is_transient_and_the_engine_heals(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """A connection the server dropped (restart, failover) raises the asyncpg error the hot
    paths raise, which the edge answers with 503; the next call gets a fresh connection."""
    engine = create_engine(settings.database_url, pool_size=1)
    owner = f"db-{uuid.uuid4().hex[:8]}"
    try:
        async with AsyncSession(engine) as s:
            pid = (await s.exec(select(func.pg_backend_pid()))).one()
        assert await store_read.list_tasks(engine, owner, limit=1) == []
        await pool.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(TRANSIENT_DB_ERRORS):
            await store_read.list_tasks(engine, owner, limit=1)
        assert await store_read.list_tasks(engine, owner, limit=1) == []
    finally:
        await engine.dispose()


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def test_a_process_starting_during_an_outage_waits_for_the_database(
        settings: Settings) -> None:
    """PostgreSQL is not there yet when the pool is made (a web or worker process starting
    during an outage): ``wait`` keeps trying instead of failing the start-up; without it
    the start-up fails at once, as before."""
    url = make_url(settings.database_url)
    port = free_port()
    dsn = settings.database_url.replace(f":{url.port}/", f":{port}/")
    with pytest.raises(OSError):
        await db.create_pool(dsn)
    with pytest.raises(OSError):  # an empty pool connects at first use: wait checks it
        await db.create_pool(dsn, min_size=0, wait=0.3)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(url.host, url.port)
        await asyncio.gather(_forward(reader, up_w), _forward(up_r, writer))

    async def comes_up_later() -> asyncio.Server:
        await asyncio.sleep(0.6)
        return await asyncio.start_server(relay, "127.0.0.1", port)

    later = asyncio.create_task(comes_up_later())
    pool = await db.create_pool(dsn, min_size=0, wait=20)
    server = await later
    try:
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()


async def test_a_transaction_cancelled_anywhere_gives_its_connection_back(
        settings: Settings) -> None:
    """A worker's shutdown cancels its loops, then closes the pool, which waits for every
    connection to come back: one kept by a transaction cancelled while it began (BEGIN in
    flight) hung that shutdown. Cancelled after each of its first loop turns in turn, a
    transaction leaves every connection free, and the pool closes."""
    from taskstream.core.store import transaction

    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        for turns in range(12):
            async def one() -> None:
                async with transaction(pool) as conn:
                    await conn.execute("SELECT 1")

            task = asyncio.create_task(one())
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            # The pool's one connection is free again (not held by the cancelled task).
            async with asyncio.timeout(5):
                assert await pool.fetchval("SELECT 1") == 1
    finally:
        await asyncio.wait_for(pool.close(), 10)


async def test_closing_a_pool_with_a_connection_kept_is_bounded(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """A connection that never comes back (a bug) costs a shutdown ``within`` seconds and a
    log line that says so, not a hang until SIGKILL."""
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
    await pool.acquire()  # never released
    await asyncio.wait_for(db.close_pool(pool, within=0.3), 10)
    assert pool.is_closing()  # and the kept connection terminated with it
    assert "1 connection(s) still in use 0.3s after its close began" in caplog.text

    pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
    await asyncio.wait_for(db.close_pool(pool, within=5), 10)  # none kept: closes at once
    assert pool.is_closing()
