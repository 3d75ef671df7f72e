"""The client's event streams survive their connection: cut mid-task by a proxy, a proxy
answering 502/503 meanwhile, the web process killed or restarted — and the caller still sees
every event exactly once, in order (checked against the task's recorded history)."""

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from taskstream.client import AsyncClient, Event, RetryPolicy
from taskstream.devservices.processes import WebServer, WorkerProc, free_port
from tests.conftest import SSE_RESPONSES, eventually

FAST = RetryPolicy(backoff=0.05, max_backoff=0.5)


@dataclass
class Seen:
    at: float
    path: str
    last_event_id: str | None
    answered: int | None = None  # the status the proxy answered itself, if it did


@dataclass
class Proxy:
    """A TCP proxy in front of the web server. ``cut()`` drops every live connection
    mid-stream; ``answer(status, ...)`` makes it reply to the next connection itself, as a
    load balancer does while its backend is away. It records each request's path and
    Last-Event-ID."""

    upstream: int
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _canned: list[tuple[int, str | None]] = field(default_factory=list)
    _live: set[asyncio.StreamWriter] = field(default_factory=set)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def streams(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("stream")]

    def answer(self, status: int, retry_after: str | None = None) -> None:
        self._canned.append((status, retry_after))

    def cut(self) -> None:
        for w in list(self._live):
            w.transport.abort()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for t in list(self._handlers):
            t.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._handlers.discard(task)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        seen = Seen(time.monotonic(), lines[0].split(" ")[1], headers.get("last-event-id"))
        self.seen.append(seen)
        if self._canned:
            status, retry_after = self._canned.pop(0)
            seen.answered = status
            extra = f"Retry-After: {retry_after}\r\n" if retry_after else ""
            body = b"<html>backend unavailable</html>"
            writer.write(f"HTTP/1.1 {status} Proxy Says No\r\nContent-Type: text/html\r\n"
                         f"{extra}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode() + body)
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._live |= {writer, up_writer}
        try:
            up_writer.write(head)
            pipes = [asyncio.create_task(_pipe(reader, up_writer)),
                     asyncio.create_task(_pipe(up_reader, writer))]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in pipes:
                    p.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._live -= {writer, up_writer}
            up_writer.transport.abort()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()


@pytest.fixture
async def proxy(sse_web: WebServer) -> AsyncIterator[Proxy]:
    p = Proxy(sse_web.port)
    await p.start()
    yield p
    await p.stop()


def via(url: str) -> AsyncClient:
    # No keep-alive: each request is a new connection, so the proxy sees (and can answer) it.
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    return AsyncClient(url, retry=FAST, transport=transport)


@pytest.fixture
async def ts(sse_web: WebServer, worker: WorkerProc) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(sse_web.url, retry=FAST) as c:
        yield c


async def history(ts: AsyncClient, task_id: str) -> list[Event]:
    return [e async for e in ts.history(task_id)]


def resumed_from(streams: list[Seen]) -> Iterator[int]:
    for s in streams:
        if s.answered is None:
            yield int(s.last_event_id or 0)


async def test_cut_connections_resume_exactly_once(ts: AsyncClient, proxy: Proxy) -> None:
    task = await ts.submit("demo", {"duration": 2, "steps": 20})
    got: list[Event] = []
    async with via(proxy.url) as tsp, tsp.events(task) as stream:
        async for ev in stream:
            got.append(ev)
            if ev.seq in (3, 9, 15):
                proxy.cut()  # the connection drops under the client's feet
    recorded = await history(ts, task.task_id)
    assert got == recorded  # every event, once, in order, identical
    assert [e.seq for e in got] == list(range(1, 24)) and got[-1].status == "completed"
    assert stream.reconnects >= 3
    # Each reconnection asked to resume just after an event it had delivered.
    cursors = list(resumed_from(proxy.streams()))
    assert cursors[0] == 0 and len(cursors) >= 4
    assert cursors == sorted(cursors) and set(cursors[1:]) <= {e.seq for e in got}


async def test_proxy_502_and_503_are_waited_out(ts: AsyncClient, proxy: Proxy) -> None:
    task = await ts.submit("demo", {"duration": 1.5, "steps": 15})
    got: list[Event] = []
    async with via(proxy.url) as tsp, tsp.events(task) as stream:
        async for ev in stream:
            got.append(ev)
            if ev.seq == 4:
                proxy.answer(502)
                proxy.answer(503, retry_after="1")
                proxy.cut()
    assert got == await history(ts, task.task_id)
    tries = proxy.streams()
    answered = [s.answered for s in tries]
    assert answered[:1] == [None] and [502, 503] == [a for a in answered if a]
    i = answered.index(503)
    assert tries[i + 1].at - tries[i].at >= 1.0  # Retry-After honoured
    assert tries[i + 1].last_event_id == tries[i].last_event_id == str(4)


@pytest.mark.parametrize("response", SSE_RESPONSES)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "restarted"])
async def test_web_process_restart_mid_stream(env: dict[str, str], logs: Path,
                                              worker: WorkerProc, sig: int,
                                              response: str) -> None:
    server = WebServer({**env, "TASKSTREAM_SSE_RESPONSE": response},
                       logs / f"client-restart-{sig}-{response}.log", port=free_port())
    server.start()
    stopped_in: list[float] = []

    def bounce() -> None:
        t0 = time.monotonic()
        server.stop(sig)
        stopped_in.append(time.monotonic() - t0)
        time.sleep(0.3)  # the client finds nobody listening, and backs off
        server.start()  # same port

    try:
        async with AsyncClient(server.url, retry=FAST) as ts:
            task = await ts.submit("demo", {"duration": 2, "steps": 20})
            got: list[Event] = []
            restart: asyncio.Future[None] | None = None
            async with ts.events(task) as stream:
                async for ev in stream:
                    got.append(ev)
                    if ev.seq == 4:
                        restart = asyncio.ensure_future(asyncio.to_thread(bounce))
            assert restart is not None
            await restart
            assert got == await history(ts, task.task_id)
            assert got[-1].status == "completed" and stream.reconnects >= 1
        # SIGTERM ends the open streams at once: uvicorn's graceful timeout (3 s in the
        # tests) is not waited out, so a deploy is quick.
        assert stopped_in[0] < 2.5, stopped_in
    finally:
        server.stop()


async def test_all_tasks_stream_resumes_too(ts: AsyncClient, proxy: Proxy) -> None:
    got: list[Event] = []
    ours: set[str] = set()
    trickling: set[str] = set()
    finished: set[str] = set()
    done = asyncio.Event()

    async with via(proxy.url) as tsp:
        stream = tsp.all_events()

        async def consume() -> None:
            async for ev in stream:
                got.append(ev)
                # The second cut comes mid-way through the trickling task (an event every
                # 0.2 s), when nothing more is on its way: a cut at an event read from a
                # burst, one the first cut had already ended, would need no reconnect.
                if len(got) == 3 or (ev.task_id in trickling and ev.seq == 8):
                    proxy.cut()
                if ev.terminal and ev.task_id in ours:
                    finished.add(ev.task_id)
                    if finished == ours:
                        done.set()

        consumer = asyncio.create_task(consume())
        await eventually(lambda: asyncio.sleep(0, stream.connected))
        a = await ts.submit("noop", {"events": 6})
        b = await ts.submit("demo", {"duration": 2.4, "steps": 12})
        trickling.add(b.task_id)
        ours |= {a.task_id, b.task_id}
        await asyncio.wait_for(done.wait(), 20)
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await stream.aclose()

    tenant_seqs = [e.tenant_seq for e in got]
    assert tenant_seqs == sorted(set(tenant_seqs))  # in order, nothing twice
    for tid in ours:
        assert [e for e in got if e.task_id == tid] == await history(ts, tid)
    assert stream.reconnects >= 2

    # Resume from a position: the same events again, in the same order.
    start = min(e.tenant_seq for e in got if e.task_id in ours) - 1
    again: list[Event] = []
    async with ts.all_events(after=start) as replay:
        async for ev in replay:
            again.append(ev)
            if ev.tenant_seq == got[-1].tenant_seq:
                break
    assert [e for e in again if e.task_id in ours] == [e for e in got if e.task_id in ours]
