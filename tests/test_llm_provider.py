"""The model providers: the OpenAI-compatible client against a real HTTP server speaking the
streaming protocol (taskstream.devservices.llmserver) with its faults — 429 + Retry-After,
5xx, a stream cut half-way or before its first token, a slow first token, no usage chunk —
and the extractive summarizer, and which provider the one setting picks."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskstream.builtin.llm import (
    LLMRequestError,
    LLMStreamCut,
    LLMUnavailable,
    Message,
    Usage,
    complete,
    make_llm,
    resolve_provider,
)
from taskstream.builtin.llm.extractive import ExtractiveSummarizer, summarize
from taskstream.builtin.llm.openai import OpenAICompatible
from taskstream.client.errors import parse_retry_after as _retry_after
from taskstream.core.settings import Settings
from taskstream.devservices.llmserver import LLMServer, answer

SUMMARY: list[Message] = [
    {"role": "system", "content": "Summarize the text in one sentence."},
    {"role": "user", "content": "TEXT: Rivers carry water from mountains down to the sea."},
]
EXPECTED = "".join(answer([dict(m) for m in SUMMARY], 256))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMServer]:
    s = LLMServer(tmp_path_factory.mktemp("llm") / "llmserver.log").start()
    yield s
    s.stop()


@pytest.fixture
def fresh(server: LLMServer) -> LLMServer:
    server.faults(reset=True, retry_after=1, slow_first_seconds=1, token_delay=0)
    return server


def client(server: LLMServer, **kw: float) -> OpenAICompatible:
    opts: dict[str, float] = {"read_timeout": 5.0, "backoff": 0.05, "max_retries": 3, **kw}
    return OpenAICompatible(server.url, "test-model", "sk-test",
                            connect_timeout=2.0, read_timeout=opts["read_timeout"],
                            backoff=opts["backoff"], max_retries=int(opts["max_retries"]),
                            max_wait=opts.get("max_wait", 60.0))


async def test_streams_deltas_then_the_usage_the_server_reports(fresh: LLMServer) -> None:
    llm = client(fresh)
    items = [i async for i in llm.stream(SUMMARY, max_tokens=64)]
    await llm.aclose()
    deltas = [i for i in items if isinstance(i, str)]
    assert EXPECTED.startswith("Summary: Rivers carry water")
    assert "".join(deltas) == EXPECTED and len(deltas) == len(EXPECTED.split())
    # the last item, and only one: the server's own counts, not an estimate
    assert items[-1] == Usage(prompt_tokens=16, completion_tokens=len(deltas))
    assert sum(isinstance(i, Usage) for i in items) == 1
    assert fresh.stats()["completed"] == 1


async def test_429_waits_for_retry_after_then_succeeds(fresh: LLMServer) -> None:
    fresh.faults(next=["429"], retry_after=0.6)
    llm = client(fresh, backoff=0.01)
    t0 = time.monotonic()
    out = await complete(llm, SUMMARY, max_tokens=64)
    took = time.monotonic() - t0
    await llm.aclose()
    assert out.text == EXPECTED and llm.retries == 1
    assert took >= 0.6, f"Retry-After 0.6 s not honoured (answered after {took:.2f}s)"
    assert fresh.stats()["429"] == 1


async def test_a_retry_after_longer_than_we_wait_fails_at_once(fresh: LLMServer) -> None:
    fresh.faults(next=["429"], retry_after=120)
    llm = client(fresh, max_wait=10)
    t0 = time.monotonic()
    with pytest.raises(LLMUnavailable, match="Retry-After 120s"):
        await complete(llm, SUMMARY, max_tokens=64)
    await llm.aclose()
    assert time.monotonic() - t0 < 2


async def test_5xx_is_retried_with_backoff_until_the_budget_runs_out(fresh: LLMServer) -> None:
    fresh.faults(next=["503", "500"])
    llm = client(fresh)
    assert (await complete(llm, SUMMARY, max_tokens=64)).text == EXPECTED
    assert llm.retries == 2
    fresh.faults(next=["500"] * 4)
    with pytest.raises(LLMUnavailable, match="HTTP 500; gave up after 3 retries"):
        await complete(llm, SUMMARY, max_tokens=64)
    await llm.aclose()
    assert fresh.stats()["500"] == 5


async def test_a_stream_cut_half_way_is_an_error_not_a_short_answer(fresh: LLMServer) -> None:
    fresh.faults(next=["cut"])
    llm = client(fresh)
    seen: list[str] = []

    async def keep(d: str) -> None:
        seen.append(d)

    half = len(EXPECTED.split()) // 2  # the server cuts after half its tokens
    with pytest.raises(LLMStreamCut, match=f"after {half} deltas"):
        await complete(llm, SUMMARY, max_tokens=64, on_delta=keep)
    await llm.aclose()
    # not retried: the first half already went out; a retry would repeat it
    assert llm.retries == 0 and fresh.stats()["requests"] == 1
    assert "".join(seen) == "".join(answer([dict(m) for m in SUMMARY], 256)[:half])


async def test_a_stream_cut_before_its_first_token_is_retried(fresh: LLMServer) -> None:
    fresh.faults(next=["cut_early"])
    llm = client(fresh)
    assert (await complete(llm, SUMMARY, max_tokens=64)).text == EXPECTED
    await llm.aclose()
    assert llm.retries == 1


async def test_a_slow_first_token_within_the_read_timeout_is_waited_for(
        fresh: LLMServer) -> None:
    fresh.faults(next=["slow_first"], slow_first_seconds=1.0)
    llm = client(fresh, read_timeout=3)
    t0 = time.monotonic()
    first: list[float] = []

    async def mark(d: str) -> None:
        first.append(time.monotonic() - t0)

    assert (await complete(llm, SUMMARY, max_tokens=64, on_delta=mark)).text == EXPECTED
    await llm.aclose()
    assert llm.retries == 0 and 1.0 <= first[0] < 2.5


async def test_a_first_token_slower_than_the_read_timeout_is_retried(fresh: LLMServer) -> None:
    fresh.faults(next=["slow_first", "hang"], slow_first_seconds=2.0)
    llm = client(fresh, read_timeout=0.4)
    assert (await complete(llm, SUMMARY, max_tokens=64)).text == EXPECTED
    await llm.aclose()
    assert llm.retries == 2


async def test_no_usage_chunk_gives_an_estimate_marked_as_such(fresh: LLMServer) -> None:
    fresh.faults(next=["no_usage"])
    llm = client(fresh)
    out = await complete(llm, SUMMARY, max_tokens=64)
    await llm.aclose()
    assert out.usage.estimated and out.usage.completion_tokens == len(EXPECTED.split())
    assert out.usage.prompt_tokens > 0


async def test_a_refused_request_is_not_retried(fresh: LLMServer) -> None:
    llm = client(fresh)
    with pytest.raises(LLMRequestError, match="HTTP 400"):
        await complete(llm, [], max_tokens=8)
    await llm.aclose()
    assert llm.retries == 0


async def test_nothing_listening_is_unavailable_after_the_retries(tmp_path: Path) -> None:
    llm = OpenAICompatible("http://127.0.0.1:9/v1", "m", connect_timeout=0.5,
                           backoff=0.01, max_retries=2)
    with pytest.raises(LLMUnavailable, match="ConnectError"):
        await complete(llm, SUMMARY, max_tokens=8)
    await llm.aclose()


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert _retry_after("2") == 2.0 and _retry_after(None) is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert _retry_after("soon") is None


TEXT = ("The river rises in the mountains. Fish swim in the river all year. "
        "My cat likes naps. The river reaches the sea after many miles. "
        "Boats carry goods along the river to the sea.")


async def test_the_extractive_summarizer_picks_central_sentences_and_costs_nothing() -> None:
    assert summarize(TEXT, 12) == "The river reaches the sea after many miles."
    llm = ExtractiveSummarizer()
    out = await complete(llm, [{"role": "user", "content": f"Summarize.\nTEXT: {TEXT}"}],
                         max_tokens=20)
    assert "My cat likes naps" not in out.text and "river" in out.text
    assert out.usage == Usage(0, 0)  # not a model: no tokens


def test_one_setting_picks_the_provider() -> None:
    base = Settings(llm_base_url="", llm_provider="auto")
    assert resolve_provider(base.model_copy(update={"llm_base_url": "http://x/v1"})) == "openai"
    assert resolve_provider(base.model_copy(update={"llm_provider": "extractive",
                                                    "llm_base_url": "http://x/v1"})) \
        == "extractive"
    from taskstream.builtin.llm import local
    assert resolve_provider(base) == ("local" if local.available() else "extractive")
    with pytest.raises(LLMRequestError, match="needs TASKSTREAM_LLM_BASE_URL"):
        make_llm(base.model_copy(update={"llm_provider": "openai"}))
