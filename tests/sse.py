"""A minimal SSE reader over httpx for tests (the product's own client lives in client/)."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Message:
    id: str | None
    event: str | None
    data: str

    @property
    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.data)
        return out


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    ident: str | None = None
    event: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Message(ident, event, "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            ident = value
        elif field == "event":
            event = value
        elif field == "data":
            data.append(value)


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
