"""With no model configured (the extractive summarizer): ``summarize`` still works, map-reduce
included, and records no tokens; ``agent`` refuses clearly. Driven through the task functions
with a small in-process context (the durable-step machinery itself is tested in
test_steps.py; the task types end to end in test_llm_tasks.py)."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from taskstream.builtin.agent import AgentParams, agent
from taskstream.builtin.summarize import SummarizeParams, summarize
from taskstream.core.settings import Settings
from taskstream.declaration import PermanentError


class Text:
    def __init__(self) -> None:
        self.text = ""

    async def write(self, delta: str) -> None:
        self.text += delta


class Ctx:
    """Steps run once, in order, and are remembered; text streams are kept."""

    def __init__(self) -> None:
        self.task_id, self.owner, self.attempt = "00000000-0000-4000-8000-000000000001", "me", 1
        self.settings = Settings(llm_provider="extractive")
        self.pool = None  # nothing may be written: the extractive summarizer spends no tokens
        self.steps: dict[str, Any] = {}
        self.texts: dict[str, str] = {}

    async def step(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        assert name not in self.steps
        self.steps[name] = await fn(*args)
        return self.steps[name]

    @asynccontextmanager
    async def text_stream(self, name: str) -> AsyncIterator[Text]:
        out = Text()
        yield out
        self.texts[name] = out.text

    async def progress(self, percent: float, message: str | None = None) -> None:
        assert 0 <= percent <= 100


STORY = ("The harbour town lived on fishing for centuries. Its boats left before dawn and "
         "came back with cod and herring. A railway reached the town in 1880. After the "
         "railway came, fish reached the city markets fresh, and the harbour grew. Tourists "
         "followed the railway too. Today the harbour holds more yachts than fishing boats. ")


async def test_the_extractive_summarizer_summarizes_long_text_map_reduce() -> None:
    ctx = Ctx()
    out = await summarize.fn(ctx, SummarizeParams(text=STORY * 8, chunk_size=600,  # type: ignore[arg-type]
                                                  max_tokens=24))
    assert out["provider"] == "extractive" and out["model"] == "extractive-summarizer"
    names = list(ctx.steps)
    assert names[0] == "map-0" and names[-1] == "summary" and out["chunks"] > 2
    assert out["model_calls"] == len(names)
    # every word of the summary is the document's own: extracted, not generated
    assert out["summary"] and set(out["summary"].replace("…", "").split()) <= set(STORY.split())
    assert ctx.texts["summary"] == out["summary"]
    assert all(s["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "estimated": False}
               for s in ctx.steps.values())


async def test_the_agent_refuses_to_run_without_a_model() -> None:
    with pytest.raises(PermanentError, match="the agent needs a language model"):
        await agent.fn(Ctx(), AgentParams(question="What is 2 + 2?"))  # type: ignore[arg-type]


async def test_a_provider_that_cannot_work_fails_without_retries() -> None:
    ctx = Ctx()
    ctx.settings = Settings(llm_provider="openai", llm_base_url="")
    with pytest.raises(PermanentError, match="needs TASKSTREAM_LLM_BASE_URL"):
        await summarize.fn(ctx, SummarizeParams(text="Some text."))  # type: ignore[arg-type]
