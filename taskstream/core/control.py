"""Control messages from web processes to workers, on one channel (``control_channel``).

One message today: cancel a running task. The worker that runs it stops it; every other
worker ignores it. Pub/sub may lose the message: the heartbeat reads ``cancel_requested``
from PostgreSQL too, so a cancel lands within a heartbeat anyway.
"""

import orjson
from redis.asyncio import Redis

from taskstream.core.constants import control_channel


def encode_cancel(task_id: str) -> bytes:
    return orjson.dumps({"cancel": task_id})


def decode_cancel(raw: bytes | str) -> str | None:
    """The task id a cancel message names; None for anything else (never raises)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    task_id = body.get("cancel") if isinstance(body, dict) else None
    return task_id if isinstance(task_id, str) else None


async def publish_cancel(redis: Redis, namespace: str, task_id: str) -> None:
    await redis.publish(control_channel(namespace), encode_cancel(task_id))
