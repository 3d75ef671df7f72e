"""``demo`` and ``noop``: timed work in reported steps, and a no-op for benchmarks."""

import asyncio
from typing import Any

from taskstream.core.tasktypes import DemoParams, NoopParams
from worker.context import TaskContext
from worker.tasks import task


class DemoFailure(RuntimeError):
    pass


@task("demo")
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


@task("noop")
async def noop(ctx: TaskContext, params: NoopParams) -> dict[str, Any]:
    for i in range(1, params.events + 1):
        await ctx.progress(100 * i / params.events)
    return {"events": params.events}
