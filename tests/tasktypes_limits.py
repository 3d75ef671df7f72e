"""Task types with concurrency limits, loaded by the test clusters' web and worker
processes (TASKSTREAM_TASKS=tests.tasktypes_limits)."""

import asyncio

from taskstream import Params, TaskContext, task


class NapParams(Params):
    duration: float = 0.5
    account: str = ""


@task(limit=2)
async def limited_nap(ctx: TaskContext, params: NapParams) -> dict[str, float]:
    """Sleeps; at most two run at once across all workers."""
    await asyncio.sleep(params.duration)
    return {"slept": params.duration}


@task(key=lambda params, tenant: params.account, key_limit=1)
async def keyed_nap(ctx: TaskContext, params: NapParams) -> dict[str, float]:
    """Sleeps; at most one per account runs at once."""
    await asyncio.sleep(params.duration)
    return {"slept": params.duration}
