"""The arq boundary: the one module that knows arq's internals.

arq 0.28 is in maintenance-only mode, and we go past its public API for speed: enqueue and
claim are Lua scripts on arq's key layout (one round trip for many jobs instead of three or
four per job; the claim also reads each job's record and counts its try, as arq's
``run_job`` would in a round trip of its own), and the worker's per-job bookkeeping is
batched by overriding four of its methods (our one job kind runs in ``_run_claimed``, arq's
``run_job`` for what the claim read; anything else still goes to arq's). Everything that
depends on that — key prefixes, the job record, the in-progress marker's lifetime, the try
counter, the overridden methods — is here, and ``tests/test_queue_contract.py`` pins it, so
an arq upgrade fails loudly in one place.

The surface: ``connect``, ``job_id``, ``Job``, ``enqueue``, ``job_known``, ``held_for`` and
``build_worker`` (whose worker claims and finishes jobs in batches). Jobs carry only a task
id and are msgpack, never pickle (arq's default would execute a crafted job).

Priorities ride on arq's score: a worker polls due jobs in score order, so a job that is due
now goes in with its due time minus an offset per priority (high sorts before every normal
job queued in the last hour, normal before every low one). A deferred job (a retry's backoff,
a delayed run) cannot carry its offset yet — it would look due early — so it goes in at its
due time and is also listed, by that time, in a "promote" sorted set; every claim first moves
the jobs that fell due there back by their offsets (kept in an "offsets" hash), whether or
not the poll's read window reached them, so the next poll takes them in priority order.
"""

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgpack
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import (
    abort_jobs_ss,
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import SerializationError, deserialize_job_raw, serialize_job
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.utils import ms_to_datetime, timestamp_ms, to_ms
from arq.worker import Function, Retry, RetryJob, Worker, func
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from taskstream.core.batcher import Batcher
from taskstream.core.constants import RUN_TASK_FUNCTION, queue_name
from taskstream.core.redisconn import tls_options
from taskstream.core.settings import Settings
from taskstream.declaration import Priority

log = logging.getLogger(__name__)
arq_log = logging.getLogger("arq.worker")  # our run of arq's jobs logs where arq's would

#: Raise ``RunAgainLater(defer=seconds)`` from a job to have arq run it again later.
RunAgainLater: Final = Retry

#: arq keeps a job's in-progress marker this long past its job timeout.
IN_PROGRESS_MARGIN_S: Final = 10

#: arq's lifetime of a job's try counter (``run_job``: ``expire(retry_key, 88400)``).
_RETRY_KEY_TTL_S: Final = 88400

#: How far before its due time a job of each priority is scored (see the module docstring).
PRIORITY_OFFSET_MS: Final[Mapping[Priority, int]] = {
    Priority.HIGH: 2 * 3_600_000, Priority.NORMAL: 3_600_000, Priority.LOW: 0,
}


def offsets_key(queue: str) -> str:
    """Hash: job id -> its priority offset in ms, for the queued jobs that have one."""
    return queue + ":offsets"


def promote_key(queue: str) -> str:
    """Sorted set: the deferred jobs whose score still lacks their offset, by due time."""
    return queue + ":promote"


@dataclass(frozen=True, slots=True)
class Job:
    """What goes on the queue for a pending task: its job id's parts, its priority and the
    time it may start at (epoch seconds; None: now)."""

    task_id: str
    seq: int
    priority: Priority = Priority.NORMAL
    run_at: float | None = None

    @classmethod
    def of(cls, task_id: str, seq: int, options: Mapping[str, Any] | None) -> "Job":
        """From a task's stored options (``priority``, ``run_at`` as ISO text)."""
        opts = options or {}
        run_at = opts.get("run_at")
        return cls(task_id, seq, Priority(opts.get("priority") or Priority.NORMAL),
                   datetime.fromisoformat(run_at).timestamp() if run_at else None)


# --- the job record ------------------------------------------------------------------------

def serialize(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, datetime=True, default=_as_text)  # type: ignore[no-any-return]


def deserialize(raw: bytes) -> dict[str, Any]:
    return msgpack.unpackb(raw, timestamp=3, strict_map_key=False)  # type: ignore[no-any-return]


def _as_text(obj: object) -> object:
    # arq puts only primitives in a job; anything else (an exception it tries to keep as a
    # result) is stored as its text rather than failing the worker.
    return repr(obj)


def job_id(task_id: str, seq: int, rescue: int = 0) -> str:
    """A task's job id: its id and the seq of the event that made it pending.

    While a task is pending nothing else is appended to it, so every process that wants to
    (re-)enqueue the same pending state computes the same id, and arq refuses the duplicate.
    A retry, a re-queue or a re-drive is a new state and so a new job. ``rescue`` n > 0: the
    n-th extra job for the same pending state, when the workers that took the earlier ones
    died before claiming the task.
    """
    return f"{task_id}:{seq}" + (f":r{rescue}" if rescue else "")


# --- connecting ----------------------------------------------------------------------------

def redis_settings(settings: Settings) -> RedisSettings:
    rs = RedisSettings.from_dsn(settings.redis_url)
    for name, value in tls_options(settings).items():
        setattr(rs, name, value)
    rs.conn_timeout = 2
    rs.conn_retries = 3
    return rs


async def connect(settings: Settings) -> ArqRedis:
    return await create_pool(
        redis_settings(settings),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=queue_name(settings.namespace),
    )


def job_timeout(settings: Settings) -> float:
    """arq's own timeout for a run: ours (the runtime's) plus a margin. It only bounds how long
    arq's in-progress marker lives (this + ``IN_PROGRESS_MARGIN_S``)."""
    return settings.worker_job_timeout + 60


# --- enqueue -------------------------------------------------------------------------------

#: arq's enqueue (WATCH, EXISTS, MULTI, PSETEX, ZADD: three round trips) as one atomic
#: script, so that many jobs go in one pipelined round trip. KEYS: job key, result key,
#: queue, offsets hash, promote set; ARGV: expiry ms, serialized job, score, job id, its
#: offset ms, 1 if the offset is still to apply (the score is the due time).
_ENQUEUE_LUA = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
if tonumber(ARGV[5]) > 0 then
    redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
    if ARGV[6] == '1' then redis.call('ZADD', KEYS[5], ARGV[3], ARGV[4]) end
end
return 1
"""


#: The same for many jobs in ONE script call (a batch's children): redis-py packs one
#: command instead of one per job, (measured on
#: POST /batches of 1,000). ARGV: job key prefix, result key prefix, then the six ARGV of
#: ``_ENQUEUE_LUA`` per job; KEYS: queue, offsets hash, promote set. Returns how many were
#: new.
_ENQUEUE_MANY_LUA = """
local n = 0
for i = 3, #ARGV, 6 do
    local jid = ARGV[i + 3]
    if redis.call('EXISTS', ARGV[1] .. jid, ARGV[2] .. jid) == 0 then
        redis.call('PSETEX', ARGV[1] .. jid, ARGV[i], ARGV[i + 1])
        redis.call('ZADD', KEYS[1], ARGV[i + 2], jid)
        if tonumber(ARGV[i + 4]) > 0 then
            redis.call('HSET', KEYS[2], jid, ARGV[i + 4])
            if ARGV[i + 5] == '1' then redis.call('ZADD', KEYS[3], ARGV[i + 2], jid) end
        end
        n = n + 1
    end
end
return n
"""
#: From this many jobs on, one script call per ``_MANY_CHUNK`` jobs: also the few of one
#: group commit of POST /tasks (redis-py's packing of one command per job cost the web
#: process more than the script's work).
_MANY_FROM = 2
_MANY_CHUNK = 500


async def enqueue(arq: ArqRedis, settings: Settings, jobs: Sequence[Job | tuple[str, int]],
                  *, defer_by: float | None = None, rescue: int = 0) -> int:
    """Enqueue jobs exactly as arq's ``enqueue_job`` would (same job record and expiry), all
    in one round trip; returns how many were new. A job is due at the later of now +
    ``defer_by`` and its ``run_at``; its score is that minus its priority's offset (or its
    due time, with the offset left to the claim, when it is not due yet)."""
    if not jobs:
        return 0
    script = arq.register_script(_ENQUEUE_LUA)
    queue = queue_name(settings.namespace)
    keys = [queue, offsets_key(queue), promote_key(queue)]
    now = timestamp_ms()
    defer_ms = int(defer_by * 1000) if defer_by else 0
    rows: list[tuple[str, list[Any]]] = []
    for item in jobs:
        job = item if isinstance(item, Job) else Job(*item)
        jid = job_id(job.task_id, job.seq, rescue)
        due = max(now + defer_ms, int(job.run_at * 1000) if job.run_at else 0)
        offset = PRIORITY_OFFSET_MS[job.priority]
        later = due > now
        body = serialize_job(RUN_TASK_FUNCTION, (job.task_id,), {}, None, now,
                             serializer=serialize)
        rows.append((jid, [due - now + expires_extra_ms, body,
                           due if later else due - offset, jid, offset, int(later)]))
    if len(rows) >= _MANY_FROM:
        many = arq.register_script(_ENQUEUE_MANY_LUA)
        new = 0
        for i in range(0, len(rows), _MANY_CHUNK):
            args: list[Any] = [job_key_prefix, result_key_prefix]
            for _, a in rows[i:i + _MANY_CHUNK]:
                args += a
            new += int(await many(keys=keys, args=args))
        return new
    async with arq.pipeline(transaction=False) as pipe:
        for jid, a in rows:
            await script(keys=[job_key_prefix + jid, result_key_prefix + jid, *keys],
                         args=a, client=pipe)
        results = await pipe.execute()
    return sum(1 for r in results if r == 1)


async def job_known(arq: ArqRedis, jid: str) -> bool:
    """Whether arq still has this job queued, deferred or running."""
    return bool(await arq.exists(job_key_prefix + jid, in_progress_key_prefix + jid))


async def held_for(arq: ArqRedis, settings: Settings, jid: str) -> float | None:
    """Seconds since a worker took this job, from arq's in-progress marker; None if no
    worker holds it."""
    ttl_ms = await arq.pttl(in_progress_key_prefix + jid)
    if ttl_ms is None or ttl_ms <= 0:
        return None
    return float(job_timeout(settings) + IN_PROGRESS_MARGIN_S - ttl_ms / 1000)


# --- claim and finish ----------------------------------------------------------------------

#: arq's job claim (per job: WATCH, EXISTS, ZSCORE, MULTI/PSETEX/EXEC — four round trips,
#: one job after another) as one atomic script for every job id a poll found: a job is
#: taken when no worker holds it and it is due; at most ARGV[3] are taken. First, deferred
#: jobs that fell due get their priority offsets (see the module docstring). With ARGV[4]
#: '1' it also does, for each job taken, what arq's ``run_job`` opens with (GET the record,
#: INCR the try count, EXPIRE it) — a round trip per job the worker no longer makes. KEYS:
#: queue, offsets hash, promote set; ARGV: now ms, in-progress marker ttl ms, limit, read,
#: then the job ids. Returns id, score (and with read: record or '', try) per job taken,
#: then how many of the ids it looked at (the rest are left for a later call).
_CLAIM_LUA = """
local out = {}
local limit = tonumber(ARGV[3])
local now = tonumber(ARGV[1])
local read = ARGV[4] == '1'
local width = read and 4 or 2
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', KEYS[3], id)
    local offset = redis.call('HGET', KEYS[2], id)
    if offset and redis.call('ZSCORE', KEYS[1], id) then
        redis.call('ZINCRBY', KEYS[1], -tonumber(offset), id)
    end
end
local used = 0
for i = 5, #ARGV do
    if #out >= width * limit then break end
    used = i - 4
    local id = ARGV[i]
    local marker = '""" + in_progress_key_prefix + """' .. id
    if redis.call('EXISTS', marker) == 0 then
        local score = redis.call('ZSCORE', KEYS[1], id)
        if score and tonumber(score) <= now then
            redis.call('PSETEX', marker, ARGV[2], '1')
            out[#out + 1] = id
            out[#out + 1] = score
            if read then
                local retry = '""" + retry_key_prefix + """' .. id
                out[#out + 1] = redis.call('GET', '""" + job_key_prefix + """' .. id) or ''
                out[#out + 1] = redis.call('INCR', retry)
                redis.call('EXPIRE', retry, """ + str(_RETRY_KEY_TTL_S) + """)
            end
        end
    end
end
out[#out + 1] = used
return out
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job this worker took; with ``read``, its record (None: gone) and try number."""

    job_id: str
    score: int
    record: bytes | None = None
    job_try: int = 0


async def claim(redis: ArqRedis, queue: str, job_ids: Sequence[bytes | str], limit: int,
                in_progress_ms: int) -> list[tuple[str, int]]:
    """Take up to ``limit`` of these jobs for this worker, as arq's ``start_jobs`` would,
    in one round trip; returns (job id, score) of those taken. Runs with no ids too: the
    promotion of deferred jobs must not wait for the poll to reach them."""
    if limit <= 0:
        return []
    taken, _ = await claim_from(redis, queue, job_ids, limit, in_progress_ms)
    return [(c.job_id, c.score) for c in taken]


async def claim_from(redis: ArqRedis, queue: str, job_ids: Sequence[bytes | str], limit: int,
                     in_progress_ms: int, *, read: bool = False) -> tuple[list[Claimed], int]:
    """``claim`` (with ``read``: and each job's record and try, counted as arq's
    ``run_job`` counts it), and how many of ``job_ids`` it looked at: it stops at ``limit``
    taken, and ``job_ids[n:]`` are still to try."""
    script = redis.register_script(_CLAIM_LUA)
    raw = await script(keys=[queue, offsets_key(queue), promote_key(queue)],
                       args=[timestamp_ms(), in_progress_ms, limit, int(read), *job_ids])
    used = int(raw.pop())
    taken: list[Claimed] = []
    step = 4 if read else 2
    for i in range(0, len(raw), step):
        jid = raw[i].decode() if isinstance(raw[i], bytes) else str(raw[i])
        score = int(float(raw[i + 1]))
        if read:
            taken.append(Claimed(jid, score, raw[i + 2] or None, int(raw[i + 3])))
        else:
            taken.append(Claimed(jid, score))
    return taken, used


#: arq's re-deferral of a job (its ``Retry``: ZINCRBY to now + defer, as arq computes the
#: increment from the claimed score), and the job's priority offset owed again once due.
#: KEYS: queue, offsets hash, promote set; ARGV: increment ms, job id.
_REDEFER_LUA = """
local due = redis.call('ZINCRBY', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
    redis.call('ZADD', KEYS[3], due, ARGV[2])
end
"""


#: Pages of ``queue_read_limit`` due jobs one poll reads at most, past jobs held elsewhere.
MAX_POLL_PAGES = 8


class _Finisher(Batcher[Callable[[Pipeline], None], None]):
    """arq's per-job end-of-run transaction, for every job that ends meanwhile in one."""

    def __init__(self, redis: ArqRedis) -> None:
        super().__init__("arq-finish", 500)
        self._redis = redis

    def finish(self, add: Callable[[Pipeline], None]) -> "asyncio.Future[None]":
        """Queued at once; the future resolves when its transaction has run."""
        return self._enqueue(add)

    async def _commit(self, items: list[Callable[[Pipeline], None]]) -> list[None]:
        async with self._redis.pipeline(transaction=True) as tr:
            for add in items:
                add(tr)
            await tr.execute()
        return [None] * len(items)


class BatchingWorker(Worker):
    """arq's worker, except that Redis going away does not kill it (polling pauses and
    running tasks keep going: they write to PostgreSQL, not Redis), and that its per-job
    Redis bookkeeping is batched: a poll claims the jobs it can take in one round trip (and
    another each time running jobs free slots meanwhile), and jobs that end together are
    finished in one transaction."""

    _finisher: _Finisher | None = None

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            log.warning("queue poll failed (%s); retrying", exc)
            await asyncio.sleep(1.0)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs with the same checks and markers (``claim``), batched.

        Like arq's, it goes on through the ids a poll read as slots free up (arq waits on
        its semaphore per job): taking only the free slots once per poll capped a worker at
        max_jobs per poll delay (~900 short jobs/s at 50 and 50 ms). Unlike arq's, it waits
        at most one poll delay for a slot, so long jobs never stall the poll loop."""
        ids: Sequence[bytes | str] = job_ids
        first = True
        read, pages = len(job_ids), 1  # queue positions read so far, in pages
        while first or ids:
            free = self.max_jobs - self.job_counter
            if free <= 0:
                if not ids or not await self._slot_freed(self.poll_delay_s):
                    return
                continue
            claimed, used = await claim_from(self.pool, self.queue_name, ids, free,
                                             int(self.in_progress_timeout_s * 1000),
                                             read=True)
            ids, first = ids[used:], False
            for c in claimed:
                await self.sem.acquire()  # free: at most max_jobs - job_counter were claimed
                self.job_counter += 1
                t = self.loop.create_task(self._run_claimed(c))
                t.add_done_callback(self._job_done)
                self.tasks[c.job_id] = t
            if (not ids and read == pages * self.queue_read_limit and pages < MAX_POLL_PAGES
                    and self.job_counter < self.max_jobs):
                # A full page, and slots still free: the page's jobs are held by other
                # workers. Jobs held by a worker that died keep arq's marker for the job
                # timeout, and a page of them read again at every poll would starve every
                # job behind it (the sweeper's rescues included): read on.
                ids = await self.pool.zrangebyscore(
                    self.queue_name, min=float("-inf"), max=timestamp_ms(),
                    start=self._queue_read_offset + read, num=self.queue_read_limit)
                read, pages = read + len(ids), pages + 1

    _slot: asyncio.Event | None = None

    async def _run_claimed(self, c: Claimed) -> None:
        """arq's ``run_job`` for our one job kind, from what the claim read (arq's would
        read it again in a transaction of its own). Anything else — a record gone or
        unreadable, another function, a try past the limit, hooks or aborts configured —
        goes to arq's own ``run_job``, which counts that try a second time."""
        function = self.functions.get(RUN_TASK_FUNCTION)
        try:
            name, args, kwargs, enqueue_try, enqueue_ms = deserialize_job_raw(
                c.record or b"", deserializer=self.job_deserializer)
        except SerializationError:
            name = ""
        max_tries = self.max_tries if function is None or function.max_tries is None \
            else function.max_tries
        if (c.record is None or name != RUN_TASK_FUNCTION or not isinstance(function, Function)
                or (enqueue_try and enqueue_try > c.job_try) or c.job_try > max_tries
                or self.on_job_start or self.on_job_end or self.after_job_end
                or self.allow_abort_jobs or self.keep_result_forever or self.keep_result_s
                or function.keep_result_s is not None
                or function.keep_result_forever is not None):
            await self.run_job(c.job_id, c.score)
            return
        ctx = {**self.ctx, "job_id": c.job_id, "job_try": c.job_try,
               "enqueue_time": ms_to_datetime(enqueue_ms), "score": c.score}
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        finish, incr_score = False, None
        ref = f"{c.job_id}:{name}"
        start_ms = timestamp_ms()
        try:
            # In this task, not one of its own as arq's (which it keeps only to abort it,
            # and aborts are off here): one task fewer per job. The same outcomes: a
            # timeout raises TimeoutError, a shutdown's cancellation CancelledError.
            async with asyncio.timeout(timeout_s):
                await function.coroutine(ctx, *args, **kwargs)
        except (Exception, asyncio.CancelledError) as e:  # as arq's run_job sorts them
            if self.retry_jobs and isinstance(e, Retry):
                incr_score = e.defer_score + (timestamp_ms() - c.score) if e.defer_score else None
                self.jobs_retried += 1
            elif self.retry_jobs and isinstance(e, asyncio.CancelledError | RetryJob):
                arq_log.info("%s cancelled, will be run again", ref)
                self.jobs_retried += 1
            else:
                arq_log.exception("%s failed, %s: %s", ref, e.__class__.__name__, e)
                finish = True
                self.jobs_failed += 1
        else:
            finish = True
            self.jobs_complete += 1
            arq_log.debug("%6.2fs ← %s", (timestamp_ms() - start_ms) / 1000, ref)
        await asyncio.shield(self._queue_finish(c.job_id, finish, None, self.keep_result_s,
                                                False, incr_score, None))

    def _job_done(self, _: "asyncio.Task[None]") -> None:
        self._release_sem_dec_counter_on_complete()
        if self._slot is not None:
            self._slot.set()

    async def _slot_freed(self, within: float) -> bool:
        """Wait up to ``within`` seconds for a running job to end; whether one did. Then one
        loop turn more, so that jobs ending together are claimed for in one call."""
        if self._slot is None:
            self._slot = asyncio.Event()
        self._slot.clear()
        try:
            await asyncio.wait_for(self._slot.wait(), within)
        except TimeoutError:
            return False
        await asyncio.sleep(0)
        return True

    async def finish_job(self, job_id: str, finish: bool, result_data: bytes | None,
                         result_timeout_s: float | None, keep_result_forever: bool,
                         incr_score: int | None, keep_in_progress: float | None) -> None:
        """arq's finish_job, the same commands, queued into a shared transaction."""
        await self._queue_finish(job_id, finish, result_data, result_timeout_s,
                                 keep_result_forever, incr_score, keep_in_progress)

    def _queue_finish(self, job_id: str, finish: bool, result_data: bytes | None,
                      result_timeout_s: float | None, keep_result_forever: bool,
                      incr_score: int | None, keep_in_progress: float | None
                      ) -> "asyncio.Future[None]":
        """``finish_job``'s commands, queued now (they run whether or not the caller is
        cancelled meanwhile); the future resolves once they have."""

        def add(tr: Pipeline) -> None:
            delete_keys = []
            in_progress_key = in_progress_key_prefix + job_id
            if keep_in_progress is None:
                delete_keys.append(in_progress_key)
            else:
                tr.pexpire(in_progress_key, to_ms(keep_in_progress) or 0)
            if finish:
                if result_data:
                    expire = None if keep_result_forever else result_timeout_s
                    tr.set(result_key_prefix + job_id, result_data, px=to_ms(expire))
                delete_keys += [retry_key_prefix + job_id, job_key_prefix + job_id]
                tr.zrem(abort_jobs_ss, job_id)
                tr.zrem(self.queue_name, job_id)
                tr.hdel(offsets_key(self.queue_name), job_id)
                tr.zrem(promote_key(self.queue_name), job_id)
            elif incr_score:
                tr.eval(_REDEFER_LUA, 3, self.queue_name, offsets_key(self.queue_name),
                        promote_key(self.queue_name), str(incr_score), job_id)
            if delete_keys:
                tr.delete(*delete_keys)

        if self._finisher is None:
            self._finisher = _Finisher(self.pool)
            self._finisher.start()
        return self._finisher.finish(add)

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        """arq's end of a job it could not run (expired, unreadable, out of tries), and the
        job's priority offset forgotten with it."""
        await super().finish_failed_job(job_id, result_data)
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.hdel(offsets_key(self.queue_name), job_id)
            pipe.zrem(promote_key(self.queue_name), job_id)
            await pipe.execute()

    async def close(self) -> None:
        await super().close()
        if self._finisher is not None:
            await self._finisher.close()


def build_worker(settings: Settings, run_task: WorkerCoroutine, *,
                 on_startup: StartupShutdown, on_shutdown: StartupShutdown,
                 burst: bool = False) -> BatchingWorker:
    """The worker process's arq worker: one job function (the runtime's), our serializer,
    queue and timings. SIGTERM: stop taking jobs, give running ones ``shutdown_grace``
    seconds, then arq re-queues the rest."""
    return BatchingWorker(
        functions=[func(run_task, name=RUN_TASK_FUNCTION, max_tries=1_000_000)],
        queue_name=queue_name(settings.namespace),
        redis_settings=redis_settings(settings),
        job_serializer=serialize,
        job_deserializer=deserialize,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        max_jobs=settings.worker_max_jobs,
        poll_delay=settings.worker_poll_delay,
        health_check_interval=settings.worker_health_check_interval,
        job_timeout=job_timeout(settings),
        keep_result=0,
        burst=burst,
        handle_signals=not burst,
        job_completion_wait=settings.shutdown_grace,
    )
