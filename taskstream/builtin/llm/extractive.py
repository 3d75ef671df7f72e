"""The offline default when no model is configured: an **extractive summarizer**, which is
not a language model and does not pretend to be one.

It picks the text's most central sentences (scored by the frequency of their content words,
as in Luhn's 1958 method), keeps them in their original order, and stops at the length asked
for. It cannot follow instructions, so it serves summaries only: the ``agent`` task refuses
to run on it. It speaks the ``LLM`` protocol so that ``summarize`` runs unchanged, and it
reports zero tokens (no model ran): usage is a model's cost, and there is none.

It summarizes the text of the last user message after the ``TEXT:`` marker that our prompts
put before the document (the whole message when there is none).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence

from taskstream.builtin.llm.base import Message, Usage

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
#: Common English words that say nothing about what a text is about.
_STOP = frozenset("""a an and are as at be been but by for from had has have he her his i if
in into is it its me my no not of on or our she so than that the their them then there these
they this to too us was we were what when which who will with would you your""".split())
MARKER = "TEXT:"


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]


def summarize(text: str, max_words: int) -> str:
    """The most central sentences of ``text`` in their order, about ``max_words`` long."""
    sents = sentences(text)
    if not sents:
        return ""
    freq = Counter(w for w in (x.lower() for x in _WORD.findall(text)) if w not in _STOP)

    def score(s: str) -> float:
        words = [w.lower() for w in _WORD.findall(s)]
        content = [w for w in words if w not in _STOP]
        return sum(freq[w] for w in content) / (len(words) ** 0.5 or 1.0)

    chosen: set[int] = set()
    words = 0
    for i in sorted(range(len(sents)), key=lambda i: (-score(sents[i]), i)):
        n = len(sents[i].split())
        if chosen and words + n > max_words:
            break  # the best ones in rank order, no filling-in with weak short sentences
        chosen.add(i)
        words += n
        if words >= max_words:
            break
    picked = " ".join(sents[i] for i in sorted(chosen))
    cut = picked.split()
    return picked if len(cut) <= max_words else " ".join(cut[:max_words]) + " …"


class ExtractiveSummarizer:
    provider = "extractive"
    model = "extractive-summarizer"

    async def aclose(self) -> None:
        return None

    async def stream(self, messages: Sequence[Message], *, max_tokens: int,
                     temperature: float = 0.0) -> AsyncIterator[str | Usage]:
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        text = user.split(MARKER, 1)[1] if MARKER in user else user
        # About 0.75 words a token: the same length budget a model would have had.
        summary = summarize(text, max(8, int(max_tokens * 0.75)))
        for i, word in enumerate(summary.split(" ")):
            yield word if i == 0 else " " + word
        yield Usage(0, 0)
