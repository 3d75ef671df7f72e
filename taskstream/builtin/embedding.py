"""Embedders. The default is dependency-free and deterministic (feature hashing of words and
word bigrams, L2-normalised) — a real model plugs in behind the same ``Embedder`` protocol."""

import hashlib
import itertools
import math
import re
from typing import Protocol

_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    dim: int

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class HashingEmbedder:
    def __init__(self, dim: int = 256) -> None:
        self.dim = dim

    def _one(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        words = [w.lower() for w in _WORD.findall(text)]
        for feat in words + [a + " " + b for a, b in itertools.pairwise(words)]:
            h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=8).digest(), "little")
            vec[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]


def default_embedder() -> Embedder:
    return HashingEmbedder()
