"""The asyncpg pool: JSON codecs registered once so jsonb columns read and write Python values."""

import json
from typing import Any

import asyncpg

Pool = asyncpg.Pool


async def _init(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kw: Any) -> Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init, **kw
    )
    assert pool is not None
    return pool
