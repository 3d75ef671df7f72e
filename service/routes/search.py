"""``GET /search``: the stored chunks nearest a query, with their document."""

from typing import Annotated

from fastapi import APIRouter, Query

from service import search as search_service
from service.auth import Caller
from service.deps import Res
from service.routes.tasks import ERRORS
from service.schemas import SearchHitOut, SearchOut

router = APIRouter(tags=["search"])


@router.get("/search", response_model=SearchOut, responses=ERRORS)
async def search(
    res: Res,
    principal: Caller,
    q: Annotated[str, Query(min_length=1, max_length=10_000,
                            description="What to look for, in your own words.")],
    k: Annotated[int, Query(ge=1, le=1000, description="How many chunks "
                                                        "(at most TASKSTREAM_SEARCH_MAX_K).")] = 5,
    all_tenants: Annotated[bool, Query(description="Every tenant's documents "
                                                   "(admin keys only).")] = False,
) -> SearchOut:
    """Semantic search over your uploaded documents' chunks, best first: each with its
    document (upload id, filename), page, cosine score and text."""
    hits = await search_service.search(res, principal, q, k, all_tenants)
    return SearchOut(query=q.strip(), k=k, hits=[
        SearchHitOut(upload_id=h.upload_id, filename=h.filename, task_id=h.task_id,
                     chunk_index=h.chunk_index, page=h.page, score=round(h.score, 6),
                     text=h.text) for h in hits])
