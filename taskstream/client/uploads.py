"""A streamed ``multipart/form-data`` body for ``POST /upload``.

The file is read in ``CHUNK`` pieces as the request is sent (off the event loop, in a thread),
never whole; the length is computed up front when the source knows its size, so the service
can refuse an oversized upload before any of it is sent. A path, bytes or a seekable file can
be sent again when a request is retried; a pipe cannot.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 256 * 1024

#: A file to upload: a path, its bytes, or a binary file object.
FileSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


def _quote(value: str) -> str:
    # A quoted-string, as python-multipart (and most servers) unquote it; a header cannot
    # hold CR or LF, so those are percent-encoded as browsers do.
    value = value.replace("\\", "\\\\").replace('"', '\\"')
    return value.replace("\r", "%0D").replace("\n", "%0A")


@dataclass(slots=True)
class MultipartFile:
    """One file part of an upload body; ``content()`` gives a fresh stream for each attempt."""

    source: FileSource
    filename: str
    content_type: str
    size: int | None  # bytes of file content, when known
    start: int = 0  # a file object's position when handed to us

    @property
    def replayable(self) -> bool:
        return not _is_fileobj(self.source) or self.size is not None

    async def content(self) -> AsyncIterator[bytes]:
        """The file's bytes alone, read as they are sent."""
        src = self.source
        if isinstance(src, bytes | bytearray | memoryview):
            view = memoryview(src)
            for i in range(0, len(view), CHUNK):
                yield bytes(view[i : i + CHUNK])
        elif isinstance(src, str | os.PathLike):
            fh = await asyncio.to_thread(open, src, "rb")
            try:
                async for piece in _read(fh):
                    yield piece
            finally:
                await asyncio.to_thread(fh.close)
        else:
            if self.size is not None:
                await asyncio.to_thread(src.seek, self.start)
            async for piece in _read(src):
                yield piece


def part_head(boundary: str, filename: str, content_type: str) -> bytes:
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{_quote(filename)}"'
        f"\r\nContent-Type: {content_type}\r\n\r\n"
    ).encode()


@dataclass(slots=True)
class MultipartFiles:
    """The body of an upload: one ``file`` part, or several (one batch), each streamed."""

    parts: list[MultipartFile]
    boundary: str = ""

    def __post_init__(self) -> None:
        self.boundary = self.boundary or f"taskstream-{uuid.uuid4().hex}"

    @property
    def header(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def length(self) -> int | None:
        if any(p.size is None for p in self.parts):
            return None
        return sum(len(part_head(self.boundary, p.filename, p.content_type)) + (p.size or 0)
                   + 2 for p in self.parts) + len(f"--{self.boundary}--\r\n")

    @property
    def replayable(self) -> bool:
        return all(p.replayable for p in self.parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        for p in self.parts:
            yield part_head(self.boundary, p.filename, p.content_type)
            async for piece in p.content():
                yield piece
            yield b"\r\n"
        yield f"--{self.boundary}--\r\n".encode()


def _is_fileobj(src: FileSource) -> bool:
    return not isinstance(src, str | os.PathLike | bytes | bytearray | memoryview)


async def _read(fh: BinaryIO) -> AsyncIterator[bytes]:
    while True:
        piece = await asyncio.to_thread(fh.read, CHUNK)
        if not piece:
            return
        yield piece


def prepare(source: FileSource, filename: str | None = None,
            content_type: str | None = None) -> MultipartFile:
    """Describe ``source`` for upload: its name, type and (when it can be known) size."""
    size: int | None
    start = 0
    if isinstance(source, bytes | bytearray | memoryview):
        size = memoryview(source).nbytes
        name = filename or "upload"
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        size = path.stat().st_size  # also: a missing file fails here, before any request
        name = filename or path.name
    else:
        name = filename or Path(str(getattr(source, "name", "") or "upload")).name
        try:
            start = source.tell()
            end = source.seek(0, os.SEEK_END)
            source.seek(start)
            size = end - start
        except (OSError, AttributeError, ValueError):
            size = None  # a pipe or socket: sent chunked, and only once
    ctype = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return MultipartFile(source, name, ctype, size, start)
