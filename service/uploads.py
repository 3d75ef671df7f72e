"""Streaming multipart upload into PostgreSQL.

The request body is parsed as it arrives (python-multipart's push parser) and the file part
is written to ``upload_chunks`` in ``upload_chunk_bytes`` pieces inside one transaction. The
web process holds at most about one chunk in memory whatever the file size; a file over the
limit is refused with 413 the moment it crosses it, and the rollback leaves nothing behind.
A worker on any machine reads the file back from the database; the client's filename is kept
only as sanitized metadata.
"""

import hashlib
import re
import unicodedata
import uuid
from dataclasses import dataclass, field

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from taskstream.core import store

FILE_FIELD = "file"
#: Several files may come as several ``file`` parts or, as in the tutorial's
#: ``/batch-process``, as ``files``.
FILE_FIELDS = (FILE_FIELD, "files")
MAX_FILENAME = 255
#: Room for a 10 KB hostile filename, which we then truncate; beyond this it is a 400.
MAX_PART_HEADER = 16 * 1024


def sanitize_filename(raw: str) -> str:
    """A display name only: no directories, controls, bidi overrides or NULs; bounded length."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"^[.\s]+", "", name).strip()
    return name[:MAX_FILENAME] or "upload"


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    content_type: str = "application/octet-stream"


@dataclass
class UploadResult:
    upload_id: uuid.UUID
    filename: str
    content_type: str
    size: int
    sha256: str = ""


class _Receiver:
    """Collects parser callbacks; the async side drains ``pending`` into the database."""

    def __init__(self) -> None:
        self.part = _Part()
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.events: list[tuple[str, object]] = []

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        _disp, opts = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        self.part.name = opts.get(b"name", b"").decode("utf-8", "replace")
        fn = opts.get(b"filename")
        self.part.filename = None if fn is None else fn.decode("utf-8", "replace")
        ctype = self.part.headers.get(b"content-type")
        if ctype:
            self.part.content_type = ctype.decode("latin-1")[:200]
        self.events.append(("begin", self.part))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", data[start:end]))

    def on_part_end(self) -> None:
        self.events.append(("end", self.part))


async def receive_upload(request: Request, pool: store.Executor, owner: str, *,
                         max_bytes: int, chunk_bytes: int) -> UploadResult:
    """One file, in the field ``file``; a second file part is a 400."""
    (result,) = await receive_uploads(request, pool, owner, max_bytes=max_bytes,
                                      chunk_bytes=chunk_bytes, max_files=1)
    return result


async def receive_uploads(request: Request, pool: store.Executor, owner: str, *,
                          max_bytes: int, chunk_bytes: int, max_files: int
                          ) -> list[UploadResult]:
    """Every file part (fields ``file`` or ``files``) stored in ONE transaction: all of them
    or none. ``max_bytes`` bounds the whole request; an empty file is a 400 naming it."""
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in opts:
        raise UnsupportedMediaType("send the file as multipart/form-data in a field named 'file'")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise PayloadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")

    rx = _Receiver()
    parser = MultipartParser(opts[b"boundary"], callbacks={
        "on_part_begin": rx.on_part_begin, "on_header_field": rx.on_header_field,
        "on_header_value": rx.on_header_value, "on_header_end": rx.on_header_end,
        "on_headers_finished": rx.on_headers_finished, "on_part_data": rx.on_part_data,
        "on_part_end": rx.on_part_end,
    }, max_header_size=MAX_PART_HEADER)
    results: list[UploadResult] = []
    buf = bytearray()
    sha = hashlib.sha256()
    size = 0  # of the current file
    total = 0  # of the request's files
    idx = 0
    in_file = False

    async with store.transaction(pool) as conn:
        async def flush(final: bool = False) -> None:
            # Fixed-size chunks, so a reader can seek by index; the last may be shorter.
            nonlocal idx
            while len(buf) >= chunk_bytes or (final and buf):
                await store.add_upload_chunk(conn, results[-1].upload_id, idx,
                                             bytes(buf[:chunk_bytes]))
                del buf[:chunk_bytes]
                idx += 1

        async def finish() -> None:
            nonlocal in_file
            current = results[-1]
            if size == 0:
                which = "the uploaded file" if max_files == 1 else \
                    f"file {len(results) - 1} ({current.filename!r})"
                raise BadRequest(f"{which} is empty")
            await flush(final=True)
            current.size = size
            current.sha256 = sha.hexdigest()
            await store.finish_upload(conn, current.upload_id, size, current.sha256)
            in_file = False

        try:
            async for piece in request.stream():
                parser.write(piece)
                for kind, payload in rx.events:
                    if kind == "begin":
                        assert isinstance(payload, _Part)
                        if payload.name not in FILE_FIELDS or payload.filename is None:
                            continue
                        if len(results) >= max_files:
                            raise BadRequest("one file per upload, in the field 'file'"
                                             if max_files == 1 else
                                             f"at most {max_files} files per upload")
                        name = sanitize_filename(payload.filename)
                        upload_id = uuid.uuid4()
                        await store.begin_upload(conn, owner, upload_id, name,
                                                 payload.content_type)
                        results.append(UploadResult(upload_id, name, payload.content_type, 0))
                        sha = hashlib.sha256()
                        size = idx = 0
                        in_file = True
                    elif kind == "data" and in_file:
                        assert isinstance(payload, bytes)
                        size += len(payload)
                        total += len(payload)
                        if total > max_bytes:
                            raise PayloadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
                        sha.update(payload)
                        buf += payload
                        await flush()
                    elif kind == "end" and in_file:
                        await finish()
                rx.events.clear()
            parser.finalize()
        except ValueError as exc:  # python-multipart's parse errors
            raise BadRequest(f"malformed multipart body: {exc}") from None
        if not results:
            raise BadRequest("no file found: send it in a multipart field named 'file'")
        if in_file:
            raise BadRequest("multipart body ended inside the file part")
    return results
