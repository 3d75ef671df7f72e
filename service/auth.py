"""Who is calling: a Bearer API key (or, for streams only, a signed ticket) → Principal.

With ``auth`` switched off (the local embedded run) every caller is the anonymous tenant with
admin rights, so the tutorial's snippet works as written. Verified keys are cached for a few
seconds (``key_cache_seconds``), which bounds how late a revocation takes effect.
"""

from typing import Annotated

from fastapi import Depends, Header, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.deps import Res, Resources
from service.errors import Forbidden, Unauthorized
from taskstream.core import auth, store_read
from taskstream.core.auth import KeyRole, Principal
from taskstream.core.constants import ANONYMOUS_OWNER

bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                    description="An API key from `python -m taskstream.core.keys create`.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
ANONYMOUS = Principal(ANONYMOUS_OWNER, KeyRole.ADMIN)


async def verify_key(res: Resources, token: str) -> Principal:
    cached = res.keys.get(token)
    if cached is not None:
        return cached
    parts = auth.split_key(token)
    if parts is None:
        raise Unauthorized("malformed API key")
    key = await store_read.get_api_key(res.engine, parts[0])
    if key is None or key.revoked_at is not None or not auth.secret_matches(parts[1],
                                                                             key.secret_hash):
        raise Unauthorized("unknown or revoked API key")
    principal = Principal(key.tenant, KeyRole(key.role), key.key_id)
    res.keys.put(token, principal)
    return principal


async def caller(res: Res, creds: Credentials) -> Principal:
    if not res.settings.auth:
        return ANONYMOUS
    if creds is None:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    return await verify_key(res, creds.credentials)


async def admin(principal: Annotated[Principal, Depends(caller)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this operation needs an admin key")
    return principal


TicketQuery = Annotated[
    str | None,
    Query(description="A stream ticket from POST /stream-tickets, for an EventSource that "
                      "cannot send an Authorization header. API keys are never accepted here.",
          max_length=1000),
]


async def stream_caller(res: Resources, creds: HTTPAuthorizationCredentials | None,
                        ticket: str | None, scope: str) -> Principal:
    """A stream accepts a Bearer key, or a ticket for this task (or for all tasks)."""
    if not res.settings.auth:
        return ANONYMOUS
    if creds is not None:
        return await verify_key(res, creds.credentials)
    if ticket:
        tenant = auth.check_ticket(res.signing_key, ticket, scope)
        if tenant is None:
            raise Unauthorized("invalid or expired stream ticket; mint a new one")
        return Principal(tenant, KeyRole.USER)
    raise Unauthorized("send an API key as 'Authorization: Bearer <key>' or a ?ticket=")


Caller = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]


TenantHeader = Annotated[
    str | None,
    Header(alias="X-Tenant", min_length=1, max_length=200,
           description="Admin keys only: act as this tenant (the dashboard's tenant picker). "
                       "Another key may name only its own tenant."),
]


def acting_for(principal: Principal, x_tenant: str | None) -> str:
    """The tenant a request acts for: the caller's own, or (admin keys only) X-Tenant's."""
    if x_tenant is None or x_tenant == principal.tenant:
        return principal.tenant
    if not principal.is_admin:
        raise Forbidden("only an admin key may act for another tenant (X-Tenant)")
    return x_tenant


async def _owner(principal: Caller, x_tenant: TenantHeader = None) -> str:
    return acting_for(principal, x_tenant)


Owner = Annotated[str, Depends(_owner)]
