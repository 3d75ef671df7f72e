"""``demo`` and ``noop``: timed work in reported steps, and a no-op for benchmarks."""

import asyncio
from typing import Any

from pydantic import Field

from taskstream.context import TaskContext
from taskstream.declaration import Params, task


class DemoParams(Params):
    """Work for ``duration`` seconds, split into ``steps`` reported progress steps."""

    duration: float = Field(5.0, ge=0, le=3600, description="Total seconds of work.")
    steps: int = Field(10, ge=1, le=1000, description="Progress events to report.")
    fail_at_step: int | None = Field(
        None, ge=1, description="Raise an error at this step (to see a failure end to end)."
    )
    fail_attempts: int = Field(
        1_000_000, ge=0, description="With fail_at_step: only the first N attempts fail."
    )


class NoopParams(Params):
    """Does nothing but report ``events`` progress events as fast as it can (benchmarks)."""

    events: int = Field(0, ge=0, le=100_000)


class DemoFailure(RuntimeError):
    pass


@task(description="Sleep through N seconds in reported steps.")
async def demo(ctx: TaskContext, params: DemoParams) -> dict[str, Any]:
    step_time = params.duration / params.steps
    try:
        for step in range(1, params.steps + 1):
            await asyncio.sleep(step_time)
            if params.fail_at_step == step and ctx.attempt <= params.fail_attempts:
                raise DemoFailure(f"failed at step {step} of {params.steps}, as asked")
            await ctx.progress(100 * step / params.steps, f"step {step}/{params.steps}")
    except asyncio.CancelledError:
        # Cancellation reaches task code as CancelledError: clean up, then let it go on.
        await ctx.log("demo cancelled; cleaned up")
        raise
    return {"steps": params.steps, "duration": params.duration}


@task(description="No work; optionally a burst of progress events.")
async def noop(ctx: TaskContext, params: NoopParams) -> dict[str, Any]:
    for i in range(1, params.events + 1):
        await ctx.progress(100 * i / params.events)
    return {"events": params.events}


#: The words ``demo_tokens`` cycles through: multi-byte and astral characters on purpose, so
#: offsets (code points) and bytes differ.
TOKEN_WORDS = ("Tokens ", "stream ", "naïve ", "café ", "γράμμα ", "🙂 ", "done.\n", "日本 ")


def demo_text(tokens: int, seed: int = 0) -> str:
    """The text ``demo_tokens`` writes for these params (tests compare with it)."""
    return "".join(TOKEN_WORDS[(seed + i) % len(TOKEN_WORDS)] for i in range(tokens))


class TokensParams(Params):
    """Write ``tokens`` model-like tokens to a text stream at ``rate`` per second."""

    tokens: int = Field(50, ge=0, le=100_000)
    rate: float = Field(50.0, ge=0, le=10_000, description="Tokens per second; 0: at once.")
    duration: float = Field(0.0, ge=0, le=3600, description="Run at least this long.")
    stream: str = Field("answer", min_length=1, max_length=200)
    seed: int = Field(0, ge=0)
    fail_at_token: int | None = Field(None, ge=0, description="Raise after this many tokens.")
    fail_attempts: int = Field(1, ge=0, description="With fail_at_token: attempts that fail.")


@task(description="Stream synthetic tokens like a language model (live lane demo, bench).")
async def demo_tokens(ctx: TaskContext, params: TokensParams) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with ctx.text_stream(params.stream) as out:
        for i in range(params.tokens):
            if params.fail_at_token == i and ctx.attempt <= params.fail_attempts:
                raise DemoFailure(f"failed after {i} tokens, as asked")
            if params.rate:
                await asyncio.sleep(max(0.0, start + i / params.rate - loop.time()))
            await out.write(TOKEN_WORDS[(params.seed + i) % len(TOKEN_WORDS)])
        text = out.text
    await asyncio.sleep(max(0.0, start + params.duration - loop.time()))
    return {"tokens": params.tokens, "length": len(text)}
