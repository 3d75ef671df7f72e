"""SQL of documents' chunks, their vectors (pgvector) and search (migration 110).

Vectors travel as ``real[]`` (asyncpg's binary float4 arrays) and are cast to pgvector's
``vector`` in SQL, so no client-side codec is registered. Each embedding space has its own
partial HNSW index on ``embedding::vector(dim)``; queries name the space and the dimension
as literals (integers from ``embedding_spaces``, never input) so that the planner matches
that index — a bound parameter could not prove the partial index's predicate.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from taskstream.builtin.embedding import Space
from taskstream.core.store import Executor, transaction

Pool = asyncpg.Pool  # for annotations elsewhere that must not import asyncpg themselves
_SPACE_LOCK = 0x7A5C_0110  # serializes the creation of a space and its index


@dataclass(frozen=True, slots=True)
class SpaceRow:
    space_id: int
    space: Space


@dataclass(frozen=True, slots=True)
class Hit:
    upload_id: str
    filename: str
    task_id: str
    chunk_index: int
    page: int | None
    score: float  # cosine similarity, 1 = same direction
    text: str


@dataclass(frozen=True, slots=True)
class ChunkText:
    task_id: uuid.UUID
    chunk_index: int
    owner: str
    content: str


def _index_name(space_id: int) -> str:
    return f"chunk_vectors_hnsw_{int(space_id)}"


async def ensure_space(db: Executor, space: Space) -> int:
    """The id of ``space``, created with its HNSW index on first use."""
    async with transaction(db) as conn:
        row = await conn.fetchrow(
            "SELECT space_id FROM embedding_spaces WHERE kind = $1 AND model = $2 AND dim = $3",
            space.kind, space.model, space.dim)
        if row is not None and await conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", _index_name(row["space_id"])):
            return int(row["space_id"])
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SPACE_LOCK)
        space_id = int(await conn.fetchval(
            """INSERT INTO embedding_spaces (kind, model, dim) VALUES ($1, $2, $3)
               ON CONFLICT (kind, model, dim) DO UPDATE SET kind = EXCLUDED.kind
               RETURNING space_id""",
            space.kind, space.model, space.dim))
        dim = int(space.dim)
        await conn.execute(
            f"CREATE INDEX IF NOT EXISTS {_index_name(space_id)} ON chunk_vectors "
            f"USING hnsw ((embedding::vector({dim})) vector_cosine_ops) "
            f"WHERE space_id = {space_id}")
        return space_id


async def get_space(db: Executor, space_id: int) -> SpaceRow | None:
    r = await db.fetchrow("SELECT space_id, kind, model, dim FROM embedding_spaces "
                          "WHERE space_id = $1", space_id)
    return None if r is None else SpaceRow(r["space_id"], Space(r["kind"], r["model"], r["dim"]))


async def tenant_space(db: Executor, owner: str) -> SpaceRow | None:
    """The space ``owner``'s search reads (None: nothing stored yet)."""
    r = await db.fetchrow(
        """SELECT s.space_id, s.kind, s.model, s.dim FROM tenant_spaces t
           JOIN embedding_spaces s USING (space_id) WHERE t.owner = $1""", owner)
    return None if r is None else SpaceRow(r["space_id"], Space(r["kind"], r["model"], r["dim"]))


async def space_by_identity(db: Executor, space: Space) -> int | None:
    v = await db.fetchval(
        "SELECT space_id FROM embedding_spaces WHERE kind = $1 AND model = $2 AND dim = $3",
        space.kind, space.model, space.dim)
    return None if v is None else int(v)


# --- documents -------------------------------------------------------------------------------

async def store_document(
    db: Executor, task_id: str, owner: str, upload_id: str, space_id: int,
    chunks: Sequence[tuple[int, int | None, str, list[float]]],
) -> None:
    """Replace a task's chunks and their vectors in ``space_id`` in one transaction (a retried
    attempt rewrites them, never duplicates). A tenant's first document picks its space."""
    tid, uid = uuid.UUID(task_id), uuid.UUID(upload_id)
    async with transaction(db) as conn:
        await conn.execute("DELETE FROM document_chunks WHERE task_id = $1", tid)
        await conn.executemany(
            """INSERT INTO document_chunks (task_id, chunk_index, page, content, owner, upload_id)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            [(tid, i, page, text, owner, uid) for i, page, text, _ in chunks])
        await conn.executemany(
            """INSERT INTO chunk_vectors (space_id, task_id, chunk_index, owner, embedding)
               VALUES ($1, $2, $3, $4, $5::real[]::vector)""",
            [(space_id, tid, i, owner, vec) for i, _, _, vec in chunks])
        await conn.execute(
            """INSERT INTO tenant_spaces (owner, space_id) VALUES ($1, $2)
               ON CONFLICT (owner) DO NOTHING""", owner, space_id)


async def insert_chunks_bulk(
    conn: asyncpg.Connection, space_id: int,
    rows: Sequence[tuple[uuid.UUID, int, str, uuid.UUID, str, list[float]]],
) -> None:
    """Bench loader: (task_id, chunk_index, owner, upload_id, content, vector) rows, by COPY."""
    await conn.copy_records_to_table(
        "document_chunks", columns=["task_id", "chunk_index", "page", "content", "owner",
                                    "upload_id"],
        records=[(t, i, None, c, o, u) for t, i, o, u, c, _ in rows])
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS _vec_load (task_id uuid, "
                       "chunk_index integer, owner text, embedding real[]) ON COMMIT DROP")
    await conn.copy_records_to_table(
        "_vec_load", columns=["task_id", "chunk_index", "owner", "embedding"],
        records=[(t, i, o, v) for t, i, o, _, _, v in rows])
    await conn.execute(
        """INSERT INTO chunk_vectors (space_id, task_id, chunk_index, owner, embedding)
           SELECT $1, task_id, chunk_index, owner, embedding::vector FROM _vec_load""",
        space_id)
    await conn.execute("DROP TABLE _vec_load")


# --- search ----------------------------------------------------------------------------------

async def search(pool: asyncpg.Pool, space_id: int, dim: int, query: list[float],
                 owner: str | None, k: int, ef_search: int = 64) -> list[Hit]:
    """The ``k`` chunks nearest ``query`` (cosine) in one space: ``owner``'s, or (None) those
    of every tenant whose search reads this space. pgvector's iterative index scan keeps
    walking the graph when the tenant filter drops candidates (pgvector >= 0.8)."""
    sid, d = int(space_id), int(dim)
    expr = f"v.embedding::vector({d})"
    scope = ("v.owner = $3" if owner is not None else
             f"v.owner IN (SELECT owner FROM tenant_spaces WHERE space_id = {sid})")  # noqa: S608
    sql = f"""
        WITH hits AS MATERIALIZED (
            SELECT v.task_id, v.chunk_index, {expr} <=> $1::real[]::vector({d}) AS distance
              FROM chunk_vectors v
             WHERE v.space_id = {sid} AND {scope}
             ORDER BY {expr} <=> $1::real[]::vector({d})
             LIMIT $2)
        SELECT h.distance, c.task_id, c.chunk_index, c.page, c.content, c.upload_id, u.filename
          FROM hits h
          JOIN document_chunks c USING (task_id, chunk_index)
          JOIN uploads u ON u.upload_id = c.upload_id
         ORDER BY h.distance, c.task_id, c.chunk_index"""  # noqa: S608
    args: list[Any] = [query, k] + ([owner] if owner is not None else [])
    async with pool.acquire() as conn:
        # Session settings, one round trip, set before every search on this connection: they
        # only steer HNSW scans, which only this function runs (a transaction with SET LOCAL
        # would cost two more round trips per query).
        await conn.execute(f"SET hnsw.ef_search = {max(int(ef_search), int(k))}; "
                           "SET hnsw.iterative_scan = relaxed_order")
        rows = await conn.fetch(sql, *args)
    return [Hit(str(r["upload_id"]), r["filename"], str(r["task_id"]), r["chunk_index"],
                r["page"], 1.0 - float(r["distance"]), r["content"]) for r in rows]


# --- reindex ---------------------------------------------------------------------------------

async def count_chunks(db: Executor, owner: str | None) -> int:
    return int(await db.fetchval(
        "SELECT count(*) FROM document_chunks WHERE ($1::text IS NULL OR owner = $1)", owner))


async def chunk_batch(db: Executor, owner: str | None, after: tuple[uuid.UUID, int] | None,
                      limit: int) -> list[ChunkText]:
    """The next ``limit`` chunks in (task_id, chunk_index) order after ``after``."""
    t, i = after if after is not None else (None, None)
    rows = await db.fetch(
        """SELECT task_id, chunk_index, owner, content FROM document_chunks
            WHERE ($1::text IS NULL OR owner = $1)
              AND ($2::uuid IS NULL OR (task_id, chunk_index) > ($2, $3::integer))
            ORDER BY task_id, chunk_index LIMIT $4""", owner, t, i, limit)
    return [ChunkText(r["task_id"], r["chunk_index"], r["owner"], r["content"]) for r in rows]


async def missing_chunks(db: Executor, owner: str | None, space_id: int,
                         limit: int) -> list[ChunkText]:
    """Chunks in scope without a vector in ``space_id`` (stored after the reindex began)."""
    rows = await db.fetch(
        """SELECT c.task_id, c.chunk_index, c.owner, c.content FROM document_chunks c
            WHERE ($1::text IS NULL OR c.owner = $1)
              AND NOT EXISTS (SELECT 1 FROM chunk_vectors v WHERE v.space_id = $2
                              AND v.task_id = c.task_id AND v.chunk_index = c.chunk_index)
            ORDER BY c.task_id, c.chunk_index LIMIT $3""", owner, space_id, limit)
    return [ChunkText(r["task_id"], r["chunk_index"], r["owner"], r["content"]) for r in rows]


async def upsert_vectors(db: Executor, space_id: int,
                         rows: Sequence[tuple[ChunkText, list[float]]]) -> None:
    """Write vectors in ``space_id`` beside any other space's (a chunk deleted meanwhile is
    skipped: its vector would have nothing to point at)."""
    async with transaction(db) as conn:
        await conn.executemany(
            """INSERT INTO chunk_vectors (space_id, task_id, chunk_index, owner, embedding)
               SELECT $1, $2, $3, $4, $5::real[]::vector
                WHERE EXISTS (SELECT 1 FROM document_chunks
                              WHERE task_id = $2 AND chunk_index = $3)
               ON CONFLICT (space_id, task_id, chunk_index)
               DO UPDATE SET embedding = EXCLUDED.embedding""",
            [(space_id, c.task_id, c.chunk_index, c.owner, vec) for c, vec in rows])


async def switch_space(db: Executor, owner: str | None, space_id: int) -> dict[str, int]:
    """Point ``owner``'s search (None: every tenant with chunks) at ``space_id`` and drop
    their vectors of other spaces — one transaction, so a search sees the old space or the
    new one, never a mix or nothing."""
    async with transaction(db) as conn:
        owners = [r["owner"] for r in await conn.fetch(
            """SELECT DISTINCT owner FROM document_chunks WHERE ($1::text IS NULL OR owner = $1)
               UNION SELECT owner FROM tenant_spaces WHERE ($1::text IS NULL OR owner = $1)""",
            owner)]
        await conn.execute(
            """INSERT INTO tenant_spaces (owner, space_id, switched_at)
               SELECT o, $2, now() FROM unnest($1::text[]) AS o
               ON CONFLICT (owner) DO UPDATE SET space_id = EXCLUDED.space_id,
                                                 switched_at = EXCLUDED.switched_at""",
            owners, space_id)
        dropped = await conn.fetchval(
            """WITH d AS (DELETE FROM chunk_vectors WHERE owner = ANY($1::text[])
                          AND space_id <> $2 RETURNING 1) SELECT count(*) FROM d""",
            owners, space_id)
    return {"tenants": len(owners), "dropped_vectors": int(dropped)}
