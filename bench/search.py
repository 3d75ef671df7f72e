"""Scenario ``search``: embedding throughput and search latency over a large chunk store.

1. Documents end to end: text documents of ~20 chunks uploaded over HTTP and processed by
   one worker (parse, chunk, embed with wordllama, store with their vectors) until every task
   is completed: documents/s and chunks embedded/s per worker.
2. The embedder alone, in this process: chunks of ~1,000 characters embedded/s (one thread,
   batches of 32, as document_process sends them).
3. A store of ``search_chunks`` chunks (100,000 in --quick) for the bench tenant: texts drawn
   from ten topic vocabularies, ``search_texts`` of them embedded for real by wordllama; each
   stored chunk's vector is its text's real vector (at least half) mixed with two others in
   random proportions plus a little noise, so the 100,000 vectors are distinct and spread
   like the model's. Loaded with COPY, then the
   space's HNSW index is built (its build time is reported).
4. ``GET /search?q=…&k=10`` over HTTP (keep-alive, one client: the latency of one query,
   embedding it included) for ``search_queries`` queries: p50/p99; and recall@10 of the HNSW
   answer against an exact scan for a sample of queries.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.parse
import uuid
from typing import Any

import httpx

from bench.common import Outcome, Row, Run, count_status, median, percentile, wait_for
from bench.net import HttpConn

TOPICS: dict[str, list[str]] = {
    "bees": "hive colony queen worker drone nectar pollen honey comb apiary smoker swarm "
            "brood frame beekeeper wax flower forage varroa mite".split(),
    "volcano": "magma lava eruption crater ash basalt plume tectonic caldera vent pumice "
               "tremor geologist summit molten pyroclastic slope hotspot".split(),
    "bread": "dough flour starter yeast oven crust crumb knead loaf ferment proof baker "
             "rye wheat bake sourdough salt water rise".split(),
    "mortgage": "loan interest rate lender borrower deposit repayment bank principal credit "
                "house equity fixed variable term instalment debt".split(),
    "football": "goal striker defender match league referee penalty stadium coach kick "
                "team season transfer keeper pitch tactics fans".split(),
    "astronomy": "galaxy star planet orbit telescope nebula comet supernova gravity moon "
                 "light year cosmos asteroid observatory eclipse".split(),
    "medicine": "patient doctor diagnosis symptom treatment hospital nurse vaccine dose "
                "infection surgery therapy clinic prescription recovery".split(),
    "sailing": "boat sail wind mast hull keel harbour anchor tide crew rudder deck "
               "voyage navigation knot mooring".split(),
    "coding": "function variable compiler loop bug test deploy server database query "
              "commit branch refactor module library runtime".split(),
    "garden": "soil seed compost weed prune bloom shrub root harvest mulch spade "
              "greenhouse tomato rose hedge watering".split(),
}
GENERAL = ("the a of and to in is was for on with by at from that this it as are be has "
           "have they we their which when after before during while").split()
QUERIES = [
    "how do insects turn flowers into something sweet", "an exploding mountain of fire",
    "baking a loaf with a natural leaven", "paying back money borrowed for a home",
    "the team that scored in the final minute", "looking at distant suns through a lens",
    "a sick person gets treated by a physician", "crossing the sea with the breeze",
    "fixing a crash in a program", "growing vegetables in the backyard",
]


def _text(rng: random.Random, topic: str, words: int) -> str:
    vocab = TOPICS[topic]
    return " ".join(rng.choice(vocab) if rng.random() < 0.7 else rng.choice(GENERAL)
                    for _ in range(words)).capitalize() + "."


async def _documents(run: Run, out: Outcome, docs: int) -> None:
    env = run.env
    web = await env.web("web-search")
    workers = await env.workers(1, "worker-search")
    pool = await run.pool()
    rng = random.Random(1)
    headers = {"Authorization": f"Bearer {env.token}"} if env.token else {}
    try:
        await env.reset()
        bodies = [" ".join(_text(rng, rng.choice(list(TOPICS)), 150) for _ in range(20))
                  for _ in range(docs)]
        t0 = time.perf_counter()
        async with httpx.AsyncClient(base_url=web.url, headers=headers, timeout=60) as c:
            for i, body in enumerate(bodies):
                r = await c.post("/upload", files={"file": (f"doc{i}.txt", body.encode(),
                                                            "text/plain")})
                if r.status_code != 202:
                    raise RuntimeError(f"POST /upload -> {r.status_code}: {r.text[:300]}")

        async def done() -> bool:
            return await count_status(pool, "completed") >= docs

        ok = await wait_for(done, 600, 0.02)
        seconds = time.perf_counter() - t0
        chunks = int(await pool.fetchval("SELECT count(*) FROM chunk_vectors"))
        out.check("search documents: every document processed and its vectors stored",
                  ok and chunks >= docs)
        out.rounds.append({"part": "documents", "docs": docs, "chunks": chunks,
                           "seconds": seconds})
        out.rows += [
            Row("8 search", "documents end to end (upload -> searchable), 1 worker",
                docs / seconds, "docs/s"),
            Row("8 search", "chunks embedded and stored per second, 1 worker",
                chunks / seconds, "chunks/s"),
        ]
        run.log(f"search documents: {docs} docs, {chunks} chunks in {seconds:.1f}s")
    finally:
        await pool.close()
        env.stop([*workers, web])


async def _load(run: Run, out: Outcome, n: int, distinct: int) -> Any:
    """The chunk store for the bench tenant; returns the embedder used."""
    import numpy as np

    from taskstream.builtin.embedding import WordLlamaEmbedder, space_of
    from taskstream.core import store, store_search

    rng = random.Random(2)
    embedder = WordLlamaEmbedder()
    embedder.warm()
    topics = list(TOPICS)
    texts = [_text(rng, topics[i % len(topics)], 150) for i in range(distinct)]
    t0 = time.perf_counter()
    base: list[list[float]] = []
    for i in range(0, len(texts), 32):
        base.extend(await asyncio.to_thread(embedder.embed_sync, texts[i:i + 32]))
    embed_s = time.perf_counter() - t0
    out.rows.append(Row("8 search", "wordllama alone: chunks (~1,000 chars) embedded/s, "
                        "1 thread", distinct / embed_s, "chunks/s"))
    run.log(f"search: embedded {distinct} texts in {embed_s:.1f}s")

    vecs = np.asarray(base, dtype=np.float32)
    nrng = np.random.default_rng(3)
    # Each stored vector: its text's vector plus two others, in random proportions (the
    # text's at least half), so 100,000 distinct vectors spread like the model's, not
    # clusters of near-copies of the embedded texts.
    a = np.arange(n) % distinct
    b, c = nrng.integers(0, distinct, n), nrng.integers(0, distinct, n)
    w = nrng.dirichlet((4.0, 1.0, 1.0), n).astype(np.float32)
    w[:, 0] = np.maximum(w[:, 0], 0.5)
    mixed = (w[:, :1] * vecs[a] + w[:, 1:2] * vecs[b] + w[:, 2:] * vecs[c]
             + nrng.normal(0, 0.01, (n, vecs.shape[1])))
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    mixed = mixed.astype(np.float32)

    pool = await run.pool()
    try:
        space_id = await store_search.ensure_space(pool, space_of(embedder))
        await pool.execute(f"DROP INDEX IF EXISTS chunk_vectors_hnsw_{space_id}")
        per_doc = 100
        t0 = time.perf_counter()
        async with pool.acquire() as conn:
            await store.ensure_tenant(conn, "bench")
            for start in range(0, n, 10_000):
                end = min(n, start + 10_000)
                docs = [(uuid.uuid4(), uuid.uuid4()) for _ in range(start, end, per_doc)]
                await conn.executemany(
                    """INSERT INTO uploads (upload_id, owner, filename, content_type, size, sha256)
                       VALUES ($1, 'bench', $2, 'text/plain', 0, '')""",
                    [(u, f"synthetic-{t}.txt") for t, u in docs])
                await conn.executemany(
                    """INSERT INTO tasks (task_id, owner, task_type, params, status)
                       VALUES ($1, 'bench', 'document_process', $2::jsonb, 'completed')""",
                    [(t, f'{{"upload_id": "{u}"}}') for t, u in docs])
                rows = []
                for j in range(start, end):
                    t, u = docs[(j - start) // per_doc]
                    rows.append((t, j % per_doc, "bench", u, texts[a[j]], mixed[j].tolist()))
                async with conn.transaction():
                    await store_search.insert_chunks_bulk(conn, space_id, rows)
            await conn.execute(
                """INSERT INTO tenant_spaces (owner, space_id) VALUES ('bench', $1)
                   ON CONFLICT (owner) DO UPDATE SET space_id = EXCLUDED.space_id""", space_id)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        async with pool.acquire() as conn:
            await conn.execute("SET maintenance_work_mem = '512MB'")
            await store_search.ensure_space(conn, space_of(embedder))  # builds the index
            await conn.execute("ANALYZE chunk_vectors")
        build_s = time.perf_counter() - t0
    finally:
        await pool.close()
    out.rows += [
        Row("8 search", f"load {n:,} chunks with vectors (COPY)", n / load_s, "chunks/s"),
        Row("8 search", f"HNSW index build over {n:,} vectors (m=16, ef_construction=64)",
            build_s, "s"),
    ]
    run.log(f"search: loaded {n} chunks in {load_s:.1f}s, index built in {build_s:.1f}s")
    return embedder, space_id


async def _queries(run: Run, out: Outcome, url: str, queries: int, rnd: int) -> list[float]:
    host, port = url.removeprefix("http://").split(":")
    conn = HttpConn(host, int(port))
    lat: list[float] = []
    ok = True
    rng = random.Random(10 + rnd)
    try:
        for i in range(queries):
            q = rng.choice(QUERIES) + (f" {rng.choice(TOPICS[rng.choice(list(TOPICS))])}"
                                       if i % 2 else "")
            path = "/search?" + urllib.parse.urlencode({"q": q, "k": 10})
            t0 = time.perf_counter()
            status, body = await conn.request("GET", path)
            lat.append(time.perf_counter() - t0)
            ok = ok and status == 200 and body.count(b'"upload_id"') == 10
    finally:
        await conn.close()
    out.check("search queries: every answer 200 with k hits", ok)
    return lat


async def _recall(run: Run, embedder: Any, space_id: int, sample: int) -> float:
    from taskstream.core import store_search

    pool = await run.pool()
    hits = total = 0
    try:
        for q in (QUERIES * (sample // len(QUERIES) + 1))[:sample]:
            vec = (await embedder.embed([q]))[0]
            approx = await store_search.search(pool, space_id, embedder.dim, vec, "bench", 10)
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL enable_indexscan = off")
                exact = await conn.fetch(
                    f"""SELECT task_id, chunk_index FROM chunk_vectors WHERE space_id = {space_id}
                        AND owner = 'bench' ORDER BY embedding::vector({embedder.dim}) <=>
                        $1::real[]::vector({embedder.dim}) LIMIT 10""", vec)
            truth = {(str(r["task_id"]), r["chunk_index"]) for r in exact}
            hits += len(truth & {(h.task_id, h.chunk_index) for h in approx})
            total += len(truth)
    finally:
        await pool.close()
    return hits / max(total, 1)


async def search(run: Run) -> Outcome:
    env, sz, out = run.env, run.sizes, Outcome()
    await _documents(run, out, sz.search_docs)
    await env.reset()
    embedder, space_id = await _load(run, out, sz.search_chunks, sz.search_texts)
    web = await env.web("web-search-q")
    p50s: list[float] = []
    p99s: list[float] = []
    try:
        await _queries(run, out, web.url, 20, -1)  # warm-up: the web loads the model
        for r in range(sz.rounds):
            lat = await _queries(run, out, web.url, sz.search_queries, r)
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            assert p50 is not None and p99 is not None
            p50s.append(p50 * 1e3)
            p99s.append(p99 * 1e3)
            out.rounds.append({"part": "queries", "round": r, "queries": len(lat),
                               "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3})
            run.log(f"search round {r}: p50 {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms")
    finally:
        env.stop([web])
    recall = await _recall(run, embedder, space_id, min(50, sz.search_queries))
    out.check("search: HNSW recall@10 against an exact scan >= 0.8", recall >= 0.8)
    n = f"{sz.search_chunks:,}"
    out.rows += [
        Row("8 search", f"GET /search k=10 over {n} chunks, p50 (one client)", median(p50s),
            "ms"),
        Row("8 search", f"GET /search k=10 over {n} chunks, p99 (one client)", median(p99s),
            "ms"),
        Row("8 search", "recall@10, HNSW (ef_search 64) vs exact scan", recall, ""),
    ]
    out.notes.append(
        f"{n} chunks: {sz.search_texts:,} texts embedded by wordllama, each stored vector its "
        "text's (>= half) mixed with two others plus noise; queries over HTTP embed the query "
        "in the web process (wordllama) and walk the space's HNSW index")
    return out
