"""API keys and stream tickets — the parts both the web process and the key CLI need.

A key is ``ts_<key_id>_<secret>``: ``key_id`` is public (listing, revoking, logs), the
secret is 32 random bytes stored only as a SHA-256 hash (a high-entropy secret needs no slow
hash). A stream ticket is ``tk_<payload>.<hmac>``, signed with a per-deployment secret kept
in PostgreSQL, bound to (tenant, scope = one task id or "*") and short-lived: it lets a
native EventSource, which cannot send headers, open a stream without the long-lived key
ever appearing in a URL.
"""

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from taskstream.core.ttlcache import TtlCache

KEY_PREFIX = "ts_"
TICKET_PREFIX = "tk_"


class KeyRole(StrEnum):
    USER = "user"  # acts on its own tenant's tasks
    ADMIN = "admin"  # may also read across tenants


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    role: KeyRole
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == KeyRole.ADMIN


def new_key() -> tuple[str, str, str]:
    """Returns (key_id, token to hand out once, hash to store)."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed token, else None."""
    if not token.startswith(KEY_PREFIX) or len(token) > 200:
        return None
    key_id, sep, secret = token[len(KEY_PREFIX):].partition("_")
    if not sep or not key_id or not secret or not key_id.isalnum():
        return None
    return key_id, secret


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_ticket(signing_key: bytes, tenant: str, scope: str, ttl: float) -> str:
    body = _b64(json.dumps({"t": tenant, "s": scope, "e": int(time.time() + ttl)},
                           separators=(",", ":")).encode())
    sig = _b64(hmac.new(signing_key, body.encode(), hashlib.sha256).digest())
    return f"{TICKET_PREFIX}{body}.{sig}"


def check_ticket(signing_key: bytes, ticket: str, scope: str) -> str | None:
    """The tenant a valid, unexpired ticket for this scope (or for "*") names; else None."""
    if not ticket.startswith(TICKET_PREFIX) or len(ticket) > 1000:
        return None
    body, sep, sig = ticket[len(TICKET_PREFIX):].partition(".")
    if not sep:
        return None
    want = _b64(hmac.new(signing_key, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(want, sig):
        return None
    claims = ticket_claims(body)
    if claims is None:
        return None
    try:
        tenant, granted, expires = str(claims["t"]), str(claims["s"]), int(claims["e"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires < time.time() or granted not in ("*", scope):
        return None
    return tenant


class KeyCache(TtlCache[str, Principal]):
    """Verified keys by the hash of their token, each trusted for ``ttl`` seconds."""

    def get(self, key: str) -> Principal | None:
        return super().get(hash_secret(key))

    def put(self, key: str, value: Principal) -> None:
        super().put(hash_secret(key), value)


def ticket_claims(body: str) -> dict[str, Any] | None:
    """A ticket body's claims, NOT verified (to learn which scope to verify it for)."""
    try:
        claims = json.loads(_unb64(body))
    except (ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None

