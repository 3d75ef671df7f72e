"""``POST /upload``: store the file, start a ``document_process`` task on it."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from service.auth import Owner
from service.batches import Child, check_policy, submit_batch
from service.deps import Res, Resources
from service.routes.tasks import ERRORS, IdempotencyKey
from service.schemas import BatchUploadOut, UploadOut
from service.tasks import task_json
from service.uploads import UploadResult, receive_uploads
from taskstream.core import store, store_batches
from taskstream.core.batches import Policy

router = APIRouter(tags=["uploads"])

BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


def multipart_body(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for a route that reads its multipart body itself (streamed, not a form
    parameter): one required ``field`` of ``schema``."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": [field], "properties": {field: schema}}}}}}


#: ``POST /upload``: one ``file`` (several parts: a batch); ``/batch-process``: ``files``.
MULTIPART_BODY = multipart_body("file", BINARY)
BATCH_BODY = multipart_body("files", {"type": "array", "items": BINARY})


@router.post("/upload", status_code=202, response_model=None,
             responses={**ERRORS, 202: {"model": UploadOut, "description":
                                        "One file. Several: a batch (see /batch-process)."},
                        200: {"model": UploadOut,
                              "description": "Idempotent replay: the same task."}},
             openapi_extra=MULTIPART_BODY)
async def upload(request: Request, res: Res, owner: Owner, response: Response,
                 idempotency_key: IdempotencyKey = None,
                 content_length: Annotated[int | None, Header(ge=0)] = None,
                 policy: Policy = Policy.ALL,
                 threshold: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    """Upload a PDF, text or Markdown file (multipart field ``file``) and process it.

    Several ``file`` parts make one batch: a ``document_process`` child per file under one
    parent task (its stream carries the aggregate). The batch's ``policy`` defaults to
    ``all`` here: one unreadable file does not fail (nor cancel) the others."""
    return await _upload(request, res, owner, response, idempotency_key, policy, threshold,
                         always_batch=False)


@router.post("/batch-process", status_code=202, response_model=BatchUploadOut,
             responses={**ERRORS, 200: {"model": BatchUploadOut,
                                        "description": "Idempotent replay: the same batch."}},
             openapi_extra=BATCH_BODY)
async def batch_process(request: Request, res: Res, owner: Owner, response: Response,
                        idempotency_key: IdempotencyKey = None,
                        content_length: Annotated[int | None, Header(ge=0)] = None,
                        policy: Policy = Policy.ALL,
                        threshold: Annotated[int | None, Query(ge=1)] = None
                        ) -> dict[str, Any]:
    """The tutorial's ``/batch-process`` (``files: List[UploadFile]``): every file part
    (``files`` or ``file``) becomes a child of one batch, processed in the background."""
    return await _upload(request, res, owner, response, idempotency_key, policy, threshold,
                         always_batch=True)


async def _upload(request: Request, res: Resources, owner: str, response: Response,
                  idempotency_key: str | None, policy: str, threshold: int | None, *,
                  always_batch: bool) -> dict[str, Any]:
    await res.submissions.admit(owner)  # refuse before storing anything
    check_policy(policy, threshold, res.settings.batch_max_children)  # likewise
    stored = await receive_uploads(request, res.pool, owner,
                                   max_bytes=res.settings.upload_max_bytes,
                                   chunk_bytes=res.settings.upload_chunk_bytes,
                                   max_files=res.settings.batch_max_children)
    if len(stored) == 1 and not always_batch:
        return await _single(res, owner, response, idempotency_key, stored[0])
    check_policy(policy, threshold, len(stored))
    kids = [Child("document_process", {"upload_id": str(s.upload_id)}, {},
                  fingerprint={"sha256": s.sha256, "size": s.size}) for s in stored]
    parent, children, created = await submit_batch(res, owner, kids, policy, threshold,
                                                   idempotency_key)
    response.headers["Location"] = f"/batches/{parent.task_id}"
    if not created:
        response.status_code = 200
        children = await store_batches.children(res.pool, uuid.UUID(parent.task_id))
        files: dict[str, UploadResult | store.Upload] = {
            str(u.upload_id): u for u in await store.get_uploads(
            res.pool, [uuid.UUID(c.params["upload_id"]) for c in children])}
    else:
        files = {str(s.upload_id): s for s in stored}
    out = task_json(parent)
    return {"task_id": parent.task_id, "batch_id": parent.task_id, "status": parent.status,
            "links": out["links"],
            "children": [_child(c.task_id, c.status, files[c.params["upload_id"]])
                         for c in children]}


def _child(task_id: str, status: str, f: UploadResult | store.Upload) -> dict[str, Any]:
    return {"task_id": task_id, "status": status, "upload_id": str(f.upload_id),
            "filename": f.filename, "size": f.size}


async def _single(res: Resources, owner: str, response: Response,
                  idempotency_key: str | None, stored: UploadResult) -> dict[str, Any]:
    task, created = await res.submissions.submit(
        owner, "document_process", {"upload_id": str(stored.upload_id)}, idempotency_key,
        fingerprint={"sha256": stored.sha256, "size": stored.size}, admitted=True)
    response.headers["Location"] = f"/tasks/{task.task_id}"
    if not created:
        response.status_code = 200
    out = task_json(task)
    return {"task_id": task.task_id, "status": task.status,
            "upload_id": str(task.params["upload_id"]), "filename": stored.filename,
            "size": stored.size, "links": out["links"]}
