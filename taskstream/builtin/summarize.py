"""``summarize``: a document (an upload, or text) → a summary, streamed as it is written.

A document longer than one chunk is summarized map-reduce: each chunk on its own (the
``map-i`` steps), then the partial summaries together (``reduce-L-j`` steps, level by level
while they are still longer than a chunk), then once more into the ``summary`` step. Each
model call is a durable step whose text streams live under the step's name, so a retry or a
crash resumes at the first chunk not yet summarized.

A hundred of them is the tutorial's "generate 100 summaries": submit them as a batch.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

from pydantic import Field, model_validator

from taskstream.builtin.llm.base import Message
from taskstream.context import TaskContext
from taskstream.declaration import Params, PermanentError, task

SYSTEM = ("You summarize documents. Write a concise, faithful summary in plain prose: no "
          "preamble, no headings, nothing that is not in the text.")


class SummarizeParams(Params):
    """Summarize ``text``, or the upload ``upload_id`` (PDF, text, Markdown): one of them."""

    text: str | None = Field(None, min_length=1, max_length=2_000_000)
    upload_id: uuid.UUID | None = None
    max_tokens: int = Field(256, ge=16, le=4096,
                            description="Length of the summary (and of each partial one).")
    chunk_size: int = Field(6000, ge=500, le=100_000, description=(
        "Characters a model call reads at most; a longer document is summarized chunk by "
        "chunk, then the summaries together."))

    @model_validator(mode="after")
    def _one_source(self) -> SummarizeParams:
        if (self.text is None) == (self.upload_id is None):
            raise ValueError("give exactly one of text and upload_id")
        return self


def prompt(instruction: str, text: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{instruction}\n\nTEXT:\n{text}"}]


def groups(parts: list[str], size: int) -> list[list[str]]:
    """Consecutive parts packed up to ``size`` characters, at least two a group (so each
    level of the reduction at least halves the number of parts)."""
    out: list[list[str]] = []
    for p in parts:
        last = out[-1] if out else None
        if last is not None and (len(last) < 2 or sum(map(len, last)) + len(p) <= size):
            last.append(p)
        else:
            out.append([p])
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2].extend(out.pop())
    return out


async def document_text(ctx: TaskContext, params: SummarizeParams) -> list[tuple[int | None, str]]:
    """The chunks to summarize: of the text, or of the parsed upload."""
    from taskstream.builtin.chunking import chunk_pages
    from taskstream.builtin.parsing import DocumentError, Page, parse

    if params.text is not None:
        pages = [Page(number=None, text=params.text)]
    else:
        from taskstream.core import store

        pool = cast(Any, ctx).pool
        upload = await store.get_upload(pool, cast(uuid.UUID, params.upload_id), ctx.owner)
        if upload is None:
            raise PermanentError(f"upload {params.upload_id} not found")
        data = b"".join([c async for c in store.iter_upload(pool, uuid.UUID(upload.upload_id))])
        try:
            _, pages = await asyncio.to_thread(parse, data, upload.filename)
        except DocumentError as exc:
            raise PermanentError(str(exc)) from exc
    overlap = min(200, params.chunk_size // 10)
    return list(chunk_pages(pages, params.chunk_size, overlap))


@task(max_attempts=3, timeout=3600, description="Summarize a document (text or an upload); "
      "map-reduce over its chunks when it is long; tokens streamed.")
async def summarize(ctx: TaskContext, params: SummarizeParams) -> dict[str, Any]:
    from taskstream.builtin.llm.steps import model_step

    chunks = [text for _, text in await document_text(ctx, params)]
    if not chunks:
        raise PermanentError("the document has no text to summarize")
    words = max(10, int(params.max_tokens * 0.75))
    calls = 0
    if len(chunks) == 1:
        final = await model_step(ctx, "summary", prompt(
            f"Summarize this text in at most {words} words.", chunks[0]),
            max_tokens=params.max_tokens)
        calls = 1
    else:
        await ctx.progress(1, f"{len(chunks)} chunks to summarize")
        parts: list[str] = []
        for i, chunk in enumerate(chunks):
            done = await model_step(ctx, f"map-{i}", prompt(
                f"Summarize this part ({i + 1} of {len(chunks)}) of a longer document in "
                f"at most {words} words.", chunk), max_tokens=params.max_tokens)
            parts.append(done["text"])
            calls += 1
            await ctx.progress(90 * (i + 1) / len(chunks), f"summarized chunk {i + 1}/"
                               f"{len(chunks)}")
        level = 1
        while len(parts) > 2 and sum(map(len, parts)) > params.chunk_size:
            merged = []
            for j, group in enumerate(groups(parts, params.chunk_size)):
                done = await model_step(ctx, f"reduce-{level}-{j}", combine(group, words),
                                        max_tokens=params.max_tokens)
                merged.append(done["text"])
                calls += 1
            parts, level = merged, level + 1
        final = await model_step(ctx, "summary", combine(parts, words),
                                 max_tokens=params.max_tokens)
        calls += 1
    return {"summary": final["text"], "chunks": len(chunks), "model_calls": calls,
            "provider": final["provider"], "model": final["model"]}


def combine(parts: list[str], words: int) -> list[Message]:
    return prompt(f"These are summaries of consecutive parts of one document. Combine them "
                  f"into one summary of at most {words} words.", "\n\n".join(parts))
