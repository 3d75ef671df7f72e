"""A model server for the tests, the bench and the chaos run: it speaks the OpenAI
chat-completions streaming protocol (``data:`` chunks, a usage chunk, ``data: [DONE]``) over
real HTTP, answers deterministically, and misbehaves on request.

    python -m taskstream.devservices.llmserver --port 8099   # or LLMServer(...).start()

The "model" answers from the prompt it gets, so tests can predict every word:

* a summary request (the system prompt mentions "summar"): ``Summary:`` then the first
  content words of the text after ``TEXT:``;
* an agent's final answer (the system prompt says "final answer"): ``Answer:`` and the last
  observation's first words;
* an agent's decision (the system prompt offers tools and ``ANSWER:``): an
  arithmetic question gets ``CALC: <expr>``, another ``SEARCH: <question>``; once the
  transcript has an ``OBSERVATION``, ``ANSWER:`` and the observation's first words (never,
  when the question says "keep searching");
* an agent's plan (the system prompt mentions "plan"): a fixed two-line plan;
* anything else: the user's first words.

Each word is one streamed chunk (= one completion token); the prompt's tokens are its
whitespace-separated words. Faults, consumed one per request in order (``POST /_faults``
``{"next": [...], ...}``), or drawn at random with ``{"rates": {"429": 0.1, ...}}``:

``429`` (with ``Retry-After``), ``500``, ``503``, ``cut`` (half the tokens, then the
connection drops), ``cut_early`` (headers, then the drop), ``slow_first`` (the first token
after ``slow_first_seconds``), ``no_usage``, ``hang`` (no chunk until the client gives up).
``GET /_stats`` counts requests and faults; ``token_delay`` paces every token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Self

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from taskstream.devservices.proc import DevServiceError, wait_until
from taskstream.devservices.processes import HOST, Proc, free_port

_CALC = re.compile(r"\d[\d\s.+\-*/()]*[+\-*/][\d\s.+\-*/()]*\d")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def _words(text: str, n: int) -> list[str]:
    return _WORD.findall(text)[:n]


def answer(messages: list[dict[str, str]], max_tokens: int) -> list[str]:
    """The deterministic reply, as a list of tokens (one chunk each)."""
    system = " ".join(m["content"] for m in messages if m["role"] == "system").lower()
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    transcript = " ".join(m["content"] for m in messages if m["role"] != "system")
    if "final answer" in system:
        obs = transcript.rsplit("OBSERVATION", 1)[1] if "OBSERVATION" in transcript else user
        obs = obs.lstrip(": ").split("\n", 1)[0]
        words = ["Answer:", *obs.replace(":", " ").split()[:8]]
    elif "answer:" in system and "tool" in system:
        question = user.split("QUESTION:", 1)[-1].split("\n", 1)[0].strip()
        if "OBSERVATION" in transcript and "keep searching" not in question.lower():
            obs = transcript.rsplit("OBSERVATION", 1)[1].lstrip(": ").split("\n", 1)[0]
            words = ["ANSWER:", *obs.replace(":", " ").split()[:8]]
        elif (m := _CALC.search(question)) is not None:
            words = ["CALC:", *m.group(0).split()]
        else:
            words = ["SEARCH:", *_words(question, 6)]
    elif "summar" in system:
        text = user.split("TEXT:", 1)[-1]
        words = ["Summary:", *_words(text, 12)]
    elif "plan" in system:
        words = "1. Look for what the question needs. 2. Answer from what was found.".split()
    else:
        words = _words(user, 12) or ["OK"]
    words = words[:max(1, max_tokens)]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class FakeModel:
    def __init__(self) -> None:
        self.next: deque[str] = deque()
        self.rates: dict[str, float] = {}
        self.retry_after = 1.0
        self.slow_first_seconds = 1.0
        self.token_delay = 0.0
        self.stats: Counter[str] = Counter()
        self.rng = random.Random(0)  # noqa: S311 - fault injection, not security

    def fault(self) -> str:
        if self.next:
            return self.next.popleft()
        for name, rate in self.rates.items():
            if self.rng.random() < rate:
                return name
        return "ok"

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not messages:
            return JSONResponse({"error": {"message": "messages required"}}, 400)
        self.stats["requests"] += 1
        fault = self.fault()
        self.stats[fault] += 1
        if fault in ("429", "500", "503"):
            headers = {"Retry-After": f"{self.retry_after:g}"} if fault == "429" else {}
            return JSONResponse({"error": {"message": f"injected {fault}"}}, int(fault),
                                headers=headers)
        tokens = answer(messages, int(body.get("max_tokens") or 256))
        prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
        usage = {"prompt_tokens": prompt, "completion_tokens": len(tokens),
                 "total_tokens": prompt + len(tokens)}
        if not body.get("stream"):
            return JSONResponse({"choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "".join(tokens)}}], "usage": usage})
        return StreamingResponse(self._events(fault, tokens, usage, body),
                                 media_type="text/event-stream")

    async def _events(self, fault: str, tokens: list[str], usage: dict[str, int],
                      body: dict[str, Any]) -> AsyncIterator[bytes]:
        cid = f"chatcmpl-{time.monotonic_ns()}"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {"id": cid, "object": "chat.completion.chunk", "model": body.get("model"),
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(data)}\n\n".encode()

        yield chunk({"role": "assistant", "content": ""})
        if fault == "cut_early":
            raise ConnectionAbortedError("injected: cut before the first token")
        if fault == "hang":
            await asyncio.sleep(3600)
        if fault == "slow_first":
            await asyncio.sleep(self.slow_first_seconds)
        for i, tok in enumerate(tokens):
            if fault == "cut" and i == max(1, len(tokens) // 2):
                raise ConnectionAbortedError("injected: cut half-way")
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            yield chunk({"content": tok})
            self.stats["tokens"] += 1
        yield chunk({}, "stop")
        if fault != "no_usage":
            yield f"data: {json.dumps({'id': cid, 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"
        self.stats["completed"] += 1

    async def set_faults(self, request: Request) -> Response:
        cfg = await request.json()
        self.next.extend(str(f) for f in cfg.get("next", ()))
        if "rates" in cfg:
            self.rates = {str(k): float(v) for k, v in cfg["rates"].items()}
        for name in ("retry_after", "slow_first_seconds", "token_delay"):
            if name in cfg:
                setattr(self, name, float(cfg[name]))
        if cfg.get("reset"):
            self.next.clear()
            self.rates = {}
            self.stats.clear()
        return JSONResponse({"queued": list(self.next)})

    async def get_stats(self, request: Request) -> Response:
        return JSONResponse(dict(self.stats))


def create_app(model: FakeModel | None = None) -> Starlette:
    m = model or FakeModel()
    return Starlette(routes=[
        Route("/v1/chat/completions", m.completions, methods=["POST"]),
        Route("/_faults", m.set_faults, methods=["POST"]),
        Route("/_stats", m.get_stats, methods=["GET"]),
    ])


class LLMServer(Proc):
    """The model server as a child process on a loopback port; ``start()`` returns once it
    answers. ``url`` is the base URL to configure (``TASKSTREAM_LLM_BASE_URL``)."""

    def __init__(self, log: Path, port: int | None = None, *, name: str | None = None) -> None:
        self.port = port or free_port()
        super().__init__([sys.executable, "-m", "taskstream.devservices.llmserver",
                          "--port", str(self.port)], dict(os.environ), log, name=name)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def start(self) -> Self:
        super().start()

        def up() -> bool:
            if not self.alive:
                raise DevServiceError(f"{self.name} died\n{self.tail()}")
            try:
                return httpx.get(f"http://{HOST}:{self.port}/_stats", timeout=1).is_success
            except httpx.HTTPError:
                return False

        if not wait_until(up, 20, interval=0.05):
            raise DevServiceError(f"{self.name} not ready\n{self.tail()}")
        return self

    def faults(self, **cfg: Any) -> None:
        """``POST /_faults``: e.g. ``faults(next=["429", "cut"], retry_after=0.2)``."""
        httpx.post(f"http://{HOST}:{self.port}/_faults", json=cfg, timeout=5).raise_for_status()

    def stats(self) -> Mapping[str, int]:
        r = httpx.get(f"http://{HOST}:{self.port}/_stats", timeout=5)
        r.raise_for_status()
        out: dict[str, int] = r.json()
        return out


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible model server.")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(), host=HOST, port=args.port, log_level="critical",
                access_log=False)


if __name__ == "__main__":
    main()
