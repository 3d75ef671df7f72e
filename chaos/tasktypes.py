"""The chaos run's own task type, loaded by its web and worker processes like a user's
(``TASKSTREAM_TASKS=chaos.tasktypes``): the demo task under a per-type limit and a per-key
limit, so the run checks that no limit is exceeded and no slot leaks while workers die."""

from typing import Any, Final

from taskstream import TaskContext, task
from taskstream.builtin.demo import DemoParams, demo

LIMITED: Final = "chaos_limited"
LIMIT: Final = 3
KEY_LIMIT: Final = 2


def _parity(params: DemoParams, tenant: str) -> str:
    return "odd" if params.steps % 2 else "even"


@task(LIMITED, description="Chaos: the demo task, at most 3 at once and 2 per key.",
      limit=LIMIT, key=_parity, key_limit=KEY_LIMIT)
async def chaos_limited(ctx: TaskContext, params: DemoParams) -> dict[str, Any]:
    return await demo.fn(ctx, params)
