"""Batch routes: ``POST /batches``, ``GET /batches/{id}``, cancel and retry. A batch is also
its parent task: ``/tasks/{id}``, its stream and its events work on the same id."""

import uuid
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from service.auth import Caller, Owner
from service.batches import (
    Child,
    batch_json,
    cancel_batch,
    created_json,
    load_batch,
    redrive_batch,
    submit_batch,
)
from service.deps import Res
from service.routes.tasks import ERRORS, IdempotencyKey
from service.schemas import SubmitTask
from service.search import check_submitter
from service.tasks import task_json
from taskstream.core import store_batches
from taskstream.core.batches import Policy

router = APIRouter(tags=["batches"])


class SubmitBatch(BaseModel):
    tasks: list[SubmitTask] = Field(
        description="The children: each a task of a registered type, as for POST /tasks.")
    policy: Policy = Field(Policy.ANY, description=(
        "When the batch fails: 'any' child failing (default), 'all' of them, or "
        "'threshold' children. A broken policy cancels the children still going."))
    threshold: int | None = Field(None, ge=1, description="For policy 'threshold'.")


@router.post("/batches", status_code=202, responses=ERRORS)
async def create_batch(body: SubmitBatch, res: Res, owner: Owner, principal: Caller,
                       response: Response, idempotency_key: IdempotencyKey = None
                       ) -> dict[str, Any]:
    """Submit tasks of any types as one batch: one parent task whose stream carries the
    aggregate (counts per status, percent, each child's end). All or nothing: a bad child
    is a 4xx naming its index and nothing is created."""
    for t in body.tasks:  # what only an admin may submit, as on POST /tasks
        check_submitter(principal, t.type, t.params)
    kids = [Child(t.type, t.params, t.options()) for t in body.tasks]
    parent, children, created = await submit_batch(res, owner, kids, body.policy,
                                                   body.threshold, idempotency_key)
    response.headers["Location"] = f"/batches/{parent.task_id}"
    if not created:
        response.status_code = 200
    return created_json(parent, children)


@router.get("/batches/{batch_id}", responses=ERRORS)
async def get_batch(batch_id: str, res: Res, owner: Owner,
                    children: bool = True) -> dict[str, Any]:
    """The batch's aggregate and, unless ``children=false``, each child's status."""
    b = await load_batch(res, owner, batch_id)
    kids = await store_batches.children(res.pool, uuid.UUID(b.batch_id)) if children else None
    return batch_json(b, kids)


@router.get("/batches/{batch_id}/children", responses=ERRORS)
async def batch_children(batch_id: str, res: Res, owner: Owner) -> dict[str, Any]:
    """The batch's children as task snapshots (``items``), in creation order."""
    b = await load_batch(res, owner, batch_id)
    kids = await store_batches.children(res.pool, uuid.UUID(b.batch_id))
    return {"items": [task_json(k) | {"parent_id": b.batch_id} for k in kids]}


@router.post("/batches/{batch_id}/cancel", responses=ERRORS)
async def cancel(batch_id: str, res: Res, owner: Owner) -> dict[str, Any]:
    """Cancel the batch and every child still pending or running."""
    b = await load_batch(res, owner, batch_id)
    await cancel_batch(res, owner, uuid.UUID(b.batch_id))
    return batch_json(await load_batch(res, owner, batch_id))


@router.post("/batches/{batch_id}/retry", responses=ERRORS)
async def retry(batch_id: str, res: Res, owner: Owner) -> dict[str, Any]:
    """Re-drive a failed or cancelled batch: only its failed and cancelled children run
    again; the completed ones keep their results."""
    b = await load_batch(res, owner, batch_id)
    again = await redrive_batch(res, owner, uuid.UUID(b.batch_id))
    return {**batch_json(await load_batch(res, owner, batch_id)), "redriven": again}
