"""An OpenAI-compatible chat-completions client over httpx, streaming (OpenAI, vLLM, Ollama,
llama.cpp's server all speak it).

The stream is Server-Sent Events: ``data: {json chunk}`` lines, each chunk's
``choices[0].delta.content`` a piece of text, a last chunk with ``usage`` (asked for with
``stream_options.include_usage``), then ``data: [DONE]``.

Retries (``max_retries``, exponential backoff from ``backoff`` with jitter): a 429 or a 5xx,
a connection that fails or times out, and a stream that breaks or stalls (read timeout)
*before its first token* are retried; a 429/503's ``Retry-After`` (seconds or an HTTP date)
is waited for instead of the backoff when it is longer — unless it exceeds ``max_wait``,
which ends the retries at once. A stream that breaks after text was emitted raises
``LLMStreamCut`` and is not retried here: the text already went to the caller, and only the
caller knows whether it can start over (our tasks fail the attempt, and the durable step
is re-run as a whole by the next attempt). A stream that ends without ``[DONE]`` counts as
broken. Other 4xx: ``LLMRequestError``, no retry.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from taskstream.builtin.llm.base import (
    LLMRequestError,
    LLMStreamCut,
    LLMUnavailable,
    Message,
    Usage,
    estimate_tokens,
)
from taskstream.client.errors import parse_retry_after

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class OpenAICompatible:
    provider = "openai"

    def __init__(self, base_url: str, model: str, api_key: str = "", *,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0,
                 max_retries: int = 4, backoff: float = 0.5, max_wait: float = 60.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_wait = max_wait
        #: Retries taken so far (all calls): the tests and the bench read it.
        self.retries = 0
        headers = {"Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            headers=headers, transport=transport,
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout,
                                  write=read_timeout, pool=connect_timeout),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def stream(self, messages: Sequence[Message], *, max_tokens: int,
                     temperature: float = 0.0) -> AsyncIterator[str | Usage]:
        body = {
            "model": self.model, "messages": list(messages), "max_tokens": max_tokens,
            "temperature": temperature, "stream": True,
            "stream_options": {"include_usage": True},
        }
        attempt = 0
        while True:
            emitted = 0
            try:
                async for item in self._one(body):
                    if isinstance(item, str):
                        emitted += 1
                    yield item
                return
            except _Retry as why:
                if emitted:
                    raise LLMStreamCut(
                        f"{self.base_url}: stream broke after {emitted} deltas ({why})"
                    ) from None
                attempt += 1
                if attempt > self.max_retries:
                    raise LLMUnavailable(
                        f"{self.base_url}: {why}; gave up after {self.max_retries} retries"
                    ) from None
                delay = self.backoff * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)  # noqa: S311
                if why.retry_after is not None:
                    if why.retry_after > self.max_wait:
                        raise LLMUnavailable(
                            f"{self.base_url}: {why}; Retry-After {why.retry_after:.0f}s is "
                            f"longer than the {self.max_wait:.0f}s we wait") from None
                    delay = max(delay, why.retry_after)
                self.retries += 1
                await asyncio.sleep(delay)

    async def _one(self, body: dict[str, Any]) -> AsyncIterator[str | Usage]:
        """One HTTP request's stream; ``_Retry`` for what another request may fix."""
        url = f"{self.base_url}/chat/completions"
        deltas = 0
        usage: Usage | None = None
        done = False
        try:
            async with self._client.stream("POST", url, json=body) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    detail = resp.text[:300]
                    if resp.status_code in RETRY_STATUS:
                        raise _Retry(f"HTTP {resp.status_code}",
                                     parse_retry_after(resp.headers.get("retry-after")))
                    raise LLMRequestError(f"{url}: HTTP {resp.status_code}: {detail}")
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # comments (": keep-alive"), event names, blank lines
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:  # some servers report errors inside the stream
                        raise _Retry(f"error in stream: {str(chunk['error'])[:200]}")
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            deltas += 1
                            yield text
                    if chunk.get("usage"):
                        u = chunk["usage"]
                        usage = Usage(int(u.get("prompt_tokens", 0)),
                                      int(u.get("completion_tokens", 0)))
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        except json.JSONDecodeError as exc:
            raise _Retry(f"malformed chunk: {exc}") from None
        if not done:
            raise _Retry("stream ended without [DONE]")
        if usage is None:
            prompt = sum(estimate_tokens(m["content"]) for m in body["messages"])
            usage = Usage(prompt, deltas, estimated=True)
        yield usage
