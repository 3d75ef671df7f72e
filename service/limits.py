"""Limits that protect the service from its callers; each is a setting.

* request bodies (other than uploads, which enforce their own limit as they stream) are
  capped while the bytes arrive — FastAPI would otherwise read a body whole before any check;
* JSON nesting depth of task params;
* submissions per second and tasks in flight, per tenant (429 + Retry-After);
* concurrent streams per tenant and per web process, and a stream's lifetime.
"""

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, TooManyRequests, error_response
from taskstream.core.batcher import Batcher
from taskstream.core.constants import rate_key
from taskstream.core.ttlcache import TtlCache

UNLIMITED_PATHS = ("/upload",)


class BodyLimit:
    """ASGI middleware: 413 as soon as a request body passes ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(self._too_large())(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, counted, send)

    def _too_large(self) -> PayloadTooLarge:  # built only when needed: not per request
        return PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        item, d = stack.pop()
        depth = max(depth, d)
        if isinstance(item, dict):
            stack.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, d + 1) for v in item)
    return depth


class SubmitRate(Batcher[str, int]):
    """A fixed one-second window per tenant in Redis, shared by every web process.

    Concurrent submissions share one round trip: a batch adds each tenant's count with one
    INCRBY, and each submission learns its own place in the window.
    """

    def __init__(self, redis: Redis, namespace: str) -> None:
        super().__init__("submit-rate", 1000)
        self._redis = redis
        self._ns = namespace

    async def check(self, tenant: str, per_second: int) -> None:
        """429 when this submission is beyond the tenant's limit for the current second."""
        if await self._submit(tenant) > per_second:
            raise TooManyRequests(f"more than {per_second} submissions per second; slow down")

    async def _commit(self, tenants: list[str]) -> list[int]:
        now = int(time.time())
        counts = Counter(tenants)
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant, n in counts.items():
                key = rate_key(self._ns, tenant, now)
                pipe.incrby(key, n)
                pipe.expire(key, 2)
            replies = await pipe.execute()
        place = {t: int(replies[2 * i]) - n for i, (t, n) in enumerate(counts.items())}
        out = []
        for tenant in tenants:
            place[tenant] += 1
            out.append(place[tenant])
        return out


class StreamSlots:
    """Open streams in this web process, per tenant and in total."""

    def __init__(self, per_tenant: int, total: int) -> None:
        self.per_tenant = per_tenant
        self.total = total
        self.open: Counter[str] = Counter()

    def check(self, tenant: str) -> None:
        """429 before a stream's response starts, if opening it would pass a limit."""
        if sum(self.open.values()) >= self.total:
            raise TooManyRequests("this server holds its maximum of streams; retry", 5)
        if self.open[tenant] >= self.per_tenant:
            raise TooManyRequests(f"at most {self.per_tenant} concurrent streams per tenant", 5)

    @contextlib.contextmanager
    def hold(self, tenant: str) -> Iterator[None]:
        """Count a stream while its body runs (entered inside the response generator, so it
        is released however the stream ends)."""
        self.open[tenant] += 1
        try:
            yield
        finally:
            self.open[tenant] -= 1
            if not self.open[tenant]:
                del self.open[tenant]


class InflightGauge(TtlCache[str, int]):
    """Each tenant's pending + running count, read from PostgreSQL at most every ``ttl``
    seconds per web process and counted up locally in between: the in-flight limit is then
    approximate (it may be passed by what one process admits within ``ttl``), and admission
    costs no query per submission."""

    def __init__(self, ttl: float = 0.5) -> None:
        super().__init__(ttl)
        self._reads: dict[str, asyncio.Future[int]] = {}

    async def count(self, tenant: str, read: Callable[[str], Awaitable[int]]) -> int:
        """The tenant's count: cached, else ONE read shared by every submission that asks
        while it runs (at each expiry, 32 concurrent submissions made 32 count queries)."""
        cached = self.get(tenant)
        if cached is not None:
            return cached
        pending = self._reads.get(tenant)
        if pending is None:
            pending = self._reads[tenant] = asyncio.ensure_future(self._read(tenant, read))
        return await asyncio.shield(pending)  # one caller cancelled: the others still get it

    async def _read(self, tenant: str, read: Callable[[str], Awaitable[int]]) -> int:
        try:
            count = await read(tenant)
            self.put(tenant, count)
            return count
        finally:
            del self._reads[tenant]

    def admitted(self, tenant: str, tasks: int = 1) -> None:
        count = self.get(tenant)
        if count is not None:
            self.replace(tenant, count + tasks)
