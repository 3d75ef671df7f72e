"""At submission: do the running workers know this task type, in this version?

The web process declares the types it accepts (the same task modules the workers load), but
a deployment can still disagree with itself — a worker started without a module, or an old
worker next to a new web process. Checked against the types live workers announce
(``worker_types``, refreshed at most every ``ttl`` seconds per process):

* no live worker at all (workers scaled to zero, or not started yet): accepted; the task
  waits, and fails with ``unknown_task_type`` if the workers that come do not know it;
* live workers, none of which loads the type: 422, naming what they do load;
* live workers load it, but none with this parameter schema: 422 (deploy them together).
"""

import time

import asyncpg

from service.errors import Unprocessable
from taskstream.core import store


class WorkerTypes:
    def __init__(self, pool: asyncpg.Pool, lease_seconds: float, ttl: float = 2.0) -> None:
        self._pool = pool
        self._within = lease_seconds  # a worker whose heartbeat is this old is gone
        self._ttl = ttl
        self._read_at = float("-inf")
        self._workers = 0
        self._types: dict[str, set[str]] = {}

    async def check(self, task_type: str, schema_hash: str) -> None:
        now = time.monotonic()
        if now - self._read_at > self._ttl:
            self._workers, self._types = await store.live_worker_types(self._pool, self._within)
            self._read_at = now
        if not self._workers:
            return
        hashes = self._types.get(task_type)
        if hashes is None:
            loaded = ", ".join(sorted(self._types)) or "nothing"
            raise Unprocessable(
                f"no running worker knows task type {task_type!r} (they load: {loaded}); "
                "start workers with its module in TASKSTREAM_TASKS")
        if schema_hash not in hashes:
            raise Unprocessable(
                f"the running workers have another version of {task_type!r}'s parameters "
                "than this web process; deploy web and workers from the same code")
