"""When to try again, and how long to wait: exponential backoff with full jitter, where a
``Retry-After`` from the service (429, 503) takes precedence over the computed delay."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry and reconnection settings.

    - ``attempts``: tries per ordinary request (1 = never retry). Only failures known to be
      safe are retried: a refused connection, a 429 or 503 (the request was not processed),
      and for idempotent requests also a dropped connection or a proxy's 502/504.
    - ``backoff`` / ``max_backoff``: the delay before try *n* is uniform in
      ``[0, min(max_backoff, backoff * 2**n)]`` (full jitter), unless ``Retry-After`` said more.
    - ``max_retry_after``: a ``Retry-After`` longer than this is not waited out; the error is
      raised so the caller can decide.
    - ``reconnect_window``: an event stream keeps reconnecting for this many seconds without
      receiving anything before it gives up (``None``: forever).
    """

    attempts: int = 4
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    reconnect_window: float | None = 300.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to sleep after ``failures`` consecutive failures (>= 1)."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** max(0, failures - 1))
        if retry_after is not None:
            # At least what the service asked for, spread a little so clients don't stampede.
            ceiling = min(ceiling, 1.0) / 4
            return retry_after + random.uniform(0, ceiling)  # noqa: S311 - jitter, not crypto
        return random.uniform(0, ceiling)  # noqa: S311

    def waits_out(self, retry_after: float | None) -> bool:
        return retry_after is None or retry_after <= self.max_retry_after


DEFAULT_POLICY = RetryPolicy()
