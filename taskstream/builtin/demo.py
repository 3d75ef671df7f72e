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
