"""A task module for tests/test_task_api.py that only some processes load."""

from taskstream import Params, TaskContext, task


class ExtraParams(Params):
    n: int = 1


@task()
async def tt_extra(ctx: TaskContext, params: ExtraParams) -> int:
    return params.n
