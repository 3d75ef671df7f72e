"""The two SSE responses (``TASKSTREAM_SSE_RESPONSE``) over a real uvicorn: the same bytes on
the wire, and a client that stops reading is cut off after ``stream_send_timeout``."""

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from redis.asyncio import Redis
from starlette.types import Message

from service import sse
from service.deps import Resources
from service.hub import Hub
from service.limits import StreamSlots
from service.routes.streams import open_stream
from service.sse_lean import LastChunk, LeanEventStream
from service.streams import StreamSpec
from taskstream.core.events import Event, IdField
from taskstream.core.settings import Settings
from taskstream.devservices.processes import WebServer, WorkerProc
from tests.conftest import SSE_RESPONSES, eventually, wait_terminal
from tests.test_tasks_api import submit

VARYING = {"date", "server"}


async def test_both_responses_send_the_same_bytes(web: WebServer, web_lean: WebServer,
                                                  worker: WorkerProc) -> None:
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as c:
        task = await submit(c, "demo", duration=0.3, steps=3)
        await wait_terminal(c, task["task_id"])
    seen = []
    for server in (web, web_lean):
        async with (httpx.AsyncClient(base_url=server.url, timeout=30) as c,
                    c.stream("GET", f"/tasks/{task['task_id']}/stream") as r):
            body = await r.aread()
            headers = [(k, v) for k, v in r.headers.multi_items() if k not in VARYING]
            seen.append((r.status_code, headers, body))
    assert seen[0] == seen[1]
    status, headers, body = seen[0]
    assert status == 200 and ("x-accel-buffering", "no") in headers
    assert ("content-type", "text/event-stream; charset=utf-8") in headers
    assert body.startswith(b"id: 1\ndata: {") and body.endswith(b"}\n\n")


def test_frames_are_plain_unnamed_messages() -> None:
    assert sse.message(7) == b"id: 7\n\n"
    assert sse.message(7, '{"a":1}') == b'id: 7\ndata: {"a":1}\n\n'
    assert sse.KEEPALIVE == b": keep-alive\n\n"


@pytest.mark.parametrize("response", SSE_RESPONSES)
async def test_client_that_stops_reading_is_cut_off(env: dict[str, str], logs: Path,
                                                    worker: WorkerProc, response: str) -> None:
    log = logs / f"slow-client-{response}.log"
    server = WebServer({**env, "TASKSTREAM_SSE_RESPONSE": response,
                        "TASKSTREAM_STREAM_SEND_TIMEOUT": "1"}, log)
    server.start()
    sock = socket.socket()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            # ~7 MB of frames: more than the socket buffers and uvicorn's write buffer hold.
            task = await submit(c, "noop", events=20000)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(f"GET /tasks/{task['task_id']}/stream HTTP/1.1\r\n"
                         f"Host: 127.0.0.1\r\n\r\n".encode())
            await wait_terminal(c, task["task_id"])  # meanwhile, the client reads nothing

        async def cut() -> bool:
            return "stopped reading" in log.read_text()

        await eventually(cut, timeout=15)
        received = await asyncio.to_thread(_read_to_eof, sock)
        assert received.startswith(b"HTTP/1.1 200")
        assert b'"status":"completed"' not in received  # it never got that far
        assert not received.endswith(b"0\r\n\r\n")  # the response was cut, not finished
    finally:
        sock.close()
        server.stop()


def _read_to_eof(sock: socket.socket) -> bytes:
    sock.settimeout(10)  # the server closed the connection: the end comes once drained
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


async def test_lean_response_ends_the_body_with_the_last_chunk() -> None:
    """A ``LastChunk`` goes out with the end of the body, in one send (one write), and the
    iterator still runs its cleanup (a stream slot is released there)."""
    sent: list[Message] = []
    cleaned = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"id: 1\n\n"
            yield LastChunk(b"id: 2\n\n")
        finally:
            cleaned.set()

    async def receive() -> Message:
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    await LeanEventStream(frames())({"type": "http"}, receive, send)
    bodies = [(m["body"], m["more_body"]) for m in sent[1:]]
    assert bodies == [(b"id: 1\n\n", True), (b"id: 2\n\n", False)]
    assert cleaned.is_set()


async def test_lean_streams_that_end_together_write_before_they_tear_down() -> None:
    """When a task ends, its N streams wake at once: each one's last write goes out before
    any of them tears down (closes its iterator), so the Nth stream's end does not wait for
    N-1 teardowns (the 5,000-stream push latency bench)."""
    order: list[str] = []
    ended = asyncio.get_running_loop().create_future()

    def response(name: str) -> LeanEventStream:
        async def frames() -> AsyncIterator[bytes]:
            try:
                await ended
                yield LastChunk(b"id: 1\n\n")
            finally:
                order.append(f"teardown {name}")

        return LeanEventStream(frames())

    async def receive() -> Message:
        await asyncio.Event().wait()  # the clients never leave
        raise AssertionError

    def sender(name: str) -> Callable[[Message], Awaitable[None]]:
        async def send(message: Message) -> None:
            if not message.get("more_body", True):
                order.append(f"end {name}")
        return send

    runs = [asyncio.create_task(response(n)({"type": "http"}, receive, sender(n)))
            for n in "ab"]
    await asyncio.sleep(0.01)  # both wait for their task's end
    ended.set_result(None)
    await asyncio.gather(*runs)
    assert order == ["end a", "end b", "teardown a", "teardown b"]


async def test_streams_ending_together_write_their_ends_while_still_subscribed(
        settings: Settings) -> None:
    """A task's two streams (the frames both responses send): each one's terminal frame
    comes out while both subscriptions are still open. The unsubscribe (a write to Redis for
    a channel's last stream) follows the writes, and one stream's teardown waits for the
    other's end (sse-starlette reads the iterator to its end, as this test does). Then
    every subscription is closed."""
    hub = Hub(lambda: Redis.from_url(settings.redis_url),
              control_channel=f"{settings.namespace}:ssetest:control")
    await hub.start()
    channel = f"{settings.namespace}:ssetest:ends"

    async def nothing_stored(cursor: int, limit: int) -> list[Event]:
        return []

    res = cast(Resources, SimpleNamespace(hub=hub, streams=StreamSlots(10, 10),
                                          settings=settings))
    spec = StreamSpec(channel, 0, IdField.SEQ, nothing_stored, ends_on_terminal=True)
    subscribed_at_end: list[int] = []

    async def read_to_the_end() -> list[bytes]:
        stream = open_stream(res, "tenant", spec, IdField.SEQ)
        frames = stream.frames if isinstance(stream, LeanEventStream) \
            else cast(Any, stream).body_iterator  # sse-starlette's
        chunks = []
        async for chunk in frames:  # the progress may come alone, before the end
            chunks.append(chunk)
            if type(chunk) is LastChunk:
                subscribed_at_end.append(hub.streams)
        return chunks

    try:
        readers = [asyncio.ensure_future(read_to_the_end()) for _ in range(2)]
        publisher = Redis.from_url(settings.redis_url)

        async def subscribed() -> bool:  # both streams, and Redis has the SUBSCRIBE
            [(_, n)] = await publisher.pubsub_numsub(channel)
            return hub.streams == 2 and n == 1

        await eventually(subscribed)
        now = datetime.now(UTC)
        for seq, etype in ((1, "progress"), (2, "completed")):
            await publisher.publish(channel, Event("t", seq, seq, etype, etype, 1.0, None,
                                                   None, 1, now).encode())
        await publisher.aclose()
        for chunks in await asyncio.wait_for(asyncio.gather(*readers), 10):
            assert type(chunks[-1]) is LastChunk
            assert b"".join(chunks).count(b"id: ") == 2
        assert subscribed_at_end == [2, 2]
        assert hub.streams == 0 and hub.ended == 2
    finally:
        await hub.close()
