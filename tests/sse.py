"""Reading a task or tenant stream in tests, with the product client's own SSE parser."""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from taskstream.client.sse import Decoder, Message, aiter_messages


def payload(message: Message) -> dict[str, Any]:
    """A task event, as the stream's JSON data carries it."""
    out: dict[str, Any] = json.loads(message.data)
    return out


def messages(response: httpx.Response) -> AsyncIterator[Message]:
    return aiter_messages(response.aiter_bytes(), Decoder())


async def collect(client: httpx.AsyncClient, url: str, *, headers: dict[str, str] | None = None,
                  limit: int | None = None) -> tuple[int, list[Message]]:
    """Read a stream to its end (or ``limit`` messages); returns (status, messages)."""
    out: list[Message] = []
    async with client.stream("GET", url, headers=headers) as r:
        if r.status_code != 200:
            return r.status_code, out
        async for m in messages(r):
            out.append(m)
            if limit is not None and len(out) >= limit:
                break
    return 200, out
