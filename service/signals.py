"""Signals for runs that wait (``ctx.wait_for``): deliver one, and mint or redeem the signed,
single-use URL that lets someone without a key deliver it (an approver in an e-mail)."""

import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from service.deps import Resources
from service.errors import BadRequest, Conflict, NotFound
from service.tasks import parse_task_id
from taskstream.core import auth, store_steps, waits
from taskstream.core.constants import SIGNAL_NAME_PATTERN

NAME_RE = re.compile(SIGNAL_NAME_PATTERN)
#: A signal URL's lifetime bounds, in seconds.
MIN_URL_TTL, MAX_URL_TTL = 60, 30 * 24 * 3600


@dataclass(slots=True, frozen=True)
class SignalOutcome:
    task_id: str
    name: str
    resumed: bool  # True: the run was suspended on it and is queued again


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise BadRequest("a signal name is 1-100 characters of letters, digits and _ . : -")
    return name


async def send_signal(res: Resources, owner: str | None, task_id: str, name: str,
                      payload: Any) -> SignalOutcome:
    """Deliver ``payload`` to the task's wait ``name`` (owner None: any tenant's task — for
    a signed URL, which carries its tenant). Single-use: a second signal of the same name is
    409, as is a signal to a finished task; another tenant's task is 404."""
    tid = parse_task_id(task_id)
    check_name(name)
    try:
        delivered = await store_steps.deliver_signal(res.pool, tid, owner, name, payload)
    except store_steps.SignalRefused as exc:
        if exc.reason == "finished":
            raise Conflict("the task has finished; it waits for no signal") from exc
        raise Conflict(f"signal {name!r} was already delivered to this task") from exc
    if delivered is None:
        raise NotFound(f"task {task_id!r} not found")
    resumed = delivered.suspended and await waits.resume(
        res.pool, res.eventlog, res.arq, res.settings, tid, name)
    return SignalOutcome(str(tid), name, resumed)


def _url_key(res: Resources) -> bytes:
    """Signal URLs have their own key, derived from the deployment's ticket key: a stream
    ticket can never pass for a signal URL, nor the other way round."""
    return hashlib.sha256(res.signing_key + b"\x00signal-url").digest()


def _scope(task_id: uuid.UUID, name: str) -> str:
    return f"signal:{task_id}:{name}"


def mint_url(res: Resources, owner: str, task: uuid.UUID, name: str,
             ttl: float) -> tuple[str, int]:
    """A path that delivers the signal without a key, and when it expires (unix seconds)."""
    check_name(name)
    ttl = min(max(ttl, MIN_URL_TTL), MAX_URL_TTL)
    token = auth.mint_ticket(_url_key(res), owner, _scope(task, name), ttl)
    return f"/signals/{token}", int(time.time() + ttl)


async def redeem_url(res: Resources, token: str, payload: Any) -> SignalOutcome:
    """Deliver the signal a signed URL names. An invalid or expired token is 404 (it names
    nothing we will act on); a used one is 409, as for any second signal."""
    body = token[len(auth.TICKET_PREFIX):].partition(".")[0] \
        if token.startswith(auth.TICKET_PREFIX) and len(token) <= 1000 else ""
    claims = auth.ticket_claims(body)
    scope = str(claims.get("s", "")) if claims else ""
    parts = scope.split(":", 2)
    if len(parts) != 3 or parts[0] != "signal":
        raise NotFound("no such signal URL, or it has expired")
    owner = auth.check_ticket(_url_key(res), token, scope)
    if owner is None:
        raise NotFound("no such signal URL, or it has expired")
    return await send_signal(res, owner, parts[1], parts[2], payload)
