"""The ``LLM`` protocol every model provider implements, and what all of them share.

A provider streams a chat completion: ``stream(messages, max_tokens=...)`` yields the text as
it is generated (``str`` deltas) and then, last, exactly one ``Usage``. ``complete`` drives a
stream to its end and hands each delta to a callback (a task passes its text stream's
``write``), returning the whole text and the usage.

Errors form a small tree, so task code can tell what a retry may fix::

    LLMError
     ├── LLMUnavailable   the provider did not answer usably after its retries (429, 5xx,
     │                    connect/read timeouts, a stream cut before its first token)
     ├── LLMStreamCut     the stream broke after text was already emitted: the caller decides
     │                    (our tasks fail the attempt; the step is re-run on the next attempt)
     └── LLMRequestError  the provider refused the request itself (4xx other than 429: a bad
                          key, an unknown model, a prompt too long): no retry helps
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, TypedDict


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one completion cost. ``estimated``: the provider did not report them and these
    are our count (completion: one per streamed delta; prompt: characters / 4)."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        return cls(int(data["prompt_tokens"]), int(data["completion_tokens"]),
                   bool(data.get("estimated", False)))


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    usage: Usage


class LLMError(Exception):
    """Anything a model provider could not do."""


class LLMUnavailable(LLMError):
    """No usable answer after the provider's retries (rate limited, server errors, timeouts)."""


class LLMStreamCut(LLMError):
    """The stream broke after some text had been emitted (not retried inside the provider:
    the text already went out)."""


class LLMRequestError(LLMError):
    """The provider refused the request (a 4xx other than 429); retrying will not help."""


class LLM(Protocol):
    #: ``openai`` (any OpenAI-compatible server), ``local`` (llama.cpp in this process) or
    #: ``extractive`` (not a model: see extractive.py).
    provider: str
    model: str

    def stream(self, messages: Sequence[Message], *, max_tokens: int,
               temperature: float = 0.0) -> AsyncIterator[str | Usage]:
        """Text deltas as they are generated, then one ``Usage``."""
        ...

    async def aclose(self) -> None: ...


def estimate_tokens(text: str) -> int:
    """About four characters a token (English, BPE): used only when a provider is silent."""
    return max(1, len(text) // 4) if text else 0


async def complete(llm: LLM, messages: Sequence[Message], *, max_tokens: int,
                   on_delta: Callable[[str], Awaitable[None]] | None = None,
                   temperature: float = 0.0) -> Completion:
    """Run one streamed completion to its end; ``on_delta`` sees each piece of text."""
    parts: list[str] = []
    usage: Usage | None = None
    async for item in llm.stream(messages, max_tokens=max_tokens, temperature=temperature):
        if isinstance(item, Usage):
            usage = item
        elif item:
            parts.append(item)
            if on_delta is not None:
                await on_delta(item)
    text = "".join(parts)
    if usage is None:  # a provider must end with one; be safe rather than crash a task
        usage = Usage(sum(estimate_tokens(m["content"]) for m in messages), len(parts), True)
    return Completion(text, usage)
