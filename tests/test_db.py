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
