"""The chaos run's own task type, loaded by its web and worker processes like a user's
(``TASKSTREAM_TASKS=chaos.tasktypes``): the demo task under a per-type limit and a per-key
limit, so the run checks that no limit is exceeded and no slot leaks while workers die; and
multi-step tasks and tasks that wait for a signal, so it checks that no completed step runs
again and no wait resumes twice."""

import asyncio
from typing import Any, Final, cast

from pydantic import Field

from taskstream import Params, TaskContext, task
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


# --- durable steps and waits ------------------------------------------------------------------

STEPS: Final = "chaos_steps"
APPROVAL: Final = "chaos_approval"
#: Every execution of a step leaves a row here (task, step, the attempt that ran it): the real
#: side effect that the check counts. The run creates the table (chaos.run).
STEP_RUNS_DDL: Final = """CREATE TABLE IF NOT EXISTS chaos_step_runs (
    task_id uuid NOT NULL, step text NOT NULL, attempt integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp())"""


class StepsParams(Params):
    steps: int = Field(ge=1, le=20)
    seconds: float = Field(ge=0, le=10, description="Each step's work.")


async def _ran(ctx: TaskContext, step: str) -> None:
    pool = cast(Any, ctx).pool  # a worker's context: the chaos table is in its database
    await pool.execute("INSERT INTO chaos_step_runs (task_id, step, attempt) "
                       "VALUES ($1::uuid, $2, $3)", ctx.task_id, step, ctx.attempt)


@task(STEPS, description="Chaos: N durable steps; a completed one must never run again.",
      max_attempts=3, backoff=0.2)
async def chaos_steps(ctx: TaskContext, params: StepsParams) -> dict[str, Any]:
    async def work(i: int) -> int:
        await _ran(ctx, f"s{i}")
        await asyncio.sleep(params.seconds)
        await ctx.progress(100 * (i + 1) / params.steps, f"step {i + 1}")
        return i * i

    values = [await ctx.step(f"s{i}", work, i) for i in range(params.steps)]
    return {"steps": params.steps, "values": values}


class ApprovalParams(Params):
    seconds: float = Field(ge=0, le=10)


@task(APPROVAL, description="Chaos: a step, a wait for the 'go' signal, a step.",
      max_attempts=3, backoff=0.2)
async def chaos_approval(ctx: TaskContext, params: ApprovalParams) -> dict[str, Any]:
    async def draft() -> str:
        await _ran(ctx, "draft")
        await asyncio.sleep(params.seconds)
        return "draft"

    first = await ctx.step("draft", draft)
    payload = await ctx.wait_for("go", timeout=600)

    async def publish() -> Any:
        await _ran(ctx, "publish")
        return payload

    return {"first": first, "payload": await ctx.step("publish", publish)}
