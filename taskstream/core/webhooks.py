"""Webhooks: what a delivery looks like on the wire, how it is signed, and which URLs a tenant
may register (design invariant 13: a tenant's URL cannot reach inside).

A delivery is ``POST <url>`` with a JSON body and these headers::

    Content-Type: application/json
    Taskstream-Delivery: <delivery id>        (the same on every retry of one delivery)
    Taskstream-Event: completed | failed | cancelled | ...
    Taskstream-Timestamp: <unix seconds of this attempt>
    Taskstream-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

A receiver recomputes the signature over the exact bytes it received, compares in constant
time (``verify``) and rejects timestamps older than a few minutes (replays). Any 2xx answer
within the timeout is delivered; anything else (another status, a redirect, a timeout, a
refused connection) is retried with exponential backoff, then recorded as failed.
"""

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from taskstream.core.events import Event
from taskstream.core.states import TERMINAL, EventType

SIGNATURE_HEADER = "Taskstream-Signature"
TIMESTAMP_HEADER = "Taskstream-Timestamp"
DELIVERY_HEADER = "Taskstream-Delivery"
EVENT_HEADER = "Taskstream-Event"

#: Subscribed when a webhook names no types.
DEFAULT_EVENT_TYPES: tuple[str, ...] = tuple(sorted(str(s) for s in TERMINAL))
#: Never deliverable: the hot, per-report events (the outbox trigger skips them in C).
NOT_DELIVERABLE = frozenset({EventType.PROGRESS, EventType.LOG, EventType.PARTIAL})


#: Seconds a webhook host may take to resolve.
RESOLVE_TIMEOUT = 5.0


class UnsafeURL(ValueError):
    """A URL a webhook may not call."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str,
           tolerance: float = 300.0) -> bool:
    """What a receiver does (also used by the tests): signature and freshness."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def body(delivery_id: int, webhook_id: str, task_type: str | None, event: Event) -> bytes:
    doc: dict[str, Any] = {"delivery_id": delivery_id, "webhook_id": webhook_id,
                           "type": event.type, "task_type": task_type,
                           "event": event.to_json()}
    return orjson.dumps(doc)


def headers(delivery_id: int, event_type: str, secret: str, payload: bytes,
            now: float | None = None) -> dict[str, str]:
    ts = int(now if now is not None else time.time())
    return {"Content-Type": "application/json", DELIVERY_HEADER: str(delivery_id),
            EVENT_HEADER: event_type, TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(secret, ts, payload)}


def allowed_hosts(setting: str) -> frozenset[str]:
    return frozenset(h.strip().lower() for h in setting.split(",") if h.strip())


def _inside(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def check_url(url: str, allow: frozenset[str]) -> None:
    """Refuse a URL that is not http(s), carries credentials, or whose host resolves to a
    loopback, private, link-local (cloud metadata), multicast or reserved address — unless
    the operator's allow-list names the host. Checked at registration and before every
    attempt (the name may resolve elsewhere later)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"malformed URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("a webhook URL must be http:// or https://")
    if parts.username or parts.password:
        raise UnsafeURL("a webhook URL may not carry credentials")
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeURL("a webhook URL needs a host")
    if host in allow:
        return
    try:
        infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
            host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT)
    except TimeoutError:
        raise UnsafeURL(f"host {host!r} did not resolve within {RESOLVE_TIMEOUT:g}s") from None
    except (OSError, UnicodeError) as exc:
        raise UnsafeURL(f"host {host!r} does not resolve ({exc})") from None
    for info in infos:
        if _inside(str(info[4][0])):
            raise UnsafeURL(f"host {host!r} resolves to an internal address; an operator "
                            "can allow it with TASKSTREAM_WEBHOOK_ALLOW_HOSTS")


def retry_delay(attempts: int, base: float, cap: float, jitter: float) -> float:
    """Exponential backoff after ``attempts`` failed attempts; ``jitter`` in [0, 1)."""
    raw = min(cap, base * 2 ** (attempts - 1))
    return float(raw * (0.5 + jitter / 2))
