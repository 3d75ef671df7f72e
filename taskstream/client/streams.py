"""``EventStream``: an SSE event stream that survives its connection.

Each connection sends ``Last-Event-ID`` = the position of the last event delivered; the
service replays what came after it, then goes live. Whatever the connection does — drops,
stalls, a proxy answers 502/503, the web process restarts, the service closes a slow stream
— the stream reconnects with exponential backoff and jitter (or after ``Retry-After``), and
drops anything at or before its position, so the caller sees each event once, in order.
Positions may skip (the service coalesces progress events under load); that is not a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from typing import Self

import httpx
from pydantic import ValidationError

from taskstream.client import errors
from taskstream.client.models import Event
from taskstream.client.retry import RetryPolicy
from taskstream.client.sse import Decoder, aiter_messages

#: Answers after which reconnecting makes sense (anything else 4xx is final).
_RETRYABLE = frozenset({408, 425, 429})


class EventStream:
    """Async iterator of ``Event``s; also an async context manager that closes it.

    ``cursor`` is the position of the last event delivered (``seq`` on a task stream,
    ``tenant_seq`` on the all-tasks stream): pass it as ``after=`` to continue elsewhere.
    ``reconnects`` counts the connections opened after the first.
    """

    def __init__(self, http: httpx.AsyncClient, path: str, *, key: Callable[[Event], int],
                 cursor: int | None, ends_on_terminal: bool, policy: RetryPolicy,
                 timeout: httpx.Timeout,
                 on_close: Callable[[EventStream], None] | None = None) -> None:
        self.path = path
        self.cursor = cursor
        self.reconnects = 0
        self.connected = False
        self._http = http
        self._key = key
        self._ends = ends_on_terminal
        self._policy = policy
        self._timeout = timeout
        self._on_close = on_close
        self._gen = self._run()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        return await self._gen.__anext__()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection. (A stream being iterated in another task right now is left
        to that task: it ends with an error once the client's pool closes.)"""
        with contextlib.suppress(RuntimeError):  # "asynchronous generator is already running"
            await self._gen.aclose()
        if self._on_close is not None:
            self._on_close(self)
            self._on_close = None

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.cursor is not None:
            h["Last-Event-ID"] = str(self.cursor)
        return h

    async def _run(self) -> AsyncGenerator[Event, None]:
        failures = 0
        quiet_since = time.monotonic()  # last event or successful connection
        first = True
        while True:
            if not first:
                self.reconnects += 1
            first = False
            retry_after: float | None = None
            problem: errors.TaskstreamError | None = None
            decoder = Decoder()
            try:
                async with self._http.stream("GET", self.path, headers=self._headers(),
                                             timeout=self._timeout) as resp:
                    if resp.status_code == 204:
                        return  # the task finished and we have every event
                    if resp.status_code != 200:
                        await resp.aread()
                        err = errors.error_for(resp)
                        if resp.status_code < 500 and resp.status_code not in _RETRYABLE:
                            raise err
                        problem, retry_after = err, err.retry_after
                    elif not resp.headers.get("content-type", "").startswith(
                            "text/event-stream"):
                        problem = errors.TransportError(
                            f"expected an event stream from {self.path}, got "
                            f"{resp.headers.get('content-type')!r}")
                    else:
                        self.connected = True
                        quiet_since = time.monotonic()
                        async for msg in aiter_messages(resp.aiter_bytes(), decoder):
                            if msg.event != "message":
                                continue  # named events are not task events
                            event = _decode(msg.data)
                            pos = self._key(event)
                            if self.cursor is not None and pos <= self.cursor:
                                continue  # already delivered
                            self.cursor = pos
                            failures, quiet_since = 0, time.monotonic()
                            yield event
                            if self._ends and event.terminal:
                                return
                        problem = errors.TransportError(f"{self.path}: the service ended "
                                                        "the stream; resuming")
            except httpx.TransportError as exc:
                problem = errors.TransportError(f"{self.path}: {type(exc).__name__}: {exc}")
            finally:
                self.connected = False
                self._advance(decoder.last_id)
            assert problem is not None
            failures += 1
            window = self._policy.reconnect_window
            if window is not None and time.monotonic() - quiet_since > window:
                raise problem
            if not self._policy.waits_out(retry_after):
                raise problem
            await asyncio.sleep(self._policy.delay(failures, retry_after))

    def _advance(self, last_id: str) -> None:
        # An ``id:`` line without data (or one the service sent before the connection broke)
        # still moves the position a resumed connection asks for.
        if last_id.isascii() and last_id.isdigit():
            pos = int(last_id)
            if self.cursor is None or pos > self.cursor:
                self.cursor = pos


def _decode(data: str) -> Event:
    try:
        return Event.model_validate_json(data)
    except ValidationError as exc:
        raise errors.TaskstreamError(f"malformed event from the service: {exc}") from None
