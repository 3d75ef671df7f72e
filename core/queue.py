"""Connecting to the arq queue from either process, with our serializer and queue name."""

from urllib.parse import urlsplit

from arq.connections import ArqRedis, RedisSettings, create_pool

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


async def enqueue_task(arq: ArqRedis, settings: Settings, task_id: str, attempt_hint: int = 0,
                       defer_by: float | None = None) -> bool:
    """Put a task on the queue; the job carries only the task id.

    The job id is ``task_id:n`` so a re-drive is a new job while a duplicate enqueue of the
    same run is refused by arq. Returns False when that job is already queued.
    """
    job = await arq.enqueue_job(
        RUN_TASK_FUNCTION,
        task_id,
        _job_id=f"{task_id}:{attempt_hint}",
        _queue_name=queue_name(settings.namespace),
        _defer_by=defer_by,
    )
    return job is not None
