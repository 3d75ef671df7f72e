"""``POST /upload``: store the file, start a ``document_process`` task on it."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from service.auth import Owner
from service.deps import Res
from service.routes.tasks import ERRORS, IdempotencyKey
from service.schemas import UploadOut
from service.tasks import task_json
from service.uploads import receive_upload

router = APIRouter(tags=["uploads"])

MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post("/upload", status_code=202, response_model=UploadOut,
             responses={**ERRORS, 200: {"model": UploadOut,
                                        "description": "Idempotent replay: the same task."}},
             openapi_extra=MULTIPART_BODY)
async def upload(request: Request, res: Res, owner: Owner, response: Response,
                 idempotency_key: IdempotencyKey = None,
                 content_length: Annotated[int | None, Header(ge=0)] = None) -> dict[str, Any]:
    """Upload a PDF, text or Markdown file (multipart field ``file``) and process it."""
    await res.submissions.admit(owner)  # refuse before storing anything
    stored = await receive_upload(request, res.pool, owner,
                                  max_bytes=res.settings.upload_max_bytes,
                                  chunk_bytes=res.settings.upload_chunk_bytes)
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
