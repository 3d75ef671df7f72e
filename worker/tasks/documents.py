"""``document_process``: parse, chunk, embed and store an uploaded document, with a progress
event per stage (and per embedding batch)."""

import asyncio
import uuid
from typing import Any

from taskstream.core import store
from taskstream.core.tasktypes import DocumentParams
from worker.chunking import chunk_pages
from worker.context import TaskContext
from worker.embedding import default_embedder
from worker.parsing import DocumentError, parse
from worker.tasks import task

EMBED_BATCH = 32


@task("document_process")
async def document_process(ctx: TaskContext, params: DocumentParams) -> dict[str, Any]:
    upload = await store.get_upload(ctx.pool, params.upload_id, ctx.owner)
    if upload is None:
        raise DocumentError(f"upload {params.upload_id} not found")
    await ctx.progress(1, f"reading {upload.filename} ({upload.size} bytes)")
    parts = [c async for c in store.iter_upload(ctx.pool, uuid.UUID(upload.upload_id))]
    data = b"".join(parts)
    await ctx.progress(10, "parsing")
    kind, pages = await asyncio.to_thread(parse, data, upload.filename)
    del data, parts
    await ctx.progress(30, f"parsed {len(pages)} page(s) of {kind}")

    chunks = list(chunk_pages(pages, params.chunk_size, params.chunk_overlap))
    if not chunks:
        raise DocumentError("document contains no text to chunk")
    await ctx.progress(40, f"split into {len(chunks)} chunk(s)")

    embedder = default_embedder()
    vectors: list[list[float]] = []
    for start in range(0, len(chunks), EMBED_BATCH):
        batch = [text for _, text in chunks[start : start + EMBED_BATCH]]
        vectors.extend(await embedder.embed(batch))
        done = min(start + EMBED_BATCH, len(chunks))
        await ctx.progress(40 + 50 * done / len(chunks), f"embedded {done}/{len(chunks)}")

    rows = [(i, page, text, vec) for i, ((page, text), vec) in
            enumerate(zip(chunks, vectors, strict=True))]
    await store.store_document_chunks(ctx.pool, ctx.task_id, rows)
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
    }
