"""The two SSE responses (``TASKSTREAM_SSE_RESPONSE``) over a real uvicorn: the same bytes on
the wire, and a client that stops reading is cut off after ``stream_send_timeout``."""

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Message

from service import sse
from service.sse_lean import LastChunk, LeanEventStream
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
