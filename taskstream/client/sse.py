"""A Server-Sent Events parser, as the WHATWG spec describes it (§9.2.6).

Lines end with CR, LF or CRLF only (not the other characters ``str.splitlines`` knows, which
may legally appear inside ``data:``); the last event id persists across messages, and a
message that carries only an ``id:`` moves the cursor without being dispatched. Comments
(the server's keep-alive pings) are dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """One dispatched SSE message. ``id`` is the last event id in effect when it arrived."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class LineSplitter:
    """Bytes in, complete lines out (without their terminator), across chunk boundaries."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        self._buf += chunk
        start = 0
        buf = self._buf
        n = len(buf)
        i = 0
        while i < n:
            c = buf[i]
            if c == 0x0A:  # LF
                yield bytes(buf[start:i])
                start = i + 1
            elif c == 0x0D:  # CR, maybe the first half of CRLF
                if i + 1 == n:
                    break  # wait for the next chunk to know
                yield bytes(buf[start:i])
                if buf[i + 1] == 0x0A:
                    i += 1
                start = i + 1
            i += 1
        del buf[:start]

    def flush(self) -> Iterator[bytes]:
        """End of stream: a trailing CR ends a line; an unterminated line is discarded."""
        if self._buf.endswith(b"\r"):
            yield bytes(self._buf[:-1])
        self._buf.clear()


class Decoder:
    """Lines in, messages out.

    ``last_id`` is the spec's "last event ID string": the id in effect at the last message
    boundary (blank line), whether or not that message had data. An ``id:`` line of a message
    cut off before its blank line does not count — that message was never received.
    """

    def __init__(self, last_id: str = "") -> None:
        self.last_id = last_id
        self._id_buffer = last_id
        self.retry: int | None = None
        self._data: list[str] = []
        self._event = ""

    def line(self, raw: bytes) -> Message | None:
        text = raw.decode("utf-8", errors="replace")
        if text.startswith("\ufeff"):
            text = text[1:]
        if text == "":
            return self._dispatch()
        if text.startswith(":"):
            return None  # a comment: keep-alive
        name, colon, value = text.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self._id_buffer = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)
        return None

    def _dispatch(self) -> Message | None:
        self.last_id = self._id_buffer
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return Message(data="\n".join(data), event=event or "message", id=self.last_id,
                       retry=self.retry)


def parse(lines: Iterable[bytes], last_id: str = "") -> Iterator[Message]:
    """Messages from already-split lines (handy for tests)."""
    dec = Decoder(last_id)
    for raw in lines:
        msg = dec.line(raw)
        if msg is not None:
            yield msg


async def aiter_messages(chunks: AsyncIterable[bytes], decoder: Decoder) -> AsyncIterator[Message]:
    """Messages from a byte stream. ``decoder.last_id`` tracks the cursor, including ids sent
    without data, so a caller can resume from it even when no message was dispatched."""
    split = LineSplitter()
    async for chunk in chunks:
        for raw in split.feed(chunk):
            msg = decoder.line(raw)
            if msg is not None:
                yield msg
    for raw in split.flush():
        msg = decoder.line(raw)
        if msg is not None:
            yield msg
