"""``reindex``: re-embed every stored chunk with the configured embedder, in recorded steps,
then switch search to the new vectors in one transaction (README: Search)."""

import uuid
from typing import Any, cast

from pydantic import Field

from taskstream.context import TaskContext
from taskstream.declaration import Params, PermanentError, task


class ReindexParams(Params):
    """Re-embed every stored chunk with the configured embedder, then switch search to it."""

    all_tenants: bool = Field(
        False, description="Every tenant's chunks, not only yours (admin keys only).")
    batch: int | None = Field(None, ge=1, le=10_000,
                              description="Chunks per step (default TASKSTREAM_REINDEX_BATCH).")


# An attempt stops within the worker's job timeout (an hour by default); the next attempt
# resumes after the last recorded batch, so a long reindex runs on across attempts.
@task("reindex", max_attempts=10, timeout=3500,
      description="Re-embed every chunk with the configured model; search switches at the end.")
async def reindex(ctx: TaskContext, params: ReindexParams) -> dict[str, Any]:
    from taskstream.builtin.embedding import EmbeddingError, configured_embedder, space_of
    from taskstream.core import store_search

    worker = cast(Any, ctx)  # a worker's context: this built-in writes our own tables
    pool, settings = worker.pool, worker.settings
    owner: str | None = None if params.all_tenants else ctx.owner
    embedder = configured_embedder(settings)
    size = params.batch or settings.reindex_batch

    async def plan() -> dict[str, Any]:
        space_id = await store_search.ensure_space(pool, space_of(embedder))
        return {"space_id": space_id, "total": await store_search.count_chunks(pool, owner)}

    async def embed_rows(rows: list[store_search.ChunkText]) -> None:
        try:
            vectors = await embedder.embed([r.content for r in rows])
        except EmbeddingError as exc:
            if exc.permanent:
                raise PermanentError(str(exc)) from None
            raise
        await store_search.upsert_vectors(pool, space_id, list(zip(rows, vectors, strict=True)))

    async def embed_after(cursor: list[Any] | None) -> dict[str, Any]:
        after = (uuid.UUID(cursor[0]), int(cursor[1])) if cursor else None
        rows = await store_search.chunk_batch(pool, owner, after, size)
        if rows:
            await embed_rows(rows)
        last = rows[-1] if rows else None
        return {"count": len(rows),
                "cursor": [str(last.task_id), last.chunk_index] if last else cursor}

    async def switch() -> dict[str, Any]:
        caught_up = 0
        while rows := await store_search.missing_chunks(pool, owner, space_id, size):
            await embed_rows(rows)  # chunks stored since the plan, by another model's worker
            caught_up += len(rows)
        return {**await store_search.switch_space(pool, owner, space_id),
                "caught_up": caught_up}

    planned = await ctx.step("plan", plan)
    space_id, total = int(planned["space_id"]), int(planned["total"])
    await ctx.progress(1, f"{total} chunk(s) to embed with {embedder.kind}:{embedder.model}")
    done, cursor, i = 0, None, 0
    while True:
        batch = await ctx.step(f"embed-{i}", embed_after, cursor)
        if batch["count"] == 0:
            break
        done, cursor, i = done + int(batch["count"]), batch["cursor"], i + 1
        await ctx.progress(1 + 97 * min(done, total) / max(total, 1),
                           f"embedded {done}/{max(total, done)}")
    switched = await ctx.step("switch", switch)
    await ctx.progress(100, f"search now reads {embedder.kind}:{embedder.model}")
    return {"embedded": done, "space": f"{embedder.kind}:{embedder.model}/{embedder.dim}",
            "space_id": space_id, "all_tenants": params.all_tenants, **switched}
