"""``document_process``: parse, chunk, embed and store an uploaded document, in durable steps
(``ctx.step``) with a progress event per stage and per embedding batch.

Steps: ``parse`` (the pages' text), ``chunk`` (the chunks' text), ``embed-<i>`` (the vectors
of one batch of ``EMBED_BATCH`` chunks), ``store`` (chunks and vectors in one transaction).
A retry or a crash recovery resumes at the first unfinished step: a 300-page PDF whose worker
dies while storing is neither parsed nor embedded again. Nothing is searchable before
``store`` commits, and ``store`` replaces the task's rows, so a repeated ``store`` (its worker
died before the step was recorded) never duplicates them.
"""

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


#: Chunks per embedding step: each records its vectors (~2.3 KB of JSON per 256-d vector).
EMBED_BATCH = 64


@task("document_process", max_attempts=3, timeout=1800, soft_timeout=1700,
      description="Parse a PDF/text/Markdown upload, chunk, embed and store it.")
async def document_process(ctx: TaskContext, params: DocumentParams) -> dict[str, Any]:
    # The parts that need the server (the upload and chunk tables) and pypdf are imported
    # here, so that declaring this type costs the web process nothing.
    from taskstream.builtin.chunking import chunk_pages
    from taskstream.builtin.embedding import EmbeddingError, configured_embedder, space_of
    from taskstream.builtin.parsing import DocumentError, Page, parse
    from taskstream.core import store, store_search

    worker = cast(Any, ctx)  # a worker's context: this built-in writes our own tables
    pool = worker.pool
    upload = await store.get_upload(pool, params.upload_id, ctx.owner)
    if upload is None:
        raise DocumentError(f"upload {params.upload_id} not found")
    await ctx.progress(1, f"reading {upload.filename} ({upload.size} bytes)")

    async def read_and_parse() -> dict[str, Any]:
        parts = [c async for c in store.iter_upload(pool, uuid.UUID(upload.upload_id))]
        kind, pages = await asyncio.to_thread(parse, b"".join(parts), upload.filename)
        return {"kind": kind, "pages": [[p.number, p.text] for p in pages]}

    parsed = await ctx.step("parse", read_and_parse)
    pages = [Page(n, text) for n, text in parsed["pages"]]
    await ctx.progress(30, f"parsed {len(pages)} page(s) of {parsed['kind']}")

    def split() -> list[list[Any]]:
        return [[page, text] for page, text in
                chunk_pages(pages, params.chunk_size, params.chunk_overlap)]

    chunks: list[list[Any]] = await ctx.step("chunk", split)
    if not chunks:
        raise DocumentError("document contains no text to chunk")
    await ctx.progress(40, f"split into {len(chunks)} chunk(s)")

    embedder = configured_embedder(worker.settings)

    async def embed(texts: list[str]) -> list[list[float]]:
        try:
            vectors = await embedder.embed(texts)
        except EmbeddingError as exc:
            if exc.permanent:
                raise PermanentError(str(exc)) from None
            raise
        return [[round(x, 7) for x in v] for v in vectors]  # float32's precision, as JSON

    vectors: list[list[float]] = []
    for i, start in enumerate(range(0, len(chunks), EMBED_BATCH)):
        batch = [text for _, text in chunks[start : start + EMBED_BATCH]]
        vectors.extend(await ctx.step(f"embed-{i}", embed, batch))
        done = min(start + EMBED_BATCH, len(chunks))
        await ctx.progress(40 + 55 * done / len(chunks), f"embedded {done}/{len(chunks)}")

    async def save() -> dict[str, Any]:
        rows = [(i, page, text, vec) for i, ((page, text), vec) in
                enumerate(zip(chunks, vectors, strict=True))]
        space_id = await store_search.ensure_space(pool, space_of(embedder))
        await store_search.store_document(pool, ctx.task_id, ctx.owner, upload.upload_id,
                                          space_id, rows)
        return {"space_id": space_id, "chunks": len(rows)}

    await ctx.step("store", save)
    await ctx.progress(99, "stored chunks and vectors")
    word_count = sum(len(p.text.split()) for p in pages)
    return {
        "upload_id": upload.upload_id,
        "filename": upload.filename,
        "kind": parsed["kind"],
        "pages": len(pages),
        "chunks": len(chunks),
        "word_count": word_count,
        "embedding_dim": embedder.dim,
        "embedding_model": f"{embedder.kind}:{embedder.model}",
    }
