"""Connecting to the arq queue from either process, with our serializer and queue name."""

from collections.abc import Sequence
from urllib.parse import urlsplit

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import (
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
)
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

from core.constants import RUN_TASK_FUNCTION, queue_name
from core.serialization import deserialize, serialize
from core.settings import Settings


def redis_settings(settings: Settings) -> RedisSettings:
    rs = RedisSettings.from_dsn(settings.redis_url)
    if urlsplit(settings.redis_url).scheme == "rediss" and not settings.redis_tls_verify:
        rs.ssl_cert_reqs = "none"
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


def job_id(task_id: str, seq: int, rescue: int = 0) -> str:
    """A task's job id: its id and the seq of the event that made it pending.

    While a task is pending nothing else is appended to it, so every process that wants to
    (re-)enqueue the same pending state computes the same id, and arq refuses the duplicate.
    A retry, a re-queue or a re-drive is a new state and so a new job.
    """
    return f"{task_id}:{seq}" + (f":r{rescue}" if rescue else "")


async def enqueue_task(arq: ArqRedis, settings: Settings, task_id: str, seq: int,
                       defer_by: float | None = None, rescue: int = 0) -> bool:
    """Put a task on the queue; the job carries only the task id. False if already queued.
    ``rescue`` n > 0: the n-th extra job for the same pending state, when the workers that
    took the earlier ones died before claiming the task."""
    return await enqueue_many(arq, settings, [(task_id, seq)], defer_by=defer_by,
                              rescue=rescue) == 1


def arq_job_timeout(settings: Settings) -> float:
    """arq's own timeout for a run: ours (the runtime's) plus a margin; it only bounds how long
    arq's in-progress marker lives (this + 10 s)."""
    return settings.worker_job_timeout + 60


async def in_progress_for(arq: ArqRedis, settings: Settings, jid: str) -> float | None:
    """Seconds since a worker took this job, from arq's in-progress marker; None if no
    worker holds it."""
    ttl_ms = await arq.pttl(in_progress_key_prefix + jid)
    if ttl_ms is None or ttl_ms <= 0:
        return None
    return float(arq_job_timeout(settings) + 10 - ttl_ms / 1000)


#: arq's enqueue (WATCH, EXISTS, MULTI, PSETEX, ZADD: three round trips) as one atomic
#: script, so that many jobs go in one pipelined round trip. KEYS: job key, result key,
#: queue; ARGV: expiry ms, serialized job, score, job id.
_ENQUEUE_LUA = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""


async def enqueue_many(arq: ArqRedis, settings: Settings, jobs: Sequence[tuple[str, int]],
                       *, defer_by: float | None = None, rescue: int = 0) -> int:
    """Enqueue (task_id, seq) jobs exactly as arq's ``enqueue_job`` would (same job record,
    expiry and score), all in one round trip; returns how many were new."""
    if not jobs:
        return 0
    script = arq.register_script(_ENQUEUE_LUA)
    queue = queue_name(settings.namespace)
    now = timestamp_ms()
    defer_ms = int(defer_by * 1000) if defer_by else 0
    async with arq.pipeline(transaction=False) as pipe:
        for task_id, seq in jobs:
            jid = job_id(task_id, seq, rescue)
            body = serialize_job(RUN_TASK_FUNCTION, (task_id,), {}, None, now,
                                 serializer=serialize)
            await script(keys=[job_key_prefix + jid, result_key_prefix + jid, queue],
                         args=[defer_ms + expires_extra_ms, body, now + defer_ms, jid],
                         client=pipe)
        results = await pipe.execute()
    return sum(1 for r in results if r == 1)


async def job_known(arq: ArqRedis, jid: str) -> bool:
    """Whether arq still has this job queued, deferred or running."""
    return bool(await arq.exists(job_key_prefix + jid, in_progress_key_prefix + jid))


#: arq's job claim (per job: WATCH, EXISTS, ZSCORE, MULTI/PSETEX/EXEC — four round trips,
#: one job after another) as one atomic script for every job id a poll found: a job is
#: taken when no worker holds it and it is due; at most ARGV[3] are taken. KEYS: queue;
#: ARGV: now ms, in-progress marker ttl ms, limit, then the job ids. Returns id, score pairs.
_CLAIM_LUA = """
local out = {}
local limit = tonumber(ARGV[3])
local now = tonumber(ARGV[1])
for i = 4, #ARGV do
    if #out >= 2 * limit then break end
    local id = ARGV[i]
    local marker = '""" + in_progress_key_prefix + """' .. id
    if redis.call('EXISTS', marker) == 0 then
        local score = redis.call('ZSCORE', KEYS[1], id)
        if score and tonumber(score) <= now then
            redis.call('PSETEX', marker, ARGV[2], '1')
            out[#out + 1] = id
            out[#out + 1] = score
        end
    end
end
return out
"""


async def claim_jobs(redis: ArqRedis, queue: str, job_ids: Sequence[bytes | str], limit: int,
                     in_progress_ms: int) -> list[tuple[str, int]]:
    """Take up to ``limit`` of these jobs for this worker, as arq's ``start_jobs`` would,
    in one round trip; returns (job id, score) of those taken."""
    if not job_ids or limit <= 0:
        return []
    script = redis.register_script(_CLAIM_LUA)
    raw = await script(keys=[queue], args=[timestamp_ms(), in_progress_ms, limit, *job_ids])
    pairs = [x.decode() if isinstance(x, bytes) else str(x) for x in raw]
    return [(pairs[i], int(float(pairs[i + 1]))) for i in range(0, len(pairs), 2)]
