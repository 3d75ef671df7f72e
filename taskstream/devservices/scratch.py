"""Scratch databases for the tests, the bench and the chaos run: created beside whatever else
the server holds, migrated, and dropped (with their connections) at the end."""

import asyncpg

from taskstream.core.migrate import migrate


def with_db(url: str, db: str) -> str:
    """``url`` pointing at database (or Redis DB index) ``db`` instead."""
    return url.rpartition("/")[0] + "/" + db


async def create_database(admin_url: str, name: str, *, migrated: bool = True) -> str:
    """Create database ``name`` on the server of ``admin_url`` and (unless ``migrated`` is
    false: a deploy's release phase migrates it) migrate it; returns its URL."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = with_db(admin_url, name)
    if migrated:
        await migrate(url)
    return url


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
