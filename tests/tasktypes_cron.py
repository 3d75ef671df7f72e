"""A task module with a declared cron schedule (loaded with TASKSTREAM_TASKS)."""

from taskstream import Params, TaskContext, task


class TickParams(Params):
    label: str = "tick"


@task(cron="* * * * * *", cron_params={"label": "declared"})
async def cron_tick(ctx: TaskContext, params: TickParams) -> dict[str, str]:
    """Fires every second: proves a declared schedule runs."""
    return {"label": params.label}
