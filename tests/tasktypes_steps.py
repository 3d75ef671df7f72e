"""Task types for the durable-steps and waits tests (loaded with TASKSTREAM_TASKS).

Each step leaves a real side effect: a line appended to ``<dir>/<step>.runs``; the tests
count those lines to prove which steps ran again after a kill, a retry or a re-drive."""

import asyncio
from pathlib import Path
from typing import Any, Literal

from taskstream import Params, PermanentError, TaskContext, task


def mark(folder: str, name: str) -> int:
    """Record one run of a step; returns how many runs it has now."""
    path = Path(folder) / f"{name}.runs"
    with path.open("a") as f:
        f.write("x\n")
    return len(path.read_text().splitlines())


def runs(folder: str | Path, name: str) -> int:
    path = Path(folder) / f"{name}.runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


class StepParams(Params):
    dir: str
    slow_step: int = 0  # this step waits for a "<dir>/go" file (0: none)
    fail_step: int = 0  # this step raises once (a retry, or a re-drive, gets past it)
    permanent: bool = False  # ...with PermanentError (no retry; a re-drive needed)


@task(max_attempts=3, backoff=0.1)
async def stepper(ctx: TaskContext, params: StepParams) -> dict[str, Any]:
    """Four steps; step 2 is a plain function (runs in a thread), the others async."""

    async def step(n: int) -> dict[str, int]:
        count = mark(params.dir, f"step{n}")
        if n == params.slow_step:
            go = Path(params.dir) / "go"
            while not go.exists():  # noqa: ASYNC110 - another process makes the file
                await asyncio.sleep(0.05)
        if n == params.fail_step and runs(params.dir, f"failed{n}") == 0:
            mark(params.dir, f"failed{n}")
            raise (PermanentError if params.permanent else RuntimeError)(f"step {n} fails once")
        await ctx.progress(n * 25, f"step {n}")
        return {"n": n, "run": count}

    def sync_step() -> list[int]:
        mark(params.dir, "step2")
        return [2, 2]

    one = await ctx.step("one", step, 1)
    two = await ctx.step("two", sync_step)
    three = await ctx.step("three", step, 3)
    four = await ctx.step("four", step, 4)
    return {"one": one, "two": two, "three": three, "four": four}


class ReorderParams(Params):
    dir: str
    duplicate: bool = False


@task(max_attempts=3, backoff=0.1)
async def reorder(ctx: TaskContext, params: ReorderParams) -> None:
    """Asks for its steps in another order on its second attempt: a StepOrderError."""

    async def noop() -> int:
        return 1

    if params.duplicate:
        await ctx.step("same", noop)
        await ctx.step("same", noop)
        return
    first = runs(params.dir, "attempts") == 0
    mark(params.dir, "attempts")
    await ctx.step("a" if first else "b", noop)
    if first:
        raise RuntimeError("fail once, to be retried")


class ApprovalParams(Params):
    dir: str
    timeout: float | None = None
    on_timeout: Literal["fail", "continue"] = "fail"
    hold: float = 0.0  # seconds to sleep before waiting (lets a test signal first)


@task(max_attempts=2)
async def approval(ctx: TaskContext, params: ApprovalParams) -> dict[str, Any]:
    """draft (a step) -> wait for "approval" -> publish (a step) with the approver's payload."""

    async def draft() -> str:
        mark(params.dir, "draft")
        return "a draft"

    text = await ctx.step("draft", draft)
    if params.hold:
        await asyncio.sleep(params.hold)
    decision = await ctx.wait_for("approval", timeout=params.timeout,
                                  on_timeout=params.on_timeout)

    async def publish() -> dict[str, Any]:
        mark(params.dir, "publish")
        return {"text": text, "decision": decision}

    return await ctx.step("publish", publish)


class TextParams(Params):
    words: int = 5


@task()
async def writer(ctx: TaskContext, params: TextParams) -> str:
    """Writes a text through ctx.text_stream, a word at a time."""
    async with ctx.text_stream("answer") as out:
        for i in range(params.words):
            await out.write(f"word{i} ")
    return out.text
