"""``GET /usage``: the caller's language-model token totals (every run, kept when tasks are
deleted)."""

from fastapi import APIRouter

from service.auth import Owner
from service.deps import Res
from service.routes.tasks import ERRORS
from service.schemas import TenantUsage
from taskstream.core import store_llm

router = APIRouter(tags=["usage"])


@router.get("/usage", response_model=TenantUsage, responses=ERRORS)
async def usage(res: Res, owner: Owner) -> TenantUsage:
    """Prompt and completion tokens of all the caller's model calls so far."""
    return await store_llm.tenant_usage(res.pool, owner)
