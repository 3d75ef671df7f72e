"""Taskstream: long-running tasks behind a REST API, with their progress pushed live.

What a user's code imports — declare task types, run them, follow them:

    from taskstream import Params, TaskContext, task

    class ResizeParams(Params):
        url: str

    @task(max_attempts=3, limit=4)
    async def resize(ctx: TaskContext, params: ResizeParams) -> dict[str, str]:
        await ctx.progress(50, "downloaded")
        ...

    async with taskstream.AsyncClient() as ts:
        task = await ts.submit(resize, ResizeParams(url="..."))
        async for event in ts.events(task):
            print(event.progress)

Point the service at the module with ``TASKSTREAM_TASKS=myapp.tasks``. This package and its
client need only httpx, pydantic and rich; the service itself is the ``server`` extra.
"""

from taskstream.client import AsyncClient, Client, TaskCancelled, TaskFailed
from taskstream.context import AttemptSuperseded, SoftTimeLimitExceeded, TaskContext
from taskstream.declaration import Params, PermanentError, Priority, TaskDef, task

__all__ = [
    "AsyncClient",
    "AttemptSuperseded",
    "Client",
    "Params",
    "PermanentError",
    "Priority",
    "SoftTimeLimitExceeded",
    "TaskCancelled",
    "TaskContext",
    "TaskDef",
    "TaskFailed",
    "task",
]
