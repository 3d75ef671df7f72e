"""Operations endpoints: ``/metrics`` (Prometheus), ``/healthz`` (liveness) and ``/readyz``
(readiness: PostgreSQL, Redis and the pub/sub hub)."""

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.auth import Admin
from service.deps import Res
from service.errors import NotFound, Unprocessable
from service.routes.tasks import ERRORS
from taskstream.core import metrics, store_ops

router = APIRouter(tags=["operations"])

#: A readiness check that takes longer than this counts as failed.
READY_TIMEOUT = 2.0


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def prometheus_metrics(res: Res, _: Admin) -> Response:
    """Prometheus exposition of every process on this host (multiprocess mode) or of this
    process. An admin key when authentication is on (Prometheus' ``authorization``)."""
    if not res.settings.metrics:
        raise NotFound("metrics are switched off (TASKSTREAM_METRICS=false)")
    body, content_type = await asyncio.to_thread(metrics.render)
    return Response(body, media_type=content_type)


class RetentionIn(BaseModel):
    days: float | None = Field(gt=0, le=36500, description="null: the deployment's default")


@router.put("/tenants/{tenant}/retention", status_code=204, responses=ERRORS)
async def tenant_retention(tenant: str, body: RetentionIn, res: Res, _: Admin) -> None:
    """Admin: this tenant's finished tasks, events and uploads are pruned after ``days``."""
    if not tenant or len(tenant) > 200:
        raise Unprocessable("tenant: 1 to 200 characters")
    await store_ops.set_tenant_retention(res.pool, tenant, body.days)


class Readiness(BaseModel):
    status: str
    failed: list[str]
    checks: dict[str, str]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Touches no dependency (a database outage must not
    make an orchestrator restart every web process)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency failed; see 'failed'"}},
            response_model=Readiness)
async def readyz(res: Res) -> JSONResponse:
    """Readiness: PostgreSQL answers, Redis answers, the hub is subscribed. 503 names the
    ones that failed."""

    async def postgres() -> None:
        await res.pool.fetchval("SELECT 1")

    async def redis() -> None:
        await res.arq.ping()

    async def hub() -> None:
        if not res.hub.connected:
            raise RuntimeError("pub/sub hub not connected")

    checks = {"postgres": postgres, "redis": redis, "hub": hub}
    outcomes = await asyncio.gather(
        *(asyncio.wait_for(check(), READY_TIMEOUT) for check in checks.values()),
        return_exceptions=True)
    report: dict[str, Any] = {}
    failed = []
    for name, outcome in zip(checks, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            failed.append(name)
            report[name] = f"failed: {type(outcome).__name__}"
        else:
            report[name] = "ok"
    body = {"status": "unavailable" if failed else "ok", "failed": failed, "checks": report}
    return JSONResponse(body, status_code=503 if failed else 200)
