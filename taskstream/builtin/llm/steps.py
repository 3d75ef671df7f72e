"""A model call as a durable step: its text streamed (``ctx.text_stream``, named as the step)
and recorded, its tokens recorded (``core.store_llm``), its result — text, usage, provider,
model — the step's record, so a retried or resumed run replays it instead of calling the
model again (and counts no tokens twice).

A call whose stream breaks (``LLMStreamCut``) or that the provider cannot answer
(``LLMUnavailable``) fails the step and so the attempt; the task's retries re-run the step
whole. A refused request (``LLMRequestError``: a bad key, an unknown model) is a
``PermanentError``. Tokens of a call that failed half-way are not recorded: the provider
never said how many there were.
"""

from __future__ import annotations

from typing import Any, cast

from taskstream.builtin.llm.base import LLM, LLMRequestError, Message, Usage, complete
from taskstream.context import TaskContext
from taskstream.declaration import PermanentError


def llm_for(ctx: TaskContext) -> LLM:
    """The worker's provider, as its settings choose; a configuration that cannot work
    (``openai`` without a base URL) fails the task without retries."""
    from taskstream.builtin.llm import shared_llm

    try:
        return shared_llm(cast(Any, ctx).settings)
    except LLMRequestError as exc:
        raise PermanentError(str(exc)) from exc


async def model_step(ctx: TaskContext, name: str, messages: list[Message], *,
                     max_tokens: int) -> dict[str, Any]:
    """Run one completion as the durable step ``name``; returns
    ``{"text", "usage": {...}, "provider", "model"}`` (recorded, or replayed)."""

    async def call() -> dict[str, Any]:
        from taskstream.core import store_llm

        llm = llm_for(ctx)
        try:
            async with ctx.text_stream(name) as out:
                done = await complete(llm, messages, max_tokens=max_tokens,
                                      on_delta=out.write)
        except LLMRequestError as exc:
            raise PermanentError(str(exc)) from exc
        if llm.provider != "extractive":  # not a model: it spends no tokens
            u = done.usage
            await store_llm.record_usage(
                cast(Any, ctx).pool, task_id=ctx.task_id, owner=ctx.owner, step=name,
                attempt=ctx.attempt, provider=llm.provider, model=llm.model,
                prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                estimated=u.estimated)
        return {"text": done.text, "usage": done.usage.to_json(),
                "provider": llm.provider, "model": llm.model}

    result: dict[str, Any] = await ctx.step(name, call)
    return result


def tokens_of(step_result: dict[str, Any]) -> int:
    return Usage.from_json(step_result["usage"]).total_tokens
