"""Scenario ``summaries``: ``summarize`` tasks against the test model server (real HTTP, the
OpenAI streaming protocol, no token delay), one worker: summaries/s from POST /tasks to
``completed`` — each a durable step, a streamed text, a usage row — against the same
completions made straight from this process with the same client (the model server's and
the client's own cost: the ceiling).
"""

import asyncio
import time
from typing import Any

from bench.common import Outcome, Row, Run, count_status, median, ratio, submit_many, wait_for
from taskstream.builtin.llm import complete
from taskstream.builtin.llm.openai import OpenAICompatible
from taskstream.devservices.llmserver import LLMServer

TEXT = ("Rivers carry water from high mountains down to the sea. Along the way they cut "
        "valleys, feed farms and move sand. Cities grew beside rivers because boats could "
        "carry goods cheaply. ") * 4


async def _direct(url: str, n: int, concurrency: int) -> float:
    llm = OpenAICompatible(url, "bench")
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await complete(llm, [
                {"role": "system", "content": "You summarize documents."},
                {"role": "user", "content": f"Summarize.\n\nTEXT:\nDocument {i}: {TEXT}"}],
                max_tokens=256)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await llm.aclose()
    return n / (time.perf_counter() - t0)


async def summaries(run: Run) -> Outcome:
    env, sz, out = run.env, run.sizes, Outcome()
    n, c = max(10, sz.throughput_tasks // 4), sz.submit_concurrency
    llm = LLMServer(env.logdir / f"{env.db_name}-llmserver.log", name="llmserver")
    await asyncio.to_thread(llm.start)
    env.procs.append(llm)
    web = await env.web("web-llm")
    workers = await env.workers(1, "worker-llm", TASKSTREAM_LLM_BASE_URL=llm.url,
                                TASKSTREAM_LLM_MODEL="bench")
    bodies = [{"type": "summarize", "params": {"text": f"Document {i}: {TEXT}"}}
              for i in range(n)]
    rates: list[float] = []
    direct: list[float] = []
    pool = await run.pool()
    try:
        for r in range(sz.rounds):
            await env.reset()
            await asyncio.to_thread(llm.faults, reset=True)

            async def done() -> bool:
                return await count_status(pool, "completed") + \
                    await count_status(pool, "failed") >= n

            t0 = time.perf_counter()
            ids, _, _ = await submit_many(web.url, bodies, c)
            finished = await wait_for(done, 300, 0.01)
            seconds = time.perf_counter() - t0
            completed = await count_status(pool, "completed")
            calls = (await asyncio.to_thread(llm.stats)).get("completed", 0)
            texts = await pool.fetchval(
                "SELECT count(*) FROM task_events WHERE type = 'text'")
            res: dict[str, Any] = {"round": r, "tasks": n, "seconds": seconds,
                                   "summaries_per_s": n / seconds, "completed": completed,
                                   "model_calls": calls, "text_events": texts}
            out.check("summaries taskstream: every summary done, one model call and one "
                      "text event each", finished and completed == n == len(ids) == calls
                      == texts)
            rates.append(res["summaries_per_s"])
            res["direct_per_s"] = await _direct(llm.url, n, min(c, 50))
            direct.append(res["direct_per_s"])
            out.rounds.append(res)
            run.log(f"summaries round {r}: {res['summaries_per_s']:.0f}/s as tasks, "
                    f"{res['direct_per_s']:.0f}/s direct")
    finally:
        await pool.close()
        env.stop([*workers, web, llm])
    ts, base = median(rates), median(direct)
    out.rows.append(Row("9 summaries", "summarize tasks/s, 1 worker, test model server", ts,
                        "summaries/s", "direct client calls", base, ratio(ts, base)))
    out.notes.append(f"{n} one-chunk summarize tasks over HTTP until completed; the model "
                     "server streams ~13 tokens per answer with no delay")
    return out
