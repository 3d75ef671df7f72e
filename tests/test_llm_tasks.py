"""The language-model task types end to end: a web process and a worker pointed at the test
model server (real HTTP, the OpenAI streaming protocol) — ``summarize`` short and
map-reduced, from text and from an upload, resumed after a stream cut half-way; ``agent``
planning, calling a tool and answering, and failing clearly past its step or token budget;
token usage per step, per run (the task's snapshot) and per tenant (GET /usage)."""

import asyncio
import importlib.util
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from taskstream.builtin.chunking import chunk_pages
from taskstream.builtin.parsing import Page
from taskstream.devservices.llmserver import LLMServer
from tests.cluster import Cluster, drop_cluster, start_cluster
from tests.conftest import wait_terminal

WORDS = ("Rivers carry water from high mountains down to the sea. Along the way they cut "
         "valleys, feed farms and move sand. Cities grew beside rivers because boats could "
         "carry goods cheaply. ").split()


@pytest.fixture(scope="module")
async def llm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LLMServer]:
    s = LLMServer(tmp_path_factory.mktemp("llm") / "llmserver.log")
    await asyncio.to_thread(s.start)
    yield s
    s.stop()


@pytest.fixture(scope="module")
async def cluster(backing: tuple[str, str], llm: LLMServer,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    c = await start_cluster(
        backing[0], backing[1], tmp_path_factory.mktemp("cluster"), workers=1,
        TASKSTREAM_LLM_BASE_URL=llm.url, TASKSTREAM_LLM_MODEL="test-model",
        TASKSTREAM_LLM_RETRY_BACKOFF="0.05", TASKSTREAM_LLM_READ_TIMEOUT="5")
    yield c
    await drop_cluster(backing[0], c)


@pytest.fixture
async def api(cluster: Cluster, llm: LLMServer) -> AsyncIterator[httpx.AsyncClient]:
    await asyncio.to_thread(llm.faults, reset=True, retry_after=0.2)
    async with httpx.AsyncClient(base_url=cluster.web.url, timeout=30) as c:
        yield c


async def run(c: httpx.AsyncClient, type_: str, **params: Any) -> dict[str, Any]:
    r = await c.post("/tasks", json={"type": type_, "params": params})
    assert r.status_code == 202, r.text
    return await wait_terminal(c, r.json()["task_id"], timeout=60)


async def events(c: httpx.AsyncClient, tid: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await c.get(f"/tasks/{tid}/events")).json()["items"]
    return items


def texts(evs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["data"]["stream"]: e["data"]["text"] for e in evs if e["type"] == "text"}


async def test_a_short_text_is_summarized_in_one_streamed_step(api: httpx.AsyncClient) -> None:
    before = (await api.get("/usage")).json()
    done = await run(api, "summarize", text=" ".join(WORDS))
    assert done["status"] == "completed", done
    summary = "Summary: Rivers carry water from high mountains down to the sea Along the"
    assert done["result"]["summary"] == summary
    assert done["result"] | {"summary": ""} == {
        "summary": "", "chunks": 1, "model_calls": 1, "provider": "openai",
        "model": "test-model"}
    assert texts(await events(api, done["task_id"])) == {"summary": summary}
    usage = done["usage"]
    assert usage["calls"] == 1 and usage["completion_tokens"] == len(summary.split())
    assert usage["prompt_tokens"] > len(WORDS) and not usage["estimated"]
    assert usage["steps"][0] | {"prompt_tokens": 0} == {
        "step": "summary", "attempt": 1, "provider": "openai", "model": "test-model",
        "prompt_tokens": 0, "completion_tokens": 13, "estimated": False}
    after = (await api.get("/usage")).json()
    assert after["calls"] == before["calls"] + 1
    assert after["total_tokens"] == before["total_tokens"] + usage["total_tokens"]


async def test_a_long_text_is_map_reduced_and_resumes_after_a_cut_stream(
        api: httpx.AsyncClient, llm: LLMServer) -> None:
    text = " ".join(WORDS * 20)  # ~3,900 characters: nine chunks of 500
    # the first two maps answer, the third's stream is cut half-way: the attempt fails and
    # the retry replays map-0 and map-1 from their record (and waits out a 429)
    await asyncio.to_thread(llm.faults, next=["ok", "ok", "cut", "429"])
    done = await run(api, "summarize", text=text, chunk_size=500, max_tokens=16)
    assert done["status"] == "completed", done
    assert done["attempts"] == 2
    chunks = done["result"]["chunks"]
    assert chunks == len(list(chunk_pages([Page(None, text)], 500, 50))) > 2
    steps = [(s["name"], s["attempt"]) for s in
             (await api.get(f"/tasks/{done['task_id']}/steps")).json()]
    # the partial summaries (~80 characters each) are longer than a chunk together: one
    # level of reduction, in groups, then the summary
    reduces = [n for n, _ in steps if n.startswith("reduce-")]
    assert reduces == [f"reduce-1-{j}" for j in range(len(reduces))] and len(reduces) >= 2
    assert steps == [("map-0", 1), ("map-1", 1), *((f"map-{i}", 2) for i in range(2, chunks)),
                     *((n, 2) for n in reduces), ("summary", 2)]
    assert done["result"]["model_calls"] == len(steps)
    # usage: every call that completed, once; the cut call's tokens were never reported
    usage = done["usage"]
    assert [(s["step"], s["attempt"]) for s in usage["steps"]] == steps
    assert llm.stats()["requests"] == len(steps) + 2  # + the cut one + the 429
    evs = await events(api, done["task_id"])
    assert set(texts(evs)) == {name for name, _ in steps}
    assert texts(evs)["summary"] == done["result"]["summary"]


async def test_an_upload_is_summarized(api: httpx.AsyncClient) -> None:
    r = await api.post("/upload", files={"file": ("rivers.txt", " ".join(WORDS).encode(),
                                                  "text/plain")})
    assert r.status_code == 202, r.text
    upload_id = r.json()["upload_id"]
    done = await run(api, "summarize", upload_id=upload_id)
    assert done["status"] == "completed", done
    assert done["result"]["summary"].startswith("Summary: Rivers carry water")
    missing = await run(api, "summarize", upload_id="00000000-0000-4000-8000-000000000000")
    assert missing["status"] == "failed" and "not found" in missing["error"]
    assert missing["attempts"] == 1  # permanent: not retried


@pytest.mark.parametrize("params", [
    {}, {"text": "x", "upload_id": "00000000-0000-4000-8000-000000000000"},
    {"text": ""}, {"text": "x", "max_tokens": 5}, {"text": "x", "chunk_size": 10},
])
async def test_summarize_params_are_checked_at_submission(api: httpx.AsyncClient,
                                                          params: dict[str, Any]) -> None:
    r = await api.post("/tasks", json={"type": "summarize", "params": params})
    assert r.status_code == 422, r.text


async def test_the_agent_plans_calls_a_tool_and_answers(api: httpx.AsyncClient) -> None:
    done = await run(api, "agent", question="What is 17 * 3 + 1?")
    assert done["status"] == "completed", done
    result = done["result"]
    assert result["steps"] == [{"tool": "calculator", "input": "17 * 3 + 1",
                                "observation": "52"}]
    assert result["answer"] == "Answer: 52"
    names = [s["name"] for s in (await api.get(f"/tasks/{done['task_id']}/steps")).json()]
    assert names == ["plan", "decide-0", "tool-0", "decide-1", "answer"]
    streamed = texts(await events(api, done["task_id"]))
    assert set(streamed) == {"plan", "decide-0", "decide-1", "answer"}
    assert streamed["decide-0"] == "CALC: 17 * 3 + 1"
    assert done["usage"]["calls"] == 4
    assert result["tokens_used"] == done["usage"]["total_tokens"]


async def test_the_agent_fails_clearly_past_its_step_budget(api: httpx.AsyncClient) -> None:
    done = await run(api, "agent", question="Keep searching for rivers", max_steps=2,
                     tools=["calculator"])
    assert done["status"] == "failed", done
    assert done["error"] == "BudgetExceeded: step budget exhausted: 2 tool calls and no " \
        "answer yet"
    assert done["attempts"] == 1  # not retried: it would spend the same again


async def test_the_agent_fails_clearly_past_its_token_budget(api: httpx.AsyncClient) -> None:
    done = await run(api, "agent", question="What is 2 + 2?", max_tokens=150)
    assert done["status"] == "failed" and done["attempts"] == 1, done
    m = re.fullmatch(r"BudgetExceeded: token budget exceeded at step '(decide-\d)': "
                     r"(\d+) of 150 tokens used", done["error"])
    assert m is not None, done["error"]
    used = int(m.group(2))
    # the budget counts what the run's model calls cost, as recorded
    assert used > 150 and done["usage"]["total_tokens"] == used
    assert done["usage"]["steps"][-1]["step"] == m.group(1)


@pytest.mark.parametrize("params", [
    {"question": ""}, {"question": "q", "max_steps": 0}, {"question": "q", "max_steps": 21},
    {"question": "q", "max_tokens": 10}, {"question": "q", "tools": ["shell"]},
])
async def test_agent_params_are_checked_at_submission(api: httpx.AsyncClient,
                                                      params: dict[str, Any]) -> None:
    r = await api.post("/tasks", json={"type": "agent", "params": params})
    assert r.status_code == 422, r.text


def test_the_calculator_does_arithmetic_and_nothing_else() -> None:
    from taskstream.builtin.agent import calculate, parse_action

    assert calculate("17 * 3 + 1") == "52" and calculate("7 / 2") == "3.5"
    assert calculate("2 ** 1000").startswith("error")
    assert calculate("__import__('os')").startswith("error: not arithmetic")
    assert calculate("1/0").startswith("error")
    assert parse_action("Thinking...\nsearch: rivers of Europe") == ("search", "rivers of Europe")
    assert parse_action("The answer is 4.") == ("answer", "The answer is 4.")



@pytest.mark.skipif(importlib.util.find_spec("taskstream.builtin.search") is None,
                    reason="document search (issue 12) is not on this branch")
async def test_the_agent_searches_the_callers_documents(api: httpx.AsyncClient) -> None:
    r = await api.post("/upload", files={"file": ("harbour.txt", (
        b"The harbour town lived on fishing. A railway reached the town in 1880, and fish "
        b"reached the city markets fresh."), "text/plain")})
    assert r.status_code == 202, r.text
    stored = await wait_terminal(api, r.json()["task_id"], timeout=60)
    assert stored["status"] == "completed", stored
    done = await run(api, "agent", question="When did the railway reach the harbour town",
                     tools=["search"])
    assert done["status"] == "completed", done
    (call,) = done["result"]["steps"]
    assert call["tool"] == "search" and call["input"].startswith("When did the railway")
    assert "[harbour.txt p.1]" in call["observation"] and "1880" in call["observation"]
    assert done["result"]["answer"].startswith("Answer: [harbour.txt p.1]")


async def test_a_batch_generates_100_summaries(api: httpx.AsyncClient) -> None:
    """The tutorial's "generate 100 summaries": one POST /batches, a hundred summarize
    children against the model server, one parent that completes when they all have."""
    before = (await api.get("/usage")).json()
    r = await api.post("/batches", json={"tasks": [
        {"type": "summarize", "params": {"text": f"Part {i}. " + " ".join(WORDS)}}
        for i in range(100)]})
    assert r.status_code == 202, r.text
    parent = await wait_terminal(api, r.json()["task_id"], timeout=120)
    assert parent["status"] == "completed", parent
    kids = (await api.get(f"/batches/{parent['task_id']}/children")).json()["items"]
    assert len(kids) == 100 and {k["status"] for k in kids} == {"completed"}
    assert {k["result"]["summary"] for k in kids} == {
        "Summary: Part Rivers carry water from high mountains down to the sea Along"}
    after = (await api.get("/usage")).json()
    assert after["calls"] == before["calls"] + 100
