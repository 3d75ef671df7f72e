"""What the dashboard reads beyond tasks: the overview and the workers.

Everything about tasks is the caller's tenant's (or, for an admin key, every tenant's with
``all_tenants``); workers are shared by all tenants, so their list is for admin keys and
others see only how many are live.
"""

import hashlib
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from service.auth import Admin, Caller, Owner
from service.deps import Res, Resources
from service.errors import Forbidden
from service.routes.tasks import ERRORS
from service.schemas import (
    MinuteBucket,
    OverviewOut,
    QueueDepth,
    StatusCount,
    StreamsOut,
    WorkerOut,
)
from taskstream.core import store_read

router = APIRouter(tags=["operations"])

#: The throughput chart's window.
MINUTES = 60
#: Workers silent for longer than this many leases are left off the list (their rows stay
#: until they are replaced; a killed worker never deletes them).
GONE_AFTER_LEASES = 3


@router.get("/stats/overview", response_model=OverviewOut, responses=ERRORS)
async def overview(
    res: Res, principal: Caller, owner: Owner,
    all_tenants: Annotated[bool, Query(description="Every tenant (admin keys only).")] = False,
) -> OverviewOut:
    """Tasks by status and type now, queue depth and the oldest pending task's age per type,
    finished tasks per minute over the last hour, live workers and open streams."""
    if all_tenants and not principal.is_admin:
        raise Forbidden("all_tenants needs an admin key")
    scope = None if all_tenants else owner
    counts = await store_read.status_counts(res.engine, scope)
    queues = await store_read.queue_depths(res.engine, scope)
    minutes = await store_read.finished_per_minute(res.engine, scope, MINUTES)
    live = await _workers(res)
    return OverviewOut(
        tenant=scope, now=datetime.now(UTC),
        counts=[StatusCount(tenant=o, type=t, status=s, count=n) for o, t, s, n in counts],
        queues=[QueueDepth(type=t, pending=n, oldest_age_seconds=a) for t, n, a in queues],
        minutes=MINUTES,
        throughput=[MinuteBucket(minute=m, completed=c, failed=f, cancelled=x)
                    for m, c, f, x in minutes],
        workers_live=sum(w.live for w in live),
        streams=StreamsOut(scope="process", open=sum(res.streams.open.values()),
                           tenant_open=res.streams.open.get(owner, 0)),
    )


@router.get("/workers", response_model=list[WorkerOut], responses=ERRORS)
async def workers(res: Res, _: Admin) -> list[WorkerOut]:
    """Workers seen lately: last heartbeat, tasks running on each, the types they load and a
    version hash over them (admin keys only)."""
    return await _workers(res)


async def _workers(res: Resources) -> list[WorkerOut]:
    lease = res.settings.lease_seconds
    now = datetime.now(UTC)
    out = []
    for worker_id, seen, types, running in await store_read.workers(
            res.engine, lease * GONE_AFTER_LEASES):
        age = max(0.0, (now - seen).total_seconds())
        digest = hashlib.sha256(repr(sorted(types.items())).encode()).hexdigest()[:8]
        out.append(WorkerOut(worker_id=worker_id, last_heartbeat=seen,
                             heartbeat_age_seconds=age, live=age <= lease, running=running,
                             version=digest, types=types))
    return out
