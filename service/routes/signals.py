"""Signal routes: resume a run that waits in ``ctx.wait_for`` — with a key, or through a
signed single-use URL that can be handed to someone who has none."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel

from service import signals
from service.auth import Owner
from service.deps import Res
from service.routes.tasks import ERRORS
from service.tasks import load_task, parse_task_id

router = APIRouter(tags=["signals"])

#: The body is the signal's payload, any JSON value (absent: null).
Payload = Annotated[Any, Body(description="The payload ctx.wait_for returns (any JSON).")]


class SignalSent(BaseModel):
    task_id: str
    name: str
    resumed: bool


class SignalUrl(BaseModel):
    url: str
    expires_at: int


def _sent(out: signals.SignalOutcome) -> SignalSent:
    return SignalSent(task_id=out.task_id, name=out.name, resumed=out.resumed)


@router.post("/tasks/{task_id}/signals/{name}", status_code=202, response_model=SignalSent,
             responses=ERRORS)
async def send_signal(task_id: str, name: str, res: Res, owner: Owner,
                      payload: Payload = None) -> SignalSent:
    """Deliver the signal ``name`` with a JSON payload to the task. If its run is suspended
    waiting for it, the run is queued again (``resumed``: true); a signal sent before the run
    asks for it is kept until it does. Single use: a second signal of a name is 409."""
    return _sent(await signals.send_signal(res, owner, task_id, name, payload))


@router.post("/tasks/{task_id}/signals/{name}/url", status_code=201, response_model=SignalUrl,
             responses=ERRORS)
async def signal_url(task_id: str, name: str, res: Res, owner: Owner,
                     ttl: Annotated[int, Query(ge=signals.MIN_URL_TTL,
                                               le=signals.MAX_URL_TTL)] = 7 * 24 * 3600
                     ) -> SignalUrl:
    """A signed URL (a path on this service) that delivers this signal once, without a key:
    ``POST`` it with the payload as the body."""
    task = await load_task(res, owner, task_id)
    url, expires = signals.mint_url(res, owner, parse_task_id(task.task_id), name, ttl)
    return SignalUrl(url=url, expires_at=expires)


@router.post("/signals/{token}", status_code=202, response_model=SignalSent, responses=ERRORS)
async def redeem_signal_url(token: str, res: Res, payload: Payload = None) -> SignalSent:
    """Deliver the signal a signed URL names (no key needed: the URL is the credential).
    An unknown or expired URL is 404; a used one is 409."""
    return _sent(await signals.redeem_url(res, token, payload))
