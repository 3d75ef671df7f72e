"""The run's HTTP side: a client that behaves as a careful user's would, and a ledger of every
HTTP status it saw.

Requests go to a random web process. A 503 (a backing service away) or a 429 (a limit) is
retried after its ``Retry-After``; a connection error (a web process briefly unable to
answer, a reset) is retried after a short pause; all until the request's deadline. Any 5xx
other than 503 is a violation, kept with its body, and so is a 503 or 429 without Retry-After.
"""

import asyncio
import random
import time
from collections import Counter
from typing import Any

import httpx

from taskstream.client.errors import parse_retry_after

#: What the ledger records instead of a status when no response came back.
CONNECTION_ERROR = "conn-error"
#: "Come back later" answers: retried after their Retry-After.
RETRY_LATER = (429, 503)


class Api:
    def __init__(self, urls: list[str], rng: random.Random) -> None:
        self._rng = rng
        timeout = httpx.Timeout(30.0, connect=5.0)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        self.clients = [httpx.AsyncClient(base_url=u, timeout=timeout, limits=limits)
                        for u in urls]
        self.statuses: Counter[tuple[str, str]] = Counter()
        self.server_errors: list[str] = []
        self.no_retry_after: list[str] = []
        self.gave_up: list[str] = []

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients))

    def pick(self) -> httpx.AsyncClient:
        return self._rng.choice(self.clients)

    def record(self, route: str, status: int | str, body: str = "") -> None:
        self.statuses[(route, str(status))] += 1
        if isinstance(status, int) and status >= 500 and status != 503:
            self.server_errors.append(f"{route} -> {status}: {body[:300]}")

    async def request(self, route: str, method: str, url: str, *, patience: float = 90.0,
                      json: Any = None, headers: dict[str, str] | None = None,
                      files: Any = None) -> httpx.Response | None:
        """The first answer that is not a 503/429, or None if ``patience`` seconds ran out."""
        deadline = time.monotonic() + patience
        while True:
            try:
                resp = await self.pick().request(method, url, json=json, headers=headers,
                                                 files=files)
            except httpx.TransportError as exc:
                self.record(route, CONNECTION_ERROR)
                if time.monotonic() > deadline:
                    self.gave_up.append(f"{method} {url}: {type(exc).__name__}")
                    return None
                await asyncio.sleep(0.2 + self._rng.random() * 0.3)
                continue
            self.record(route, resp.status_code, resp.text)
            if resp.status_code not in RETRY_LATER:
                return resp
            if "Retry-After" not in resp.headers:
                self.no_retry_after.append(f"{method} {url} -> {resp.status_code}")
            if time.monotonic() > deadline:
                self.gave_up.append(f"{method} {url}: {resp.status_code} for {patience:.0f}s")
                return None
            await asyncio.sleep(retry_after(resp))


def retry_after(resp: httpx.Response, default: float = 1.0) -> float:
    """Seconds from a Retry-After header, capped so the run stays brisk."""
    seconds = parse_retry_after(resp.headers.get("Retry-After"))
    return default if seconds is None else min(max(seconds, 0.05), 5.0)
