"""Turning an uploaded file into text pages: PDF (pypdf), plain text and Markdown.

The type is decided by the bytes, not by the client's filename or content type; a file that
claims to be a PDF but is not, or is binary, or empty, is a ``DocumentError`` with a message the
user can act on.
"""

import io
import re
from dataclasses import dataclass

from taskstream.declaration import PermanentError

PDF_MAGIC = b"%PDF-"


class DocumentError(PermanentError, ValueError):
    """The document cannot be processed; the message says why. Retrying will not help."""


@dataclass(slots=True)
class Page:
    number: int | None  # 1-based for PDFs; None for text
    text: str


def detect_kind(head: bytes, filename: str) -> str:
    """'pdf', 'markdown' or 'text' — from magic bytes; the name only picks text vs Markdown."""
    name = filename.lower()
    if head.startswith(PDF_MAGIC):
        return "pdf"
    if name.endswith(".pdf"):
        raise DocumentError("file is named .pdf but is not a PDF (no %PDF- header)")
    if name.endswith((".md", ".markdown")):
        return "markdown"
    return "text"


def parse(data: bytes, filename: str) -> tuple[str, list[Page]]:
    if not data:
        raise DocumentError("file is empty")
    kind = detect_kind(data[:8], filename)
    if kind == "pdf":
        return kind, _parse_pdf(data)
    return kind, [Page(None, _decode_text(data, markdown=kind == "markdown"))]


def _parse_pdf(data: bytes) -> list[Page]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PdfStreamError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        pages = [Page(i + 1, p.extract_text() or "") for i, p in enumerate(reader.pages)]
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError) as exc:
        raise DocumentError(f"corrupt or unreadable PDF: {exc}") from exc
    if not pages:
        raise DocumentError("PDF has no pages")
    if not any(p.text.strip() for p in pages):
        raise DocumentError("PDF has no extractable text (scanned images need OCR)")
    return pages


_MD_NOISE = re.compile(r"(^#{1,6}\s*|^\s*[-*+]\s+|^>\s?|`{3}.*$|[*_`]{1,3})", re.MULTILINE)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def _decode_text(data: bytes, *, markdown: bool) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentError("file looks binary (NUL bytes); expected a PDF, text or Markdown")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"text is not valid UTF-8 (byte {exc.start})") from exc
    if markdown:
        text = _MD_NOISE.sub("", _MD_LINK.sub(r"\1", text))
    if not text.strip():
        raise DocumentError("file contains no text")
    return text
