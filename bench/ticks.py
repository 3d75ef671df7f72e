"""The bench's own task type, loaded like any user's (``TASKSTREAM_TASKS=bench.ticks``):
progress on a schedule, each event stamped with the wall clock at the moment it is reported
(push latency = the SSE client's receive time - that stamp; one machine, one clock)."""

import asyncio
import random
import time
from typing import Any

from pydantic import Field

from taskstream import Params, TaskContext, task

TICK = "bench_tick"


class TickParams(Params):
    count: int = Field(1, ge=0, le=100_000)
    interval: float = Field(1.0, ge=0, le=3600)
    start_at: float = Field(0.0, ge=0, description="Epoch seconds of the first tick.")
    jitter: bool = Field(True, description="Offset the first tick by U(0, interval).")


@task(TICK, description="Bench: progress on a schedule.")
async def tick(ctx: TaskContext, params: TickParams) -> dict[str, Any]:
    start = params.start_at + (random.random() * params.interval if params.jitter else 0)
    await asyncio.sleep(max(0.0, start - time.time()))
    for i in range(1, params.count + 1):
        t = time.time()
        await ctx.progress(100 * i / params.count, f"{t:.6f}", data={"t": t})
        if i < params.count:
            await asyncio.sleep(max(0.0, start + i * params.interval - time.time()))
    return {"ticks": params.count}


STEPS = "bench_steps"


class StepsParams(Params):
    steps: int = Field(10, ge=0, le=100_000)


@task(STEPS, description="Bench: progress events as fast as it can (the tutorial's workload).")
async def steps(ctx: TaskContext, params: StepsParams) -> dict[str, Any]:
    for i in range(1, params.steps + 1):
        t = time.time()  # stamped as bench_tick's: push latency = receive time - this
        await ctx.progress(100 * i / params.steps, f"{t:.6f}", data={"t": t})
    return {"steps": params.steps}


#: Two no-op types, the same but for a per-type limit that never binds (the ``limits``
#: scenario: what the checked start costs against the batched one).
NOOP_FREE = "bench_noop"
NOOP_LIMITED = "bench_noop_limited"
#: Far above what one worker runs at once (max_jobs 50): the limit is checked, never hit.
UNBINDING_LIMIT = 1000


class NoopParams(Params):
    pass


@task(NOOP_FREE, description="Bench: no work.")
async def noop_free(ctx: TaskContext, params: NoopParams) -> dict[str, Any]:
    return {}


@task(NOOP_LIMITED, description="Bench: no work, under a limit that does not bind.",
      limit=UNBINDING_LIMIT)
async def noop_limited(ctx: TaskContext, params: NoopParams) -> dict[str, Any]:
    return {}


TOKENS = "bench_tokens"


class TokensParams(Params):
    rate: float = Field(50.0, ge=0, le=10_000, description="Tokens per second; 0: none.")
    seconds: float = Field(5.0, ge=0, le=3600, description="How long the run streams.")
    start_at: float = Field(0.0, ge=0, description="Epoch seconds of the first token.")


@task(TOKENS, description="Bench: a model-like text stream, each token its wall-clock stamp.")
async def tokens(ctx: TaskContext, params: TokensParams) -> dict[str, Any]:
    """Token i is written at start + i/rate and reads ``[<epoch seconds>]``: delta latency =
    the client's receive time - the stamp (coalescing into frames included)."""
    start = params.start_at + (random.random() / params.rate if params.rate else 0)
    await asyncio.sleep(max(0.0, start - time.time()))
    n = round(params.rate * params.seconds)
    async with ctx.text_stream("answer") as out:
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / params.rate - time.time()))
            await out.write(f"[{time.time():.6f}]")
    await asyncio.sleep(max(0.0, params.start_at + params.seconds - time.time()))
    return {"tokens": n}
