"""Redis connections for both processes, built in one place so TLS is handled once.

Hosted Redis (``rediss://``, e.g. Heroku's) presents self-signed certificates: unless
``redis_tls_verify`` is set, a TLS connection does not verify them. A plain ``redis://``
connection refuses the ``ssl_cert_reqs`` argument, so it is passed only for TLS.
"""

from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis

from taskstream.core.settings import Settings


def uses_tls(settings: Settings) -> bool:
    return urlsplit(settings.redis_url).scheme == "rediss"


def tls_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for redis-py (and arq's ``RedisSettings``) about certificates."""
    if uses_tls(settings) and not settings.redis_tls_verify:
        return {"ssl_cert_reqs": "none"}
    return {}


def connect(settings: Settings, **options: Any) -> Redis:
    """A redis-py client for ``settings.redis_url``; ``options`` add redis-py arguments."""
    client: Redis = Redis.from_url(settings.redis_url, **tls_options(settings), **options)
    return client
