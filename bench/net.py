"""Lean load generators: a keep-alive HTTP/1.1 client, an SSE reader, a pub/sub counter.

Written on asyncio protocols rather than httpx / redis-py so that on a 2-core machine the load
generator costs a few microseconds per message and the servers get the CPU.
"""

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson


class HttpError(Exception):
    pass


#: Extra request header lines (the bench's API key), set once by ``set_token``.
_AUTH = ""


def set_token(token: str | None) -> None:
    global _AUTH
    _AUTH = f"Authorization: Bearer {token}\r\n" if token else ""


def auth_headers() -> dict[str, str]:
    """The bench's API key as a header, for clients other than ``HttpConn`` (httpx)."""
    if not _AUTH:
        return {}
    name, _, value = _AUTH.strip().partition(": ")
    return {name: value}


class HttpConn:
    """One keep-alive HTTP/1.1 connection; requests in sequence (no pipelining)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        if self._w is None or self._w.is_closing():
            self._r, self._w = await asyncio.open_connection(self.host, self.port)
        assert self._r is not None and self._w is not None
        payload = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{_AUTH}\r\n")
        self._w.write(head.encode() + payload)
        raw = await self._r.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            if k == "content-length":
                length = int(v)
            elif k == "connection" and "close" in v.lower():
                close = True
        data = await self._r.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._w = None


@dataclass(eq=False)
class Stream:
    """Accounting for one SSE stream."""

    path: str
    status: int = 0
    opened_at: float = 0.0  # wall clock when the response headers arrived
    messages: int = 0
    last_seq: int = 0
    seqs_ok: bool = True  # ids arrived 1, 2, 3 ... with no gap and no repeat
    terminal: bool = False
    closed: bool = False
    error: str | None = None
    last_t: float | None = None  # the last report stamp seen (polling peers repeat it)
    latencies: list[float] = field(default_factory=list)


class SSEProtocol(asyncio.Protocol):
    """GET an SSE endpoint and record each message's delivery latency.

    A message's latency is (receive wall clock) - (the report stamp in its ``message``
    field, set by the ``bench_tick`` task just before it called ``ctx.progress``). Messages
    with a stamp already seen (a polling peer re-sends the same row) are not latency samples.
    """

    def __init__(self, stream: Stream, host: str, port: int, check_seq: bool,
                 done: "asyncio.Future[None]",
                 on_message: Callable[[Stream, dict[str, Any]], None] | None = None,
                 opened: "asyncio.Future[None] | None" = None) -> None:
        self.s, self.host, self.port, self.check_seq = stream, host, port, check_seq
        self.done = done
        self.opened = opened
        self.on_message = on_message
        self.buf = bytearray()
        self.body = bytearray()
        self.headers_done = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(f"GET {self.s.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                        f"Accept: text/event-stream\r\n{_AUTH}\r\n".encode())

    def data_received(self, data: bytes) -> None:
        if self.s.closed:
            return  # after the body's last chunk (its rest of the input was never trimmed)
        now = time.time()
        if self.buf:
            self.buf += data
            buf: bytes | bytearray = self.buf
        else:
            buf = data  # the usual read: whole chunks, parsed without a copy
        pos = 0
        if not self.headers_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if buf is not self.buf:
                    self.buf = bytearray(buf)
                return
            head = bytes(buf[:end]).decode("latin-1")
            pos = end + 4
            self.headers_done = True
            self.s.status = int(head.split(" ", 2)[1])
            self.s.opened_at = now
            if self.opened is not None and not self.opened.done():
                self.opened.set_result(None)
            if self.s.status != 200:
                self._finish()
                return
        # chunked transfer encoding
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            size_field = buf[pos:nl]
            size = int(size_field.split(b";")[0] if b";" in size_field else size_field, 16)
            if size == 0:
                self._finish()
                return
            end = nl + 2 + size
            if len(buf) < end + 2:
                break
            self.body += buf[nl + 2:end]
            pos = end + 2
            self._events(now)
        if buf is self.buf:
            del self.buf[:pos]  # what is left waits for the next read
        elif pos < len(buf):
            self.buf = bytearray(buf[pos:])

    def _events(self, now: float) -> None:
        body = self.body
        if b"\r" in body:
            body = body.replace(b"\r\n", b"\n")
        *blocks, rest = body.split(b"\n\n")
        self.body = bytearray(rest)
        for block in blocks:
            at = block.find(b"data:")
            if at < 0:
                continue  # a keep-alive comment (or an id-only message)
            raw: bytes | bytearray
            if block.find(b"data:", at + 5) < 0 and (at == 0 or block[at - 1] == 10):
                nl = block.find(b"\n", at)  # one data line (the usual message); then maybe retry:
                raw = block[at + 5:] if nl < 0 else block[at + 5:nl]
            else:
                lines = [ln[5:].lstrip() for ln in block.split(b"\n")
                         if ln.startswith(b"data:")]
                if not lines:
                    continue
                raw = b"\n".join(lines)
            self._message(orjson.loads(raw), now)

    def _message(self, msg: dict[str, Any], now: float) -> None:
        s = self.s
        s.messages += 1
        seq = msg.get("seq")
        if self.check_seq and isinstance(seq, int):
            if seq != s.last_seq + 1:
                s.seqs_ok = False
            s.last_seq = seq
        if msg.get("status") in ("completed", "failed", "cancelled"):
            s.terminal = True
        stamp = msg.get("message")
        if isinstance(stamp, str) and stamp[:1].isdigit():
            try:
                t = float(stamp)
            except ValueError:
                t = None
            if t is not None and t != s.last_t:
                s.last_t = t
                if t >= s.opened_at:  # reported while the stream was open: a live sample
                    s.latencies.append(now - t)
        if self.on_message is not None:
            self.on_message(s, msg)

    def _finish(self) -> None:
        self.s.closed = True
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.s.closed = True
        if exc is not None and self.s.error is None:
            self.s.error = repr(exc)
        if not self.done.done():
            self.done.set_result(None)


class SSEPool:
    """Opens many streams (a bounded number of connects in flight) and tracks them."""

    def __init__(self, host: str, port: int, *, check_seq: bool = True) -> None:
        self.host, self.port, self.check_seq = host, port, check_seq
        self.streams: list[Stream] = []
        self.done: list[asyncio.Future[None]] = []
        self.transports: list[asyncio.BaseTransport] = []

    async def open(self, paths: list[str], parallel: int = 100) -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(parallel)

        async def one(path: str) -> None:
            s = Stream(path)
            fut: asyncio.Future[None] = loop.create_future()
            opened: asyncio.Future[None] = loop.create_future()
            async with sem:
                t, _ = await loop.create_connection(
                    lambda: SSEProtocol(s, self.host, self.port, self.check_seq, fut,
                                        opened=opened),
                    self.host, self.port)
                # wait for the headers before the next connect: no SYN-backlog overflow
                await asyncio.wait([opened, fut], return_when=asyncio.FIRST_COMPLETED)
            self.streams.append(s)
            self.done.append(fut)
            self.transports.append(t)

        await asyncio.gather(*(one(p) for p in paths))

    async def wait(self, within: float) -> bool:
        if not self.done:
            return True
        _, pending = await asyncio.wait(self.done, timeout=max(0.0, within))
        return not pending

    def close(self) -> None:
        for t in self.transports:
            t.close()

    def latencies(self) -> list[float]:
        return [x for s in self.streams for x in s.latencies]


class PubSubCounter(asyncio.Protocol):
    """PSUBSCRIBE to a pattern over raw RESP and count messages whose payload has a marker."""

    def __init__(self, pattern: str, marker: bytes, db_select: int = 0) -> None:
        self.pattern, self.marker = pattern, marker
        self.buf = bytearray()
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def connect(cls, host: str, port: int, pattern: str, marker: bytes
                      ) -> "PubSubCounter":
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(pattern, marker), host, port)
        await asyncio.wait_for(proto.ready, 5)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        p = self.pattern.encode()
        self.transport.write(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(p), p))

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buf += data
        pos = 0
        buf = self.buf
        while True:
            item = _parse(buf, pos)
            if item is None:
                break
            value, pos = item
            if isinstance(value, list) and value:
                kind = value[0]
                if kind == b"pmessage" and self.marker in value[3]:
                    if not self.count:
                        self.first = now
                    self.count += 1
                    self.last = now
                elif kind == b"psubscribe" and not self.ready.done():
                    self.ready.set_result(None)
        del self.buf[:pos]

    def reset(self) -> None:
        self.count, self.first, self.last = 0, 0.0, 0.0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def rate(self) -> float:
        span = self.last - self.first
        return (self.count - 1) / span if span > 0 and self.count > 1 else 0.0


def _parse(buf: bytearray, pos: int) -> tuple[Any, int] | None:
    nl = buf.find(b"\r\n", pos)
    if nl < 0:
        return None
    kind = buf[pos:pos + 1]
    head = bytes(buf[pos + 1:nl])
    if kind == b"*":
        n = int(head)
        items: list[Any] = []
        p = nl + 2
        for _ in range(n):
            sub = _parse(buf, p)
            if sub is None:
                return None
            items.append(sub[0])
            p = sub[1]
        return items, p
    if kind == b"$":
        n = int(head)
        if n < 0:
            return None, nl + 2
        if len(buf) < nl + 2 + n + 2:
            return None
        return bytes(buf[nl + 2:nl + 2 + n]), nl + 2 + n + 2
    return head, nl + 2  # +OK, :1, -ERR
