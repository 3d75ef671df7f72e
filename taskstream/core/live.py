"""The live lane: model output on its way to browsers, token by token, with no database write.

A task writes text through ``ctx.text_stream(name)``; the durable event log stores the whole
text once, at the stream's end (event ``text``: ``{"stream", "text", "length"}``). Meanwhile
``write()`` feeds this lane:

* **Frames.** Deltas are coalesced into one frame per ``live_frame_interval`` (50 ms) per
  text stream — a frame carries a few tokens at 50 tokens/s. A frame is
  ``{"task_id", "stream", "attempt", "offset", "delta"}``; ``offset`` counts Unicode code
  points (Python ``len``, the ``length`` of the ``text`` event) from the start of the text of
  (task, stream, attempt). Frames of one (task, stream, attempt) are contiguous: each starts
  where the previous one ended.
* **Redis, one script call per frame.** ``SETRANGE`` appends the delta to the text so far
  (a string per (task, attempt, stream), TTL ``live_ttl``), ``HSET`` records the stream's
  attempt in the task's index, and the frame is published on the task's and the tenant's
  channels (the same channels as events; token messages start with ``T``). The write is
  idempotent (SETRANGE at a byte offset the writer tracks), so a retried frame cannot double
  the text. A text-so-far string rather than a capped Redis stream of deltas: a reconnecting
  client needs the whole prefix, which a MAXLEN-trimmed stream would lose for long outputs;
  the string's size is bounded by the output itself.
* **Readers** (``TextTracker``, one per SSE/WebSocket connection) pass on each frame once:
  overlap is trimmed, a duplicate dropped, and a gap (a lost pub/sub message, or a client
  that joined mid-stream) is filled from the text-so-far string. A frame of a newer attempt
  (a retry) starts that stream's text over at offset 0; frames of older attempts are dropped.
  The durable ``text`` event closes (stream, attempt) at its ``length``: later frames of it
  are dropped, so after the end the durable record is the truth.

Nothing here is durable: Redis may lose the lane (its TTL, a restart) and the stream's text
still arrives complete in its ``text`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from taskstream.core.constants import (
    live_index_key,
    live_text_key,
    task_channel,
    tenant_channel,
)
from taskstream.core.db import TRANSIENT_DB_ERRORS
from taskstream.core.states import EventType

log = logging.getLogger(__name__)

#: The SSE event name of token frames (an ``onmessage`` listener does not see them) and the
#: ``kind`` of a WebSocket token message.
TOKEN_EVENT: Final = "token"  # noqa: S105 - an event name
#: Token messages on the pub/sub channels start with this byte; events start with ``{``.
TOKEN_MARK: Final = "T"  # noqa: S105 - a message marker
DONE_SUFFIX: Final = ":done"

#: KEYS: text key, index key. ARGV: byte offset, delta, ttl, stream, attempt, task channel,
#: tenant channel, message. Returns 0, or -1 when the text so far is shorter than the offset
#: (the key expired or Redis lost it): the writer then sends its whole text again.
_WRITE_LUA = """
if redis.call('STRLEN', KEYS[1]) < tonumber(ARGV[1]) then
    return -1
end
redis.call('SETRANGE', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[6], ARGV[8])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 0
"""


@dataclass(slots=True)
class TokenFrame:
    task_id: str
    stream: str
    attempt: int
    offset: int
    delta: str
    raw: str = field(default="", repr=False, compare=False)
    # Encoded SSE frame, built once however many connections send it.
    sse: bytes = field(default=b"", repr=False, compare=False)

    @property
    def end(self) -> int:
        return self.offset + len(self.delta)

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "stream": self.stream, "attempt": self.attempt,
                "offset": self.offset, "delta": self.delta}

    def encode(self) -> str:
        if not self.raw:
            self.raw = orjson.dumps(self.to_json()).decode()
        return self.raw

    def cut(self, offset: int) -> TokenFrame:
        """The part of this frame from ``offset`` on (``offset`` within it)."""
        return TokenFrame(self.task_id, self.stream, self.attempt, offset,
                          self.delta[offset - self.offset:])

    @classmethod
    def decode(cls, raw: str | bytes) -> TokenFrame:
        d = orjson.loads(raw)
        return cls(task_id=str(d["task_id"]), stream=str(d["stream"]),
                   attempt=int(d["attempt"]), offset=int(d["offset"]), delta=str(d["delta"]),
                   raw=raw if isinstance(raw, str) else raw.decode())


def is_token_message(data: bytes | str) -> bool:
    return data[:1] in (b"T", "T")


# --- writing (worker) -----------------------------------------------------------------

class LiveWriter:
    """One text stream's live lane: ``write()`` buffers, a frame leaves at most every
    ``interval`` seconds (the first one at once), ``close()`` sends the rest.

    Best effort: while Redis is away the buffer grows and goes out as one frame when it is
    back; the durable ``text`` event does not wait for the lane.
    """

    def __init__(self, redis: Redis, namespace: str, *, task_id: str, owner: str,
                 attempt: int, stream: str, interval: float = 0.05, ttl: int = 3600) -> None:
        self._redis = redis
        self._ns = namespace
        self.task_id, self.owner, self.attempt, self.stream = task_id, owner, attempt, stream
        self._interval = interval
        self._ttl = ttl
        self._text_key = live_text_key(namespace, task_id, attempt, stream)
        self._index_key = live_index_key(namespace, task_id)
        self._batch = _batcher(redis)
        self._parts: list[str] = []
        self.sent_chars = 0  # what Redis has
        self._sent_bytes = 0
        self._pending = ""  # taken from _parts, not yet confirmed by Redis
        self._sent_text: list[str] = []
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None
        self.frames = 0
        self.failures = 0

    def write(self, delta: str) -> None:
        if not delta:
            return
        self._parts.append(delta)
        if self._sending is not None or self._timer is not None:
            return  # the running send or the armed timer will take it
        loop = asyncio.get_running_loop()
        wait = self._last + self._interval - loop.time()
        if wait <= 0:
            self._start_send()
        else:
            self._timer = loop.call_later(wait, self._start_send)

    def _start_send(self) -> None:
        self._timer = None
        if self._sending is None and (self._parts or self._pending):
            self._sending = asyncio.create_task(self._send_loop())

    async def _send_loop(self) -> None:
        try:
            while self._parts or self._pending:
                self._pending += "".join(self._parts)
                self._parts.clear()
                loop = asyncio.get_running_loop()
                self._last = loop.time()
                if not await self._send(self._pending):
                    self.failures += 1
                    await asyncio.sleep(min(1.0, 0.05 * self.failures))
                    continue
                self._pending = ""
                if self._parts:  # more came in while we sent: wait out the interval
                    await asyncio.sleep(max(0.0, self._last + self._interval - loop.time()))
        finally:
            self._sending = None

    async def _send(self, delta: str) -> bool:
        frame = TokenFrame(self.task_id, self.stream, self.attempt, self.sent_chars, delta)
        data = delta.encode()
        offset_bytes = self._sent_bytes
        try:
            rc = await self._call(offset_bytes, data, frame)
            if rc == -1:  # the text so far is gone: send all of it again, from 0
                full = self._full_sent() + delta
                frame = TokenFrame(self.task_id, self.stream, self.attempt, 0, full)
                rc = await self._call(0, full.encode(), frame)
        except (RedisError, OSError) as exc:
            log.warning("live lane write for %s/%s failed: %s", self.task_id, self.stream, exc)
            return False
        self.frames += 1
        self.sent_chars += len(delta)
        self._sent_bytes += len(data)
        self._sent_text.append(delta)
        return True

    def _full_sent(self) -> str:
        return "".join(self._sent_text)

    async def _call(self, offset_bytes: int, data: bytes, frame: TokenFrame) -> int:
        return await self._batch.call(
            (self._text_key, self._index_key, offset_bytes, data, self._ttl, self.stream,
             self.attempt, task_channel(self._ns, self.task_id),
             tenant_channel(self._ns, self.owner), TOKEN_MARK + frame.encode()))

    async def close(self, grace: float = 5.0) -> None:
        """Send what is buffered (waiting up to ``grace`` seconds for Redis)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._start_send()
        if self._sending is not None:
            task = self._sending
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                log.warning("live lane of %s/%s closed with %d characters unsent",
                            self.task_id, self.stream, len(self._pending))

    async def mark_done(self) -> None:
        """The durable ``text`` event is stored: reconnecting readers need no snapshot."""
        with contextlib.suppress(RedisError, OSError):
            await self._redis.hset(self._index_key, self.stream,  # type: ignore[misc]
                                   f"{self.attempt}{DONE_SUFFIX}")

    def abort(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is not None:
            self._sending.cancel()


class _ScriptBatch:
    """The frames of every text stream of a process go to Redis together: the script calls
    made in one event-loop turn (and those made while a batch is in flight) leave as one
    pipeline, one round trip and one wake-up, instead of a command and a reply each. At
    100 streams x 20 frames/s the per-call cost (redis-py's command packing, a connection
    taken from the pool, a reply awaited) was most of the worker's share of the lane."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._sha = ""
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[int]]] = []
        self._running: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def call(self, args: tuple[Any, ...]) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._queue.append((args, fut))
        if self._running is None or self._loop is not loop:
            self._loop = loop
            self._running = loop.create_task(self._run())
        return fut

    async def _run(self) -> None:
        try:
            while self._queue:
                await asyncio.sleep(0)  # let this turn's other writers join the batch
                batch, self._queue = self._queue, []
                try:
                    results = await self._send([a for a, _ in batch])
                except BaseException as exc:  # handed to every caller
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc if isinstance(exc, Exception)
                                              else RedisError(repr(exc)))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, fut), rc in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(rc, Exception):
                        fut.set_exception(rc)
                    else:
                        fut.set_result(int(rc))
        finally:
            self._running = None

    async def _send(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        if not self._sha:
            self._sha = str(await self._redis.script_load(_WRITE_LUA))
        for _ in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for a in calls:
                    pipe.evalsha(self._sha, 2, *a)
                results: list[Any] = await pipe.execute(raise_on_error=False)
            if not any(isinstance(r, NoScriptError) for r in results):
                return results
            # Redis lost its scripts (a restart, SCRIPT FLUSH): load it again, once.
            self._sha = str(await self._redis.script_load(_WRITE_LUA))
        return results


_BATCHES: weakref.WeakKeyDictionary[Redis, _ScriptBatch] = weakref.WeakKeyDictionary()


def _batcher(redis: Redis) -> _ScriptBatch:
    b = _BATCHES.get(redis)
    if b is None:
        b = _BATCHES[redis] = _ScriptBatch(redis)
    return b


# --- reading (web) --------------------------------------------------------------------

async def read_text(redis: Redis, namespace: str, task_id: str, attempt: int,
                    stream: str) -> str | None:
    raw = await redis.get(live_text_key(namespace, task_id, attempt, stream))
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def snapshot(redis: Redis, namespace: str, task_id: str,
                   min_attempt: int = 0) -> list[TokenFrame]:
    """The text so far of each live (not yet durably ended) stream of the task's latest
    attempt, as frames from offset 0."""
    index: Mapping[bytes, bytes] = await redis.hgetall(  # type: ignore[misc]
        live_index_key(namespace, task_id))
    live: list[tuple[str, int]] = []
    for raw_name, value in index.items():
        v = value.decode()
        if v.endswith(DONE_SUFFIX):
            continue
        attempt = int(v)
        if attempt >= min_attempt:
            live.append((raw_name.decode(), attempt))
    if not live:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for name, attempt in live:
            pipe.get(live_text_key(namespace, task_id, attempt, name))
        texts = await pipe.execute()
    return [TokenFrame(task_id, name, attempt, 0, raw.decode())
            for (name, attempt), raw in zip(live, texts, strict=True) if raw]


@dataclass(slots=True)
class _Pos:
    attempt: int
    end: int


#: A task's current attempt (None: not found), for a connection that was not told at open.
AttemptOf = Callable[[str], Awaitable[int | None]]


class TextTracker:
    """What one connection has sent of each (task, stream): passes each character on once.

    A task stream knows its task's attempt when it opens (``seed_attempt``). A connection
    that follows many tasks (the tenant stream) passes ``attempt_of``: the first frame of a
    task it has seen no attempt of yet is held until that lookup says which attempt runs — a
    connection opened after a retry began must not take a paused worker's stale frames for
    the text (seen in the chaos run)."""

    def __init__(self, redis: Redis, namespace: str,
                 attempt_of: AttemptOf | None = None) -> None:
        self._redis = redis
        self._ns = namespace
        self._attempt_of = attempt_of
        self._pos: dict[tuple[str, str], _Pos] = {}
        #: per task, the newest attempt known to have started: the lane is not fenced (a
        #: worker paused past its lease still publishes its superseded attempt's frames),
        #: so frames of an older attempt are dropped here
        self._floor: dict[str, int] = {}
        self.gaps = 0

    def seed(self, task_id: str, stream: str, attempt: int, offset: int) -> None:
        """The client already holds ``offset`` characters of (stream, attempt)."""
        self._pos[(task_id, stream)] = _Pos(attempt, offset)

    def seed_attempt(self, task_id: str, attempt: int) -> None:
        """The task's attempt ``attempt`` has started: older attempts' frames are stale."""
        if attempt > self._floor.get(task_id, 0):
            self._floor[task_id] = attempt

    def seen_event(self, task_id: str, type: str, attempt: int,
                   data: Any) -> TokenFrame | None:
        """A durable event goes out: its attempt has started (durable writes are fenced, so
        no older attempt writes again), and a ``text`` event closes its (stream, attempt).
        If this connection sent part of that text, the frame returned completes it first
        (its last frames may have been dropped): a client holding a text when its ``text``
        event arrives holds all of it."""
        self.seed_attempt(task_id, attempt)
        if type != EventType.TEXT or not isinstance(data, dict):
            return None
        stream, text = data.get("stream"), data.get("text")
        if not isinstance(stream, str) or not isinstance(text, str):
            return None
        key = (task_id, stream)
        pos = self._pos.get(key)
        rest = None
        if pos is not None and pos.attempt == attempt and pos.end < len(text):
            rest = TokenFrame(task_id, stream, attempt, pos.end, text[pos.end:])
        if pos is None or pos.attempt <= attempt:
            self._pos[key] = _Pos(attempt, len(text))
        return rest

    def position(self, task_id: str, stream: str) -> tuple[int, int] | None:
        pos = self._pos.get((task_id, stream))
        return None if pos is None else (pos.attempt, pos.end)

    def take(self, frame: TokenFrame) -> list[TokenFrame] | None:
        """``accept`` without I/O: None when there is a gap to fill (then ``accept``)."""
        return self._take(frame)

    async def accept(self, frame: TokenFrame) -> list[TokenFrame]:
        """The frames to send for ``frame``: itself, its new part, a gap filled, or none."""
        if self._unknown(frame.task_id):
            await self._learn_attempt(frame.task_id)
        out = self._take(frame)
        if out is not None:
            return out
        # A gap: the text so far has everything up to this frame (written before published).
        self.gaps += 1
        try:
            text = await read_text(self._redis, self._ns, frame.task_id, frame.attempt,
                                   frame.stream)
        except (RedisError, OSError):
            text = None
        if text is None or len(text) < frame.end:
            return []  # the lane lost it; the durable text event will carry it all
        return self._take(TokenFrame(frame.task_id, frame.stream, frame.attempt, 0, text)) or []

    def _unknown(self, task_id: str) -> bool:
        return self._attempt_of is not None and task_id not in self._floor

    async def _learn_attempt(self, task_id: str) -> None:
        assert self._attempt_of is not None
        try:
            current = await self._attempt_of(task_id)
        except TRANSIENT_DB_ERRORS as exc:  # the database away: as before the lookup existed
            log.warning("attempt lookup for %s failed (%s); its frames pass unchecked",
                        task_id, exc)
            current = None
        self._floor[task_id] = max(current or 0, self._floor.get(task_id, 0))

    def _take(self, frame: TokenFrame) -> list[TokenFrame] | None:
        if self._unknown(frame.task_id):
            return None  # its attempt is looked up first (``accept``)
        if frame.attempt < self._floor.get(frame.task_id, 0):
            return []  # a superseded attempt's zombie frame
        self.seed_attempt(frame.task_id, frame.attempt)
        key = (frame.task_id, frame.stream)
        pos = self._pos.get(key)
        if pos is None or frame.attempt > pos.attempt:
            if frame.offset != 0:
                return None
            self._pos[key] = _Pos(frame.attempt, frame.end)
            return [frame] if frame.delta else []
        if frame.attempt < pos.attempt or frame.end <= pos.end:
            return []
        if frame.offset > pos.end:
            return None
        out = frame if frame.offset == pos.end else frame.cut(pos.end)
        pos.end = frame.end
        return [out]


def parse_cursor(raw: str | None) -> dict[str, tuple[int, int]]:
    """A token cursor, ``{"<stream>": [attempt, offset], ...}``: what the client holds."""
    if not raw:
        return {}
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError("tokens must be a JSON object {stream: [attempt, offset]}") from exc
    if not isinstance(d, dict) or len(d) > 100:
        raise ValueError("tokens must be a JSON object {stream: [attempt, offset]}")
    out: dict[str, tuple[int, int]] = {}
    for k, v in d.items():
        if (not isinstance(v, list) or len(v) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**53
                           for x in v)):
            raise ValueError(f"tokens[{k!r}] must be [attempt, offset], two integers >= 0")
        out[k] = (v[0], v[1])
    return out
