"""SSE clients that drop and resume throughout the run, recording every event they receive.

A task follower picks a task that was just accepted, reads its stream
(``GET /tasks/{id}/stream``), hangs up after a few events or a few seconds, and comes back
with the last id it saw (the ``Last-Event-ID`` header, or ``?last_event_id=`` as a native
EventSource's first connect would) until the stream ends after the terminal event; it then
reconnects once more and must get 204. A tenant follower does the same on ``GET /stream``
(every event of the tenant, ids are ``tenant_seq``) from the very first event to the last.

Token frames (named ``token`` events: model text of ``demo_tokens`` tasks) count as messages,
so followers drop mid-text too; half the reconnects send the token cursor (``?tokens=``), the
others get the text so far again from offset 0. Each follower puts its texts together at the
frames' offsets and checks them against the durable ``text`` events (``TokenTexts``).

A *patient* follower never hangs up by itself; if its connection sits idle while PostgreSQL
already holds the next event (for longer than ``stall_after``, counted from the end of the
last Redis or PostgreSQL outage), that is a stalled live stream: recorded, then resumed.
"""

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos.api import CONNECTION_ERROR, RETRY_LATER, Api, retry_after
from taskstream.client.sse import Decoder, Message, aiter_messages

#: Given a stream's cursor: (PostgreSQL's last id on that stream, created_at of the next).
Probe = Callable[[int], Awaitable[tuple[int, float | None]]]

STREAM_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
TERMINAL = ("completed", "failed", "cancelled")


@dataclass(slots=True)
class Seen:
    id: int  # the SSE id: the task's seq, or the tenant_seq on the tenant stream
    task_id: str
    seq: int
    tenant_seq: int
    type: str
    status: str
    attempt: int
    at: float  # wall clock when received
    conn: int  # which connection of this follow delivered it


@dataclass
class Follow:
    kind: str  # task | tenant
    task_id: str | None
    patient: bool
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    ended: bool = False  # task stream: terminal event seen, then 204
    problems: list[str] = field(default_factory=list)
    stalls: list[str] = field(default_factory=list)
    goal: Callable[[], int | None] = field(default=lambda: None, repr=False)
    texts: "TokenTexts" = field(default_factory=lambda: TokenTexts())

    def done(self) -> bool:
        """A tenant stream is done once it holds the final id ``goal()`` names."""
        goal = self.goal()
        return goal is not None and (self.seen[-1].id if self.seen else 0) >= goal


class _End:
    pass


@dataclass
class TokenTexts:
    """A follower's model texts, as a browser keeps them: frames applied at their offsets."""

    held: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    last_conn: dict[tuple[str, str], int] = field(default_factory=dict)
    conns: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    cursor_conns: set[int] = field(default_factory=set)  # connections that sent ?tokens=
    frames: int = 0
    checked: int = 0  # texts compared with their durable text event when it arrived
    resumed: int = 0  # ... of which had come over more than one connection
    violations: list[str] = field(default_factory=list)

    def cursor(self, task_id: str) -> str:
        return json.dumps({s: [a, len(t)] for (tid, s), (a, t) in self.held.items()
                           if tid == task_id})

    def frame(self, d: dict[str, Any], conn: int) -> None:
        self.frames += 1
        key = (str(d["task_id"]), str(d["stream"]))
        attempt, offset, delta = int(d["attempt"]), int(d["offset"]), str(d["delta"])
        have = self.held.get(key)
        restart = conn not in self.cursor_conns and self.last_conn.get(key) != conn
        self.last_conn[key] = conn
        self.conns.setdefault(key, set()).add(conn)
        if have is None or attempt > have[0]:
            if offset != 0:
                self.violations.append(f"{key}: a new text (attempt {attempt}) starts at "
                                       f"offset {offset}")
                return
            self.held[key] = (attempt, delta)
            self.conns[key] = {conn}
        elif attempt < have[0]:
            self.violations.append(f"{key}: a frame of attempt {attempt} after attempt "
                                   f"{have[0]}")
        elif restart and offset == 0:
            if not delta.startswith(have[1]):
                self.violations.append(f"{key}: the text so far contradicts the one held")
            self.held[key] = (attempt, delta)
        elif offset != len(have[1]):
            what = "gap" if offset > len(have[1]) else "duplicate"
            self.violations.append(f"{key}: {what}: holding {len(have[1])} characters, a "
                                   f"frame at {offset} (connection {conn})")
        else:
            self.held[key] = (attempt, have[1] + delta)

    def durable(self, task_id: str, attempt: int, data: Any, conn: int) -> None:
        """The stream's ``text`` event arrived on connection ``conn``."""
        if not isinstance(data, dict):
            return
        key = (task_id, str(data.get("stream")))
        have = self.held.get(key)
        if have is None or have[0] != attempt:
            return
        text = str(data.get("text"))
        if not text.startswith(have[1]):
            self.violations.append(f"{key}: the tokens are not the durable text's beginning")
        elif self.last_conn.get(key) == conn:
            # Tokens came on this connection: the service completes them before the event.
            self.checked += 1
            self.resumed += len(self.conns.get(key, ())) > 1
            if have[1] != text:
                self.violations.append(f"{key}: tokens hold {len(have[1])} of "
                                       f"{len(text)} characters when the text event came")


class Followers:
    def __init__(self, api: Api, rng: random.Random, *, stall_after: float = 8.0,
                 calm_since: Callable[[], float] = lambda: 0.0) -> None:
        self.api = api
        self.rng = rng
        self.stall_after = stall_after
        #: When the last Redis/PostgreSQL outage ended (+inf during one): events committed
        #: before then may legitimately wait for it to end.
        self.calm_since = calm_since
        self.follows: list[Follow] = []
        self.fresh: deque[str] = deque(maxlen=50)  # recently accepted, not yet followed
        self.stop_picking = asyncio.Event()
        self.hard_stop = asyncio.Event()

    def accepted(self, task_id: str) -> None:
        self.fresh.append(task_id)

    # -- task streams --------------------------------------------------------------------
    async def task_follower(self, patient: bool, probe: Callable[[str], Probe]) -> None:
        while not self.stop_picking.is_set():
            if not self.fresh:
                await asyncio.sleep(0.1)
                continue
            task_id = self.fresh.pop() if self.rng.random() < 0.7 else \
                self.fresh.popleft()
            await self.follow_task(task_id, patient, probe(task_id))

    async def follow_task(self, task_id: str, patient: bool, probe: Probe) -> Follow:
        f = Follow("task", task_id, patient)
        self.follows.append(f)
        cursor: int | None = None
        while not self.hard_stop.is_set():
            status = await self._connect(f, f"/tasks/{task_id}/stream", cursor, probe)
            if f.seen:
                cursor = f.seen[-1].id
            if status == 204:
                if not f.seen or f.seen[-1].status not in TERMINAL:
                    f.problems.append(f"204 at cursor {cursor} before the terminal event")
                f.ended = True
                return f
            if status not in (200, *RETRY_LATER, None):
                return f  # recorded as a problem by _connect
        return f

    # -- the tenant stream ---------------------------------------------------------------
    async def tenant_follower(self, patient: bool, probe: Probe, target: Callable[[], int | None]
                              ) -> None:
        """From tenant_seq 0 until stopped; once ``target()`` gives the final tenant_seq,
        until that one is in hand."""
        f = Follow("tenant", None, patient, goal=target)
        self.follows.append(f)
        cursor = 0
        while not self.hard_stop.is_set() and not f.done():
            status = await self._connect(f, "/stream", cursor, probe)
            if f.seen:
                cursor = f.seen[-1].id
            if status not in (200, *RETRY_LATER, None):
                return

    # -- one connection ------------------------------------------------------------------
    async def _connect(self, f: Follow, path: str, cursor: int | None, probe: Probe
                       ) -> int | None:
        """One connection; returns its HTTP status, or None if it could not connect."""
        route = "GET /tasks/{id}/stream" if f.kind == "task" else "GET /stream"
        headers: dict[str, str] = {}
        url = path
        params: dict[str, str] = {}
        if cursor is not None:
            if self.rng.random() < 0.7:
                headers["Last-Event-ID"] = str(cursor)
            else:
                params["last_event_id"] = str(cursor)
        if f.kind == "task" and f.task_id and f.texts.held and self.rng.random() < 0.5:
            params["tokens"] = f.texts.cursor(f.task_id)
            f.texts.cursor_conns.add(f.connections)
        if f.patient:
            budget, until = 10**9, float("inf")
        elif f.kind == "task":
            budget, until = self.rng.randint(1, 6), time.monotonic() + self.rng.uniform(0.3, 3)
        else:  # a large budget: a tenant stream carries every event of the run
            budget = self.rng.randint(200, 3000)
            until = time.monotonic() + self.rng.uniform(1, 6)
        conn = f.connections
        f.connections += 1
        try:
            async with self.api.pick().stream("GET", url, headers=headers, params=params,
                                              timeout=STREAM_TIMEOUT) as resp:
                self.api.record(route, resp.status_code,
                                "" if resp.status_code < 500 else (await resp.aread()).decode())
                if resp.status_code in RETRY_LATER:
                    await asyncio.sleep(retry_after(resp))
                elif resp.status_code == 200:
                    await self._read(f, resp, conn, budget, until, probe)
                elif resp.status_code != 204:
                    body = (await resp.aread()).decode(errors="replace")
                    f.problems.append(f"{url} (cursor {cursor}) -> {resp.status_code}: "
                                      f"{body[:200]}")
                return resp.status_code
        except httpx.TransportError:
            self.api.record(route, CONNECTION_ERROR)
            await asyncio.sleep(0.1 + self.rng.random() * 0.2)
            return None

    async def _read(self, f: Follow, resp: httpx.Response, conn: int, budget: int,
                    until: float, probe: Probe) -> None:
        inbox: asyncio.Queue[Message | _End | BaseException] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for m in aiter_messages(resp.aiter_bytes(), Decoder()):
                    inbox.put_nowait(m)
                inbox.put_nowait(_End())
            except Exception as exc:  # a dropped connection ends this read only
                inbox.put_nowait(exc)

        reader = asyncio.create_task(pump())
        idle_since = time.monotonic()
        try:
            got = 0
            while got < budget and not self.hard_stop.is_set() and not f.done():
                now = time.monotonic()
                if now >= until:
                    return
                try:
                    item = await asyncio.wait_for(inbox.get(), min(until - now, 1.0))
                except TimeoutError:
                    if time.monotonic() - idle_since > self.stall_after and \
                            await self._stalled(f, probe):
                        return
                    continue
                if isinstance(item, _End | BaseException):
                    return
                idle_since = time.monotonic()
                got += 1
                self._record(f, item, conn)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _stalled(self, f: Follow, probe: Probe) -> bool:
        cursor = f.seen[-1].id if f.seen else 0
        try:
            last, next_created = await probe(cursor)
        except Exception:  # PostgreSQL away: cannot tell; keep waiting
            return False
        if last <= cursor or next_created is None:
            return False
        late = time.time() - max(next_created, self.calm_since())
        if late < self.stall_after:
            return False
        f.stalls.append(f"{f.kind} stream {f.task_id or ''} idle at id {cursor} while "
                        f"PostgreSQL had id {cursor + 1} for {late:.1f}s after the last "
                        f"outage (last id {last})")
        return True

    def _record(self, f: Follow, m: Message, conn: int) -> None:
        if m.event == "token":
            try:
                f.texts.frame(json.loads(m.data), conn)
            except (ValueError, KeyError, TypeError) as exc:
                f.problems.append(f"undecodable token frame: {exc}")
            return
        try:
            d = json.loads(m.data)
            seen = Seen(int(m.id or -1), d["task_id"], int(d["seq"]), int(d["tenant_seq"]),
                        d["type"], d["status"], int(d["attempt"]), time.time(), conn)
        except (ValueError, KeyError, TypeError) as exc:
            f.problems.append(f"undecodable message id={m.id!r}: {exc}")
            return
        expect = seen.seq if f.kind == "task" else seen.tenant_seq
        if seen.id != expect:
            f.problems.append(f"SSE id {m.id!r} is not the event's {f.kind} position {expect}")
        if f.kind == "task" and seen.task_id != f.task_id:
            f.problems.append(f"event of task {seen.task_id} on the stream of {f.task_id}")
        if m.event != "message":
            f.problems.append(f"named SSE event {m.event!r}; the seed listens to unnamed ones")
        if seen.type == "text":
            f.texts.durable(seen.task_id, seen.attempt, d.get("data"), conn)
        f.seen.append(seen)
