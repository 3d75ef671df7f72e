"""Webhook routes: a tenant registers, lists and removes URLs that receive its tasks'
events (signed; see ``taskstream.core.webhooks``), and reads each one's delivery record."""

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from service.auth import Owner
from service.deps import Res
from service.errors import NotFound, TooManyRequests, Unprocessable, parse_id
from service.routes.tasks import ERRORS
from taskstream.core import store_ops
from taskstream.core import webhooks as wh
from taskstream.core.states import EventType

router = APIRouter(tags=["webhooks"])


class WebhookIn(BaseModel):
    url: str = Field(max_length=2000, description="http(s) URL that receives POSTs")
    event_types: list[EventType] | None = Field(
        default=None, max_length=20,
        description="Event types to deliver; default the terminal ones (completed, failed, "
                    "cancelled). progress, log and partial are never delivered.")


@router.post("/webhooks", status_code=201, responses=ERRORS)
async def create_webhook(body: WebhookIn, res: Res, owner: Owner) -> dict[str, Any]:
    """Register a URL. The answer carries the signing ``secret`` — shown this once."""
    types = sorted({str(t) for t in body.event_types} if body.event_types
                   else set(wh.DEFAULT_EVENT_TYPES))
    never = sorted(set(types) & {str(t) for t in wh.NOT_DELIVERABLE})
    if never:
        raise Unprocessable(f"event types {', '.join(never)} are never delivered by webhooks")
    try:
        await wh.check_url(body.url, wh.allowed_hosts(res.settings.webhook_allow_hosts))
    except wh.UnsafeURL as exc:
        raise Unprocessable(str(exc)) from None
    secret = "whsec_" + secrets.token_urlsafe(32)
    hook = await store_ops.create_webhook(res.pool, owner, body.url, secret, types,
                                          res.settings.webhooks_per_tenant)
    if hook is None:
        raise TooManyRequests(
            f"at most {res.settings.webhooks_per_tenant} webhooks per tenant", retry_after=60)
    return {**hook.to_json(), "secret": secret}


@router.get("/webhooks", responses=ERRORS)
async def list_webhooks(res: Res, owner: Owner) -> list[dict[str, Any]]:
    """The caller's webhooks (without their secrets)."""
    return [h.to_json() for h in await store_ops.list_webhooks(res.pool, owner)]


@router.delete("/webhooks/{webhook_id}", status_code=204, responses=ERRORS)
async def delete_webhook(webhook_id: str, res: Res, owner: Owner) -> None:
    """Remove a webhook; its pending deliveries go with it."""
    if not await store_ops.delete_webhook(res.pool, owner, parse_id(webhook_id, "webhook")):
        raise NotFound(f"webhook {webhook_id!r} not found")


@router.get("/webhooks/{webhook_id}/deliveries", responses=ERRORS)
async def webhook_deliveries(
    webhook_id: str, res: Res, owner: Owner,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    """Deliveries, newest first: status (pending, delivered, failed), attempts, the last
    response code and error, and every attempt's outcome in ``history``. Page with
    ``before=<next_before>``."""
    items = await store_ops.webhook_deliveries(res.pool, owner, parse_id(webhook_id, "webhook"),
                                               limit, before)
    if items is None:
        raise NotFound(f"webhook {webhook_id!r} not found")
    return {"items": items,
            "next_before": items[-1]["delivery_id"] if len(items) == limit else None}
