"""Splitting text into overlapping chunks on word boundaries."""

from collections.abc import Iterator

from taskstream.builtin.parsing import Page


def chunk_pages(pages: list[Page], size: int, overlap: int) -> Iterator[tuple[int | None, str]]:
    """Yield (page, chunk) with chunks of about ``size`` characters overlapping by ``overlap``."""
    overlap = min(overlap, size // 2)
    for page in pages:
        words = page.text.split()
        start = 0
        while start < len(words):
            length, end = 0, start
            while end < len(words) and (length == 0 or length + len(words[end]) + 1 <= size):
                length += len(words[end]) + 1
                end += 1
            yield page.number, " ".join(words[start:end])
            if end >= len(words):
                break
            # Step back over roughly `overlap` characters of words.
            back, back_len = end, 0
            while back > start + 1 and back_len + len(words[back - 1]) + 1 <= overlap:
                back -= 1
                back_len += len(words[back]) + 1
            start = back
