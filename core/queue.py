"""Connecting to the arq queue from either process, with our serializer and queue name."""

from urllib.parse import urlsplit

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import in_progress_key_prefix, job_key_prefix

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


def job_id(task_id: str, seq: int) -> str:
    """A task's job id: its id and the seq of the event that made it pending.

    While a task is pending nothing else is appended to it, so every process that wants to
    (re-)enqueue the same pending state computes the same id, and arq refuses the duplicate.
    A retry, a re-queue or a re-drive is a new state and so a new job.
    """
    return f"{task_id}:{seq}"


async def enqueue_task(arq: ArqRedis, settings: Settings, task_id: str, seq: int,
                       defer_by: float | None = None) -> bool:
    """Put a task on the queue; the job carries only the task id. False if already queued."""
    job = await arq.enqueue_job(
        RUN_TASK_FUNCTION,
        task_id,
        _job_id=job_id(task_id, seq),
        _queue_name=queue_name(settings.namespace),
        _defer_by=defer_by,
    )
    return job is not None


async def job_known(arq: ArqRedis, jid: str) -> bool:
    """Whether arq still has this job queued, deferred or running."""
    return bool(await arq.exists(job_key_prefix + jid, in_progress_key_prefix + jid))
