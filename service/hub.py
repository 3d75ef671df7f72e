"""One Redis pub/sub connection per web process, fanned out in-process to every stream.

Modelled on saq's PubSubMultiplexer, plus what streams need to never miss an event:

* ``subscribe()`` returns only after Redis has *confirmed* the SUBSCRIBE (redis-py's own
  ``subscribe()`` only sends it), so a stream that replays from PostgreSQL afterwards cannot
  fall in the gap between its replay and its first live message.
* The connection is supervised: if Redis goes away the hub reconnects with backoff,
  resubscribes every channel, and pushes ``RESYNC`` to every subscriber, which then catches
  up from PostgreSQL.
* Each subscriber has a bounded buffer. A slow consumer never blocks the reader: when its
  buffer is full, a progress event replaces the queued progress event of its task just
  before it (the stream sees the gap and reads what it skipped from PostgreSQL: a burst of
  one task's progress costs a query, and nothing is missed), and if a lifecycle event does
  not fit, the subscription is marked overflowed and its stream closes (the client resumes
  with Last-Event-ID).
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Final

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from service.deadlines import Deadlines, of_running_loop
from service.sse import HubEvent
from taskstream.core import metrics
from taskstream.core.backoff import Backoff
from taskstream.core.events import Event
from taskstream.core.live import TokenFrame, is_token_message
from taskstream.core.states import EventType

log = logging.getLogger(__name__)

RESYNC: Final = "resync"
CLOSE: Final = "close"  # the process is shutting down: end the stream, the client resumes


class HubUnavailable(Exception):
    """Redis is not reachable right now; the caller should answer 503 with Retry-After."""


class Subscription:
    __slots__ = (
        "_deadline",
        "_deadlines",
        "_items",
        "_waiter",
        "channel",
        "limit",
        "overflowed",
        "position",
        "source",
        "tokens_dropped",
        "tokens_merged",
    )

    def __init__(self, channel: str, limit: int) -> None:
        self.channel = channel
        self.limit = limit
        self.overflowed = False
        # A list, not a deque: an empty deque allocates a 64-slot block (~0.6 KB per idle
        # stream); the queue is short (bounded by ``limit``), so pop(0) is cheap.
        self._items: list[Event | TokenFrame | str] = []
        # The reader's wait: a bare future, woken by push (cheaper than an asyncio.Event).
        self._waiter: asyncio.Future[None] | None = None
        # The idle deadline of the current wait, registered with the process's deadlines
        # (no timer of its own: ~0.7 KB per idle stream) and left there across waits (a
        # timer armed per wait was ~1/6 of the CPU of a burst).
        self._deadline = 0.0
        self._deadlines: Deadlines | None = None
        self.tokens_dropped = 0
        self.tokens_merged = 0
        #: What the stream follows (("task", id) or ("tenant", owner)) and the position it
        #: has sent up to, for ``service.stale``.
        self.source: tuple[str, str] | None = None
        self.position = 0

    def push(self, item: Event | TokenFrame | str) -> None:
        if self.overflowed:
            return
        if isinstance(item, TokenFrame):
            if len(self._items) >= self.limit:
                self._merge_token(item)
                return
            self._items.append(item)
        elif isinstance(item, str):
            self._items.append(item)
        elif len(self._items) >= self.limit:
            last = self._items[-1]
            if (item.type == EventType.PROGRESS and isinstance(last, Event)
                    and last.type == EventType.PROGRESS and last.task_id == item.task_id):
                self._items[-1] = item  # the stream sees the gap and reads it from PostgreSQL
            else:
                self.overflowed = True
        else:
            self._items.append(item)
        self._wakeup()

    def _wakeup(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _merge_token(self, item: TokenFrame) -> None:
        """A full buffer: the frame joins a queued frame of its text that it continues (the
        client gets the same characters in fewer frames, with no I/O). Failing that it is
        dropped, and the stream's reader fills the gap from the live lane's text so far at
        the next frame (or the durable text event has it)."""
        for i in range(len(self._items) - 1, max(-1, len(self._items) - 17), -1):
            q = self._items[i]
            if isinstance(q, TokenFrame):
                if (q.task_id, q.stream, q.attempt) == (item.task_id, item.stream,
                                                        item.attempt):
                    if q.end == item.offset:
                        self._items[i] = TokenFrame(q.task_id, q.stream, q.attempt, q.offset,
                                                    q.delta + item.delta)
                        self.tokens_merged += 1
                        return
                    break
            elif isinstance(q, str) or q.task_id == item.task_id:
                break  # not across a control item or an event of the same task
        self.tokens_dropped += 1

    async def get(self, idle: float | None = None
                  ) -> Event | TokenFrame | str | None:
        """The next item, or None after ``idle`` seconds of nothing (no extra task, and no
        timer: a deadline among the process's, up to ``deadlines.GRANULARITY`` late)."""
        if self._items:
            return self._items.pop(0)
        loop = asyncio.get_running_loop()
        if idle is not None:
            self._deadline = deadline = loop.time() + idle
            deadlines = self._deadlines
            if deadlines is None:
                self._deadlines = deadlines = of_running_loop()
            deadlines.ensure(self, deadline)  # it only moves later: expire re-adds it
        while not self._items:
            self._waiter = waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
            if idle is not None and not self._items and loop.time() >= self._deadline:
                return None
        return self._items.pop(0)

    def expire(self) -> None:
        """A deadline passed: wake the reader if its wait is over (its latest deadline)."""
        w = self._waiter
        if w is None or w.done():
            return  # not waiting: the next wait registers its deadline again
        deadlines = self._deadlines
        assert deadlines is not None  # registered by get
        if deadlines.loop.time() >= self._deadline:
            w.set_result(None)
        else:  # not yet (a bucket's time rounded below the deadline): again
            deadlines.add(self, self._deadline)

    def close(self) -> None:
        """The stream is over: drop its deadline."""
        if self._deadlines is not None:
            self._deadlines.discard(self)

    def __len__(self) -> int:
        return len(self._items)


class Hub:
    def __init__(self, connect: Callable[[], Redis], *, control_channel: str,
                 buffer: int = 256, connect_timeout: float = 5.0) -> None:
        self._new_client = connect  # a fresh client per (re)connection
        self._home = control_channel  # always subscribed, so the connection always exists
        self._buffer = buffer
        self._connect_timeout = connect_timeout
        self._subs: dict[str, set[Subscription]] = {}
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._ps: PubSub | None = None
        self._client: Redis | None = None
        self._connected = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Future[None]] = set()
        self.reconnects = 0
        self.messages = 0
        self.ended = 0  # subscriptions closed so far (service.heap counts ended streams)
        self.closing = False

    @property
    def streams(self) -> int:
        return sum(len(s) for s in self._subs.values())

    def subscriptions(self) -> list[Subscription]:
        return [sub for subs in self._subs.values() for sub in subs]

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and not self.closing

    def shutdown(self) -> None:
        """End every stream now (SIGTERM: a deploy); new subscriptions are refused."""
        self.closing = True
        for subs in self._subs.values():
            for sub in subs:
                sub.push(CLOSE)

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._supervise(), name="hub")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), self._connect_timeout)

    async def close(self) -> None:
        if self._runner:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self._drop_connection()

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        """Yield a subscription once Redis has confirmed the channel's SUBSCRIBE."""
        if self.closing:
            raise HubUnavailable("this server is shutting down")
        sub = Subscription(channel, self._buffer)
        self._subs.setdefault(channel, set()).add(sub)
        metrics.OPEN_STREAMS.inc()
        try:
            await self._confirm(channel)
            yield sub
        finally:
            sub.close()
            self.ended += 1
            metrics.OPEN_STREAMS.dec()
            subs = self._subs.get(channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[channel]
                    self._confirmed.pop(channel, None)
                    # Shielded: a stream ended by its response's cancel scope (sse-starlette's
                    # task group cancels again at every await) must not cut this write short;
                    # redis-py drops the shared connection when a send is interrupted.
                    release = asyncio.ensure_future(self._release(channel))
                    self._releases.add(release)  # a shielded task needs a strong reference
                    release.add_done_callback(self._releases.discard)
                    await asyncio.shield(release)

    async def _release(self, channel: str) -> None:
        await self._send("unsubscribe", channel)
        if channel in self._subs:  # re-subscribed while we unsubscribed
            await self._send("subscribe", channel)

    async def _confirm(self, channel: str) -> None:
        deadline = asyncio.get_running_loop().time() + self._connect_timeout
        while True:
            try:
                await asyncio.wait_for(self._connected.wait(),
                                       deadline - asyncio.get_running_loop().time())
            except TimeoutError as exc:
                raise HubUnavailable("redis pub/sub is not connected") from exc
            fut = self._confirmed.get(channel)
            if fut is None:
                fut = asyncio.get_running_loop().create_future()
                self._confirmed[channel] = fut
                if not await self._send("subscribe", channel):
                    self._confirmed.pop(channel, None)
                    continue
            try:
                await asyncio.wait_for(asyncio.shield(fut),
                                       max(0.01, deadline - asyncio.get_running_loop().time()))
                return
            except TimeoutError as exc:
                raise HubUnavailable("redis did not confirm the subscription") from exc
            except ConnectionError:
                continue  # connection dropped while waiting; the supervisor resubscribes

    async def _send(self, command: str, channel: str) -> bool:
        ps = self._ps
        if ps is None:
            return False
        try:
            if command == "subscribe":
                await ps.subscribe(channel)
            else:
                await ps.unsubscribe(channel)
            return True
        except (RedisError, OSError) as exc:
            log.warning("pub/sub %s %s failed: %s", command, channel, exc)
            return False

    async def _supervise(self) -> None:
        backoff = Backoff()
        first = True
        while True:
            try:
                await self._connect()
                if not first:
                    self.reconnects += 1
                    metrics.HUB_RECONNECTS.inc()
                    for subs in self._subs.values():
                        for sub in subs:
                            sub.push(RESYNC)
                first = False
                backoff.reset()
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pub/sub connection lost (%s); reconnecting in %.2fs", exc,
                            backoff.delay)
            self._connected.clear()
            for fut in self._confirmed.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("pub/sub connection lost"))
                    fut.exception()  # mark retrieved; waiters retry
            self._confirmed.clear()
            await self._drop_connection()
            await backoff.sleep()

    async def _connect(self) -> None:
        self._client = self._new_client()
        ps = self._client.pubsub()
        channels = [self._home, *self._subs]
        loop = asyncio.get_running_loop()
        self._confirmed = {ch: loop.create_future() for ch in channels}
        await ps.subscribe(*channels)
        self._ps = ps
        self._connected.set()

    async def _drop_connection(self) -> None:
        ps, client = self._ps, self._client
        self._ps = self._client = None
        with contextlib.suppress(Exception):
            if ps is not None:
                await ps.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            if client is not None:
                await client.aclose()

    async def _read(self) -> None:
        ps = self._ps
        assert ps is not None
        while True:
            msg = await ps.get_message(timeout=5.0)
            if msg is None:
                continue
            kind = msg["type"]
            channel = msg["channel"]
            if isinstance(channel, bytes):
                channel = channel.decode()
            if kind == "message":
                self._dispatch(channel, msg["data"])
            elif kind == "subscribe":
                fut = self._confirmed.get(channel)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def _dispatch(self, channel: str, data: bytes | str) -> None:
        subs = self._subs.get(channel)
        if not subs:
            return
        self.messages += 1
        try:
            event: Event | TokenFrame = (TokenFrame.decode(data[1:])
                                            if is_token_message(data) else HubEvent.decode(data))
        except (ValueError, KeyError, TypeError):
            log.warning("undecodable message on %s dropped", channel)
            return
        for sub in subs:
            sub.push(event)
