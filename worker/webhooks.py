"""Webhook delivery: every worker runs this loop beside its tasks.

The outbox rows are written by a trigger in the same transaction as their event (migration
120), so the event log's hot path gains no round trip and a delivery exists exactly when its
event is durable. Here each worker claims due rows (``FOR UPDATE SKIP LOCKED``, with a lease),
posts them outside any transaction, concurrently, with a per-attempt timeout, and records the
outcome. A slow or dead receiver costs this loop's slots only: tasks never wait on it.
"""

import asyncio
import logging
import random
import time

import asyncpg
import httpx

from taskstream.core import metrics, store_ops
from taskstream.core import webhooks as wh
from taskstream.core.db import TRANSIENT_DB_ERRORS
from taskstream.core.settings import Settings

log = logging.getLogger(__name__)

#: A claim outlives the attempt's timeout by this much before another worker may retry it.
LEASE_MARGIN = 30.0


class Deliverer:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._allow = wh.allowed_hosts(settings.webhook_allow_hosts)
        self._client = httpx.AsyncClient(
            timeout=settings.webhook_timeout, follow_redirects=False, trust_env=False,
            headers={"User-Agent": "Taskstream-Webhooks/1"})

    async def close(self) -> None:
        await self._client.aclose()

    async def run_once(self) -> int:
        """Claim and send one round of due deliveries; returns how many were claimed."""
        s = self._settings
        claimed = await store_ops.claim_deliveries(self._pool, s.webhook_concurrency,
                                                   s.webhook_timeout + LEASE_MARGIN)
        if claimed:
            await asyncio.gather(*(self._deliver(d) for d in claimed))
        return len(claimed)

    async def _deliver(self, d: store_ops.Delivery) -> None:
        s = self._settings
        code: int | None = None
        error: str | None = None
        t0 = time.monotonic()
        if d.event is None:
            error = "its task was deleted before delivery"
        else:
            payload = wh.body(d.delivery_id, d.webhook_id, d.task_type, d.event)
            try:
                await wh.check_url(d.url, self._allow)
                resp = await self._client.post(
                    d.url, content=payload,
                    headers=wh.headers(d.delivery_id, d.event_type, d.secret, payload))
                code = resp.status_code
                if not 200 <= code < 300:
                    error = f"HTTP {code}" + (" (redirects are not followed)"
                                              if 300 <= code < 400 else "")
            except wh.UnsafeURL as exc:
                error = str(exc)
            except httpx.TimeoutException:
                error = f"timed out after {s.webhook_timeout:g}s"
            except httpx.HTTPError as exc:  # refused, reset, TLS: never the secret or headers
                error = f"{type(exc).__name__}: {exc}"[:500]
        ms = (time.monotonic() - t0) * 1000
        delivered = error is None
        retry_in = None
        if not delivered and d.event is not None and d.attempts < s.webhook_max_attempts:
            retry_in = wh.retry_delay(d.attempts, s.webhook_backoff, s.webhook_backoff_max,
                                      random.random())  # noqa: S311 - jitter
        outcome = "delivered" if delivered else ("retried" if retry_in is not None else "failed")
        metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
        if not delivered:
            log.info("webhook delivery %d attempt %d: %s (%s)", d.delivery_id, d.attempts,
                     error, outcome)
        await store_ops.record_attempt(self._pool, d.delivery_id, delivered=delivered,
                                       code=code, error=error, ms=ms, retry_in=retry_in)


async def run_forever(pool: asyncpg.Pool, settings: Settings) -> None:
    """Deliver while there is work; otherwise wait until the next due delivery, at most
    ``webhook_poll_interval`` (a new delivery is due at once). Failures are logged and
    retried on the next tick."""
    deliverer = Deliverer(pool, settings)
    try:
        while True:
            try:
                if await deliverer.run_once() >= settings.webhook_concurrency:
                    continue  # more may be due
                wait = await store_ops.seconds_to_next_delivery(pool)
            except asyncio.CancelledError:
                raise
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("webhook delivery: database unavailable (%s)", exc)
                wait = None
            except Exception:
                log.exception("webhook delivery round failed")
                wait = None
            poll = settings.webhook_poll_interval
            await asyncio.sleep(poll if wait is None else min(max(wait, 0.01), poll))
    finally:
        await deliverer.close()
