"""Retention: every worker prunes, once per ``retention_interval`` (with jitter), finished
tasks (their events, steps and chunks by cascade), uploads and finished webhook deliveries
older than their tenant's ``retention_days`` or the deployment's ``TASKSTREAM_RETENTION_DAYS``.

Each statement deletes at most ``retention_batch`` rows, claimed ``FOR UPDATE SKIP LOCKED``,
in its own short transaction: no long locks, and workers pruning at the same time take
different rows instead of waiting for each other (no leader needed, nothing session-bound,
so it works behind PgBouncer in transaction mode).
"""

import asyncio
import logging
import random

import asyncpg

from taskstream.core import metrics, store_ops
from taskstream.core.db import TRANSIENT_DB_ERRORS
from taskstream.core.settings import Settings

log = logging.getLogger(__name__)

#: Batches per kind in one pass, so one pass ends; the next pass continues.
MAX_BATCHES = 50


async def prune_once(pool: asyncpg.Pool, settings: Settings) -> dict[str, int]:
    """One pass: batches until nothing is left (or MAX_BATCHES per kind)."""
    pruned: dict[str, int] = {}
    if not settings.retention_days and not await store_ops.any_tenant_retention(pool):
        return pruned  # kept forever: not even a scan
    for what, prune in (("tasks", store_ops.prune_tasks),
                        ("uploads", store_ops.prune_uploads),
                        ("webhook_deliveries", store_ops.prune_deliveries)):
        total = 0
        for _ in range(MAX_BATCHES):
            n = await prune(pool, settings.retention_days, settings.retention_batch)
            total += n
            if n < settings.retention_batch:
                break
            await asyncio.sleep(0)  # let the worker's tasks run between batches
        if total:
            metrics.PRUNED.labels(what).inc(total)
        pruned[what] = total
    if any(pruned.values()):
        log.info("retention: pruned %s", pruned)
    return pruned


async def run_forever(pool: asyncpg.Pool, settings: Settings) -> None:
    while True:
        # Jitter spreads the workers' passes out; SKIP LOCKED keeps overlapping ones apart.
        await asyncio.sleep(settings.retention_interval * (0.5 + random.random()))  # noqa: S311
        try:
            await prune_once(pool, settings)
        except asyncio.CancelledError:
            raise
        except TRANSIENT_DB_ERRORS as exc:
            log.warning("retention pass skipped: database unavailable (%s)", exc)
        except Exception:
            log.exception("retention pass failed")
