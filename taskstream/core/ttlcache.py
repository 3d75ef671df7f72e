"""A per-process cache whose entries are trusted for ``ttl`` seconds, bounded by clearing it
whole when it grows past ``max_entries`` (a flood of distinct keys costs a refill, not memory)."""

import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[K, tuple[V, float]] = {}

    def get(self, key: K) -> V | None:
        hit = self._entries.get(key)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, key: K, value: V) -> None:
        if len(self._entries) > self.max_entries:
            self._entries.clear()
        self._entries[key] = (value, time.monotonic() + self.ttl)

    def replace(self, key: K, value: V) -> None:
        """A new value for a cached key, keeping its expiry; nothing if it is not cached."""
        hit = self._entries.get(key)
        if hit is not None:
            self._entries[key] = (value, hit[1])
