"""Two task types, declared the way a user's package declares them.

* ``fetch``: GET a JSON API over HTTP. A 5xx, a 408/429 or a network error is retried by
  the service (``max_attempts``, exponential ``backoff``); any other 4xx is the caller's
  mistake and fails at once with ``PermanentError``.
* ``compress``: a CPU-bound step (LZMA over a generated text, chunk by chunk) run off the
  event loop with ``asyncio.to_thread``, reporting progress after each chunk.

The web process imports this module too, to validate parameters and publish their schemas,
so it imports only pydantic and taskstream at the top; the libraries the work needs are
imported inside the coroutines, which only workers run.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from taskstream import Params, PermanentError, SoftTimeLimitExceeded, TaskContext, task

#: Hosts ``fetch`` may reach although they are not public (comma-separated, e.g.
#: ``127.0.0.1,billing.internal``): an operator's setting, never a tenant's parameter.
ALLOWED_HOSTS_ENV = "ACME_FETCH_ALLOWED_HOSTS"


class FetchParams(Params):
    url: str = Field(description="An http(s) URL answering JSON (or text).")
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds per request.")
    max_bytes: int = Field(1 << 20, ge=1, le=16 << 20, description="Largest body accepted.")


class TransientHTTPError(Exception):
    """An answer worth asking again for (5xx, 408, 429): the service retries the task."""


@task(description="GET a JSON API, retried with backoff on 5xx and network errors.",
      max_attempts=4, backoff=0.5, timeout=300)
async def fetch(ctx: TaskContext, params: FetchParams) -> dict[str, Any]:
    import json

    import httpx

    host = await _checked_host(params.url)
    await ctx.progress(10, f"GET {host} (attempt {ctx.attempt})")
    # Redirects are not followed: their target would skip the host check.
    async with httpx.AsyncClient(timeout=params.timeout, follow_redirects=False) as http, \
            http.stream("GET", params.url, headers={"Accept": "application/json"}) as r:
        if r.status_code >= 500 or r.status_code in (408, 429):
            raise TransientHTTPError(f"HTTP {r.status_code} from {host}")
        if r.status_code >= 300:
            raise PermanentError(f"HTTP {r.status_code} from {host}; not retried")
        body = bytearray()
        async for chunk in r.aiter_bytes():
            body += chunk
            if len(body) > params.max_bytes:
                raise PermanentError(f"response from {host} exceeds {params.max_bytes} bytes")
        content_type = r.headers.get("content-type", "")
    await ctx.progress(100, f"HTTP {r.status_code}, {len(body)} bytes")
    data: Any = json.loads(body) if content_type.startswith("application/json") \
        else body.decode(errors="replace")
    return {"status": r.status_code, "attempt": ctx.attempt, "bytes": len(body), "data": data}


async def _checked_host(url: str) -> str:
    """The URL's host, if the task may call it: a tenant's URL must not reach loopback,
    private or link-local (cloud metadata) addresses unless the operator allows the host.
    (A hardened version also pins the checked address for the connection itself.)"""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    allowed = {h.strip() for h in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip()}
    if host in allowed:
        return host
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for *_, sockaddr in await asyncio.get_running_loop().getaddrinfo(host, port):
        if not ipaddress.ip_address(sockaddr[0]).is_global:
            raise PermanentError(f"{host} resolves to a non-public address ({sockaddr[0]}); "
                                 f"an operator can allow it in {ALLOWED_HOSTS_ENV}")
    return host


class CompressParams(Params):
    text: str = Field(min_length=1, max_length=100_000, description="Text to repeat.")
    repeat: int = Field(1000, ge=1, le=1_000_000, description="Times the text is repeated.")
    chunks: int = Field(8, ge=1, le=1000, description="Compressed one by one, with progress.")
    preset: int = Field(6, ge=0, le=9, description="LZMA preset: 0 fast, 9 small.")

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        size = len(self.text.encode()) * self.repeat
        if size > 64 << 20:
            raise ValueError(f"text x repeat is {size} bytes; at most 64 MiB")
        if self.chunks > size:
            raise ValueError(f"more chunks ({self.chunks}) than bytes ({size})")
        return self


@task(description="LZMA-compress a repeated text in chunks, off the event loop.",
      timeout=600, soft_timeout=300)
async def compress(ctx: TaskContext, params: CompressParams) -> dict[str, Any]:
    import hashlib
    import lzma

    data = params.text.encode() * params.repeat
    step = -(-len(data) // params.chunks)
    digest, packed_size, done = hashlib.sha256(), 0, 0
    try:
        for i in range(params.chunks):
            piece = data[i * step:(i + 1) * step]
            # In a thread, so the worker's event loop keeps running its other tasks and
            # heartbeats (lzma, zlib, hashlib and numpy release the GIL; pure-Python number
            # crunching would need a process pool instead). A cancel arrives here as
            # CancelledError while the thread finishes its chunk in the background.
            packed = await asyncio.to_thread(lzma.compress, piece, preset=params.preset)
            digest.update(packed)
            packed_size += len(packed)
            done = i + 1
            await ctx.progress(100 * done / params.chunks,
                               f"chunk {done}/{params.chunks}: {len(piece)} -> {len(packed)} bytes")
    except SoftTimeLimitExceeded:
        # Past the soft limit: stop early and return what is done instead of being cancelled.
        await ctx.log(f"soft time limit: stopping after {done} of {params.chunks} chunks")
    return {"bytes_in": min(len(data), done * step), "bytes_out": packed_size,
            "chunks": done, "complete": done == params.chunks, "sha256": digest.hexdigest()}
