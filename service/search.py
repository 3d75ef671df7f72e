"""Search as the API serves it: bounds, tenant scope, the embedder's failures as 503s; and
the one submission rule that depends on who submits (an all-tenant ``reindex``)."""

from typing import Any

from service.deps import Resources
from service.errors import Forbidden, Unavailable, Unprocessable
from taskstream.builtin.search import SearchHit, needs_admin, search_documents
from taskstream.core.auth import Principal


def check_submitter(principal: Principal, task_type: str, params: dict[str, Any]) -> None:
    """403 for what only an admin may submit (``reindex`` with ``all_tenants``); every route
    that creates tasks from a caller's params (tasks, schedules) asks here first."""
    if needs_admin(task_type, params) and not principal.is_admin:
        raise Forbidden(f"{task_type} with all_tenants needs an admin key")


async def search(res: Resources, principal: Principal, q: str, k: int,
                 all_tenants: bool) -> list[SearchHit]:
    from taskstream.builtin.embedding import EmbeddingError

    settings = res.settings
    query = q.strip()
    if not query:
        raise Unprocessable("q: the query is empty")
    if len(query) > settings.search_max_query_chars:
        raise Unprocessable(f"q: at most {settings.search_max_query_chars} characters")
    if not 1 <= k <= settings.search_max_k:
        raise Unprocessable(f"k: between 1 and {settings.search_max_k}")
    if all_tenants and not principal.is_admin:
        raise Forbidden("all_tenants needs an admin key")
    owner = None if all_tenants else principal.tenant
    try:
        return await search_documents(res.pool, owner, query, k, settings=settings)
    except EmbeddingError as exc:
        raise Unavailable(f"the embedder is unavailable: {exc}", retry_after=5) from None
