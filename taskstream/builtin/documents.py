"""``document_process``: parse, chunk, embed and store an uploaded document, with a progress
event per stage (and per embedding batch)."""

import asyncio
import uuid
from typing import Any, cast

from pydantic import Field

from taskstream.context import TaskContext
from taskstream.declaration import Params, PermanentError, task


class DocumentParams(Params):
    """Parse an uploaded PDF, text or Markdown file, chunk it, embed and store the chunks."""

    upload_id: uuid.UUID
    chunk_size: int = Field(1000, ge=100, le=20_000, description="Characters per chunk.")
    chunk_overlap: int = Field(100, ge=0, le=5_000)


EMBED_BATCH = 32


@task("document_process", max_attempts=3, timeout=1800, soft_timeout=1700,
      description="Parse a PDF/text/Markdown upload, chunk, embed and store it.")
async def document_process(ctx: TaskContext, params: DocumentParams) -> dict[str, Any]:
    # The parts that need the server (the upload and chunk tables) and pypdf are imported
    # here, so that declaring this type costs the web process nothing.
    from taskstream.builtin.chunking import chunk_pages
    from taskstream.builtin.embedding import EmbeddingError, configured_embedder, space_of
    from taskstream.builtin.parsing import DocumentError, parse
    from taskstream.core import store, store_search

    worker = cast(Any, ctx)  # a worker's context: this built-in writes our own tables
    pool = worker.pool
    upload = await store.get_upload(pool, params.upload_id, ctx.owner)
    if upload is None:
        raise DocumentError(f"upload {params.upload_id} not found")
    await ctx.progress(1, f"reading {upload.filename} ({upload.size} bytes)")
    parts = [c async for c in store.iter_upload(pool, uuid.UUID(upload.upload_id))]
    data = b"".join(parts)
    await ctx.progress(10, "parsing")
    kind, pages = await asyncio.to_thread(parse, data, upload.filename)
    del data, parts
    await ctx.progress(30, f"parsed {len(pages)} page(s) of {kind}")

    chunks = list(chunk_pages(pages, params.chunk_size, params.chunk_overlap))
    if not chunks:
        raise DocumentError("document contains no text to chunk")
    await ctx.progress(40, f"split into {len(chunks)} chunk(s)")

    embedder = configured_embedder(worker.settings)
    vectors: list[list[float]] = []
    for start in range(0, len(chunks), EMBED_BATCH):
        batch = [text for _, text in chunks[start : start + EMBED_BATCH]]
        try:
            vectors.extend(await embedder.embed(batch))
        except EmbeddingError as exc:
            if exc.permanent:
                raise PermanentError(str(exc)) from None
            raise
        done = min(start + EMBED_BATCH, len(chunks))
        await ctx.progress(40 + 50 * done / len(chunks), f"embedded {done}/{len(chunks)}")

    rows = [(i, page, text, vec) for i, ((page, text), vec) in
            enumerate(zip(chunks, vectors, strict=True))]
    space_id = await store_search.ensure_space(pool, space_of(embedder))
    await store_search.store_document(pool, ctx.task_id, ctx.owner, upload.upload_id, space_id,
                                      rows)
    await ctx.progress(99, "stored chunks and vectors")
    word_count = sum(len(p.text.split()) for p in pages)
    return {
        "upload_id": upload.upload_id,
        "filename": upload.filename,
        "kind": kind,
        "pages": len(pages),
        "chunks": len(chunks),
        "word_count": word_count,
        "embedding_dim": embedder.dim,
        "embedding_model": f"{embedder.kind}:{embedder.model}",
    }
