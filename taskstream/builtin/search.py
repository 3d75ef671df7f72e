"""Semantic search over stored document chunks, and the ``reindex`` task type.

A tenant's search reads one embedding space (``tenant_spaces``): the space of its first
stored document, moved by ``reindex``. The query is embedded by that space's embedder, which
need not be the configured one: after ``TASKSTREAM_EMBEDDER`` changes, search keeps
answering from the old vectors until the tenant's reindex switches it, in one transaction,
to the vectors of the new model written beside the old.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskstream.core.settings import Settings
    from taskstream.core.store_search import Pool


@dataclass(frozen=True, slots=True)
class SearchHit:
    upload_id: str
    filename: str
    chunk_index: int
    page: int | None
    score: float  # cosine similarity in the tenant's space: 1 is the same direction
    text: str
    task_id: str = ""


async def search_documents(pool: Pool, owner: str | None, query: str, k: int = 5,
                           *, settings: Settings | None = None) -> list[SearchHit]:
    """The ``k`` chunks nearest ``query``: ``owner``'s, or (None, admins) every tenant's whose
    search reads the configured embedder's space. Empty when nothing is stored yet."""
    from taskstream.builtin.embedding import configured_space, embedder_for
    from taskstream.core import store_search
    from taskstream.core.settings import Settings

    settings = settings or Settings()
    if owner is not None:
        row = await store_search.tenant_space(pool, owner)
        if row is None:
            return []
        space_id, space = row.space_id, row.space
    else:
        space = configured_space(settings)
        found = await store_search.space_by_identity(pool, space)
        if found is None:
            return []
        space_id = found
    vector = (await embedder_for(space, settings).embed([query]))[0]
    hits = await store_search.search(pool, space_id, space.dim, vector, owner, k,
                                     settings.search_ef)
    return [SearchHit(h.upload_id, h.filename, h.chunk_index, h.page, h.score, h.text,
                      h.task_id) for h in hits]


def hit_json(hit: SearchHit) -> dict[str, Any]:
    return asdict(hit)


def needs_admin(task_type: str, params: dict[str, Any]) -> bool:
    """A submission only an admin may make (checked where the caller is known): ``reindex``
    of every tenant's chunks."""
    return task_type == "reindex" and bool(params.get("all_tenants"))
