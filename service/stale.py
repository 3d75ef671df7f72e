"""Streams that wait for an event nobody will publish catch up from PostgreSQL.

An event is committed, then published. A worker that dies between the two (SIGKILL, the
machine gone) leaves an event in PostgreSQL that no stream hears of; a later event of the
same task shows the gap and the stream fills it, but a task's last event has no later one,
and its streams would wait until their clients reconnect (seen in the chaos run). So every
``stream_check_interval`` seconds each web process reads, in one query per kind, the last
position of every task and tenant its idle streams follow, and a stream still behind the
position read at the check before gets ``RESYNC``: it reads what it missed from PostgreSQL.
Two checks, because an event is committed a moment before it is published: a stream behind
once is usually about to hear of it.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import asyncpg

from service.hub import RESYNC, Hub, Subscription
from service.periodic import Periodic
from taskstream.core import store
from taskstream.core.db import TRANSIENT_DB_ERRORS

log = logging.getLogger(__name__)

TASK_SOURCE: Final = "task"
TENANT_SOURCE: Final = "tenant"
#: Per kind of stream: the last position of each thing followed, in one query.
_HEADS: Final[dict[str, Callable[[asyncpg.Pool, list[str]], Awaitable[dict[str, int]]]]] = {
    TASK_SOURCE: store.task_heads, TENANT_SOURCE: store.tenant_heads}


class StaleStreams(Periodic):
    def __init__(self, hub: Hub, pool: asyncpg.Pool, interval: float) -> None:
        super().__init__("stale-streams", interval)
        self._hub = hub
        self._pool = pool
        self._behind: dict[Subscription, int] = {}  # at the last check: the head it lacked
        self.resynced = 0

    async def tick(self) -> None:
        try:
            await self.check()
        except TRANSIENT_DB_ERRORS as exc:
            log.info("stream check skipped: %s", exc)

    async def check(self) -> int:
        """One check; the number of streams told to catch up."""
        idle: list[tuple[Subscription, str, str]] = []
        keys: dict[str, set[str]] = {kind: set() for kind in _HEADS}
        for s in self._hub.subscriptions():
            if s.source is not None and not len(s) and not s.overflowed:
                kind, key = s.source
                idle.append((s, kind, key))
                keys[kind].add(key)
        heads = {kind: await _HEADS[kind](self._pool, list(k)) if k else {}
                 for kind, k in keys.items()}
        behind: dict[Subscription, int] = {}
        nudged = 0
        for sub, kind, key in idle:
            head = heads[kind].get(key, 0)
            if head <= sub.position:
                continue
            before = self._behind.get(sub)
            if before is not None and sub.position < before:
                sub.push(RESYNC)  # behind what it lacked a whole interval ago
                nudged += 1
            else:
                behind[sub] = head
        self._behind = behind  # only streams still open and behind
        self.resynced += nudged
        if nudged:
            log.info("%d streams caught up from PostgreSQL (events never published)", nudged)
        return nudged
