"""The work submitted during the run: a seeded mix of task kinds, each with the outcomes the
chaos may legitimately lead it to, submitted with an Idempotency-Key at a steady pace.

Kinds (weight in the mix, out of 114):
    demo      16%  0.2-2 s in 2-8 steps                       -> completed
    long      12%  3-7 s in 5-12 steps (likely to lose a worker) -> completed
    retry     15%  fails its first 1-2 attempts, budget allows  -> completed after retrying
    dead       5%  fails every attempt, budget 1-3              -> failed (error): dead letter
    noop      20%  a burst of 0-40 progress events              -> completed
    timeout    3%  3 s of work under a 1 s hard limit          -> failed (timeout)
    cancel     5%  3-6 s of work, cancelled after 0.2-3 s       -> cancelled (or completed)
    limited   10%  demo under a limit of 3, 2 per key (chaos.tasktypes) -> completed
    tokens     8%  demo_tokens: 30-150 model-like tokens at 40-150/s on the live lane; a
                   third fail mid-text once and retry (the text starts over) -> completed
    steps      8%  2-6 durable steps of 0.2-1 s (chaos.tasktypes)  -> completed
    approval   4%  a step, a wait for a signal sent 0.5-4 s after submission, a step
                                                               -> completed with its payload
    agent      4%  the built-in agent (plan, a calculator call, answer) against the test
                   model server, which rate-limits, errors and cuts streams -> completed
                   with the right answer (its token count is checked against the record)
    document   4%  POST /upload of a 2-6 KB text: document_process in durable steps
                   (parse, chunk, embed, store)                -> completed, stored once

Any kind may also end failed with reason ``worker_lost`` (lost with its worker ``max_crashes``
times: the poison-pill rule), which is why that outcome is allowed everywhere.

Across kinds, one task in ten is high priority and one in ten low, and one in eight is
delayed by 0.5-5 s (a Redis restart then loses its deferred job: the sweeper must bring it
back, and it must still not start before its ``run_at``).
"""

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.api import Api
from chaos.tasktypes import APPROVAL, LIMITED, STEPS
from taskstream.builtin.demo import demo_text

Outcome = tuple[str, str | None]  # (status, failure_reason)
WORKER_LOST: Outcome = ("failed", "worker_lost")
COMPLETED: Outcome = ("completed", None)

KINDS: list[tuple[str, int]] = [("demo", 16), ("long", 12), ("retry", 15), ("dead", 5),
                                ("noop", 20), ("timeout", 3), ("cancel", 5), ("limited", 10),
                                ("steps", 8), ("approval", 4), ("agent", 4), ("document", 4),
                                ("tokens", 8)]
#: The agent's plan as the test model server writes it (taskstream.devservices.llmserver).
AGENT_PLAN = "1. Look for what the question needs. 2. Answer from what was found."
#: Words of the documents uploaded by the ``document`` kind.
DOC_WORDS = ("honey hive queen magma lava eruption dough crust oven loan rate bank goal "
             "match planet orbit patient doctor sail wind code test soil seed").split()


@dataclass(slots=True)
class TaskSpec:
    n: int
    kind: str
    key: str
    body: dict[str, Any]
    allowed: frozenset[Outcome]
    result: Any = None  # the result a completed task must carry
    cancel_after: float | None = None
    text: str | None = None  # tokens: the text its stream must store
    signal_after: float | None = None  # approval: when to send its "go" signal
    task_id: str | None = None
    accepted_at: float | None = None
    replayed: bool = False  # a retried POST got the same task back (200)
    refused: str | None = None
    notes: list[str] = field(default_factory=list)


def make_specs(n: int, rng: random.Random) -> list[TaskSpec]:
    names = [k for k, _ in KINDS]
    weights = [w for _, w in KINDS]
    return [_scheduled(_spec(i, rng.choices(names, weights)[0], rng), rng) for i in range(n)]


def _scheduled(spec: TaskSpec, rng: random.Random) -> TaskSpec:
    """Some priorities and delays on top of the kind's body."""
    draw = rng.random()
    if draw < 0.1:
        spec.body["priority"] = "high"
    elif draw < 0.2:
        spec.body["priority"] = "low"
    if rng.random() < 0.125:
        spec.body["delay"] = round(rng.uniform(0.5, 5.0), 2)
    return spec


def _spec(i: int, kind: str, rng: random.Random) -> TaskSpec:
    key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    done = frozenset({COMPLETED, WORKER_LOST})
    if kind == "noop":
        events = rng.randint(0, 40)
        return TaskSpec(i, kind, key, {"type": "noop", "params": {"events": events}}, done,
                        {"events": events})
    if kind == "tokens":
        n, seed = rng.randint(30, 150), rng.randint(0, 7)
        tparams: dict[str, Any] = {"tokens": n, "rate": rng.randint(40, 150), "seed": seed}
        body: dict[str, Any] = {"type": "demo_tokens", "params": tparams}
        if rng.random() < 1 / 3:
            tparams["fail_at_token"] = rng.randint(1, n - 1)
            body["max_attempts"] = 2
        text = demo_text(n, seed)
        return TaskSpec(i, kind, key, body, done, {"tokens": n, "length": len(text)},
                        text=text)
    if kind == "steps":
        n = rng.randint(2, 6)
        return TaskSpec(i, kind, key, {"type": STEPS, "params": {
            "steps": n, "seconds": round(rng.uniform(0.2, 1.0), 2)}, "max_attempts": 3},
            done, {"steps": n, "values": [j * j for j in range(n)]})
    if kind == "document":
        text = " ".join(rng.choice(DOC_WORDS) for _ in range(rng.randint(400, 1000)))
        return TaskSpec(i, kind, key, {"type": "document_process", "upload": f"doc-{i}.txt",
                                       "text": text}, done, _document_result(text, i))
    if kind == "approval":
        return TaskSpec(i, kind, key, {"type": APPROVAL, "params": {
            "seconds": round(rng.uniform(0.1, 1.0), 2)}}, done,
            {"first": "draft", "payload": {"n": i}}, signal_after=round(rng.uniform(0.5, 4), 2))
    if kind == "agent":
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        expr = f"{a} * {b} + 1"
        # a cut stream fails the attempt (the durable steps before it are kept): room to retry
        return TaskSpec(i, kind, key, {"type": "agent", "params": {
            "question": f"What is {expr}?", "tools": ["calculator"]}, "max_attempts": 8},
            done, {"answer": f"Answer: {a * b + 1}", "plan": AGENT_PLAN, "steps": [
                {"tool": "calculator", "input": expr, "observation": str(a * b + 1)}]})
    duration = round(rng.uniform(0.2, 2.0), 2)
    steps = rng.randint(2, 8)
    params: dict[str, Any] = {}
    options: dict[str, Any] = {}
    allowed = done
    cancel_after = None
    if kind == "long":
        duration, steps = round(rng.uniform(3.0, 7.0), 2), rng.randint(5, 12)
    elif kind == "retry":
        steps = rng.randint(2, 6)
        fails = rng.randint(1, 2)
        params = {"fail_at_step": rng.randint(1, steps), "fail_attempts": fails}
        options = {"max_attempts": fails + rng.randint(1, 2)}
    elif kind == "dead":
        duration, steps = round(rng.uniform(0.2, 1.0), 2), 3
        params = {"fail_at_step": rng.randint(1, 3)}
        options = {"max_attempts": rng.randint(1, 3)}
        allowed = frozenset({("failed", "error"), WORKER_LOST})
    elif kind == "timeout":
        duration, steps = 3.0, 6
        options = {"timeout": 1.0}
        allowed = frozenset({("failed", "timeout"), WORKER_LOST})
    elif kind == "cancel":
        duration, steps = round(rng.uniform(3.0, 6.0), 2), 10
        cancel_after = round(rng.uniform(0.2, 3.0), 2)
        allowed = frozenset({("cancelled", "cancelled"), COMPLETED, WORKER_LOST})
    body = {"type": LIMITED if kind == "limited" else "demo",
            "params": {"duration": duration, "steps": steps, **params}, **options}
    return TaskSpec(i, kind, key, body, allowed, {"steps": steps, "duration": duration},
                    cancel_after)


def _document_result(text: str, i: int) -> dict[str, Any]:
    """What document_process must return for this text (upload_id: filled in on acceptance)."""
    from taskstream.builtin.chunking import chunk_pages
    from taskstream.builtin.parsing import Page

    return {"upload_id": None, "filename": f"doc-{i}.txt", "kind": "text", "pages": 1,
            "chunks": len(list(chunk_pages([Page(None, text)], 1000, 100))),
            "word_count": len(text.split()), "embedding_dim": 256,
            "embedding_model": "wordllama:l2_supercat_256"}


async def submit_all(api: Api, specs: list[TaskSpec], window: float, *, concurrency: int = 16,
                     on_accept: Callable[[TaskSpec], None] = lambda s: None) -> None:
    """POST every spec, evenly spread over ``window`` seconds; a 503 or a lost connection is
    retried with the same Idempotency-Key, so it can never create a second task."""
    sem = asyncio.Semaphore(concurrency)
    t0 = time.monotonic()
    followups: list[asyncio.Task[None]] = []

    async def one(spec: TaskSpec, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        async with sem:
            if spec.kind == "document":
                resp = await api.request(
                    "POST /upload", "POST", "/upload", headers={"Idempotency-Key": spec.key},
                    files={"file": (spec.body["upload"], spec.body["text"].encode(),
                                    "text/plain")})
            else:
                resp = await api.request("POST /tasks", "POST", "/tasks", json=spec.body,
                                         headers={"Idempotency-Key": spec.key})
        if resp is None:
            spec.refused = "no answer but 503 / connection errors"
            return
        if resp.status_code not in (200, 202):
            spec.refused = f"{resp.status_code}: {resp.text[:200]}"
            return
        spec.task_id = resp.json()["task_id"]
        if spec.kind == "document":
            spec.result["upload_id"] = resp.json()["upload_id"]
        spec.accepted_at = time.time()
        spec.replayed = resp.status_code == 200
        on_accept(spec)
        if spec.cancel_after is not None:
            followups.append(asyncio.create_task(_cancel(api, spec)))
        elif spec.signal_after is not None:
            followups.append(asyncio.create_task(_signal(api, spec)))
        elif spec.n % 5 == 0:
            followups.append(asyncio.create_task(_snapshot(api, spec)))

    step = window / max(1, len(specs))
    await asyncio.gather(*(one(s, t0 + i * step) for i, s in enumerate(specs)))
    await asyncio.gather(*followups)


async def _cancel(api: Api, spec: TaskSpec) -> None:
    assert spec.cancel_after is not None
    await asyncio.sleep(spec.cancel_after)
    resp = await api.request("POST /tasks/{id}/cancel", "POST", f"/tasks/{spec.task_id}/cancel")
    if resp is not None and resp.status_code not in (200, 409):
        spec.notes.append(f"cancel answered {resp.status_code}: {resp.text[:200]}")


async def _signal(api: Api, spec: TaskSpec) -> None:
    """Send the approval's signal; a retried POST whose first try got through is a 409."""
    assert spec.signal_after is not None
    await asyncio.sleep(spec.signal_after)
    resp = await api.request("POST /tasks/{id}/signals/{name}", "POST",
                             f"/tasks/{spec.task_id}/signals/go", json={"n": spec.n})
    if resp is None or resp.status_code not in (202, 409):
        spec.notes.append(f"signal answered {resp.status_code if resp else 'nothing'}")


async def _snapshot(api: Api, spec: TaskSpec) -> None:
    """``GET /tasks/{id}``, read once while the task is young."""
    await asyncio.sleep(random.random() * 2)  # noqa: S311 - timing jitter
    resp = await api.request("GET /tasks/{id}", "GET", f"/tasks/{spec.task_id}")
    if resp is not None and resp.status_code != 200:
        spec.notes.append(f"snapshot answered {resp.status_code}: {resp.text[:200]}")
