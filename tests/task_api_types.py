"""A task module for tests/test_task_api.py whose parameter schema has two versions, picked
by ``TT_ECHO_VERSION``: a web process and workers that disagree about a type."""

import os

from taskstream import Params, TaskContext, task


class EchoV1(Params):
    text: str


class EchoV2(Params):
    text: str
    shout: bool = False


EchoParams = EchoV2 if os.environ.get("TT_ECHO_VERSION") == "2" else EchoV1


@task(description="Return the text.")
async def tt_echo(ctx: TaskContext, params: EchoParams) -> dict[str, str]:  # type: ignore[valid-type]
    await ctx.progress(100)
    return {"text": params.text}
