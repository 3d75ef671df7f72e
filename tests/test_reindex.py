"""``reindex``: a change of embedding model, end to end, in a database of its own.

Documents are stored with wordllama; then the workers are switched to an OpenAI-compatible
endpoint (a real HTTP server in this process, answering slowly with wordllama's vectors under
another model name: a second, genuinely different space). A tenant's reindex runs in recorded
steps; its worker is SIGKILLed mid-way and the run resumes after its last recorded batch;
search keeps answering from the old vectors until the switch, then from the new ones; another
tenant is untouched until an admin's all-tenant reindex."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from taskstream.devservices.processes import WebServer, WorkerProc, fast_env
from taskstream.devservices.scratch import create_database, drop_database
from tests.conftest import eventually, wait_terminal
from tests.test_search import QUERIES, TOPICS, FakeOpenAI, _upload_topics

pytestmark = pytest.mark.timeout(300)


async def _search(c: httpx.AsyncClient, q: str, k: int = 3) -> list[dict[str, Any]]:
    r = await c.get("/search", params={"q": q, "k": k})
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()["hits"]
    return hits


async def _space_of(pool: asyncpg.Pool, owner: str) -> str:
    return str(await pool.fetchval(
        """SELECT s.kind || ':' || s.model FROM tenant_spaces t JOIN embedding_spaces s
           USING (space_id) WHERE t.owner = $1""", owner))


@pytest.fixture
async def world(backing: tuple[str, str], logs: Path) -> AsyncIterator[dict[str, Any]]:
    admin_pg, redis_url = backing
    name = f"ts_reindex_{uuid.uuid4().hex[:8]}"
    url = await create_database(admin_pg, name)
    env = fast_env(url, redis_url, f"r{uuid.uuid4().hex[:8]}", TASKSTREAM_AUTH="true",
                   TASKSTREAM_KEY_CACHE_SECONDS="0")
    from taskstream.core import auth, store_read
    from taskstream.core.db import create_engine

    engine = create_engine(url)
    keys: dict[str, str] = {}
    for who in ("cara", "dan", "root"):
        key_id, token, digest = auth.new_key()
        await store_read.create_api_key(engine, key_id, who, who,
                                        "admin" if who == "root" else "user", digest)
        keys[who] = token
    await engine.dispose()
    fake = FakeOpenAI(model="proxy-wordllama", delay=0.25)
    openai_env = {**env, "TASKSTREAM_EMBEDDER": "openai", "TASKSTREAM_EMBEDDING_URL": fake.url,
                  "TASKSTREAM_EMBEDDING_MODEL": "proxy-wordllama",
                  "TASKSTREAM_EMBEDDING_DIM": "256", "TASKSTREAM_EMBEDDING_API_KEY": "sk-x"}
    procs: list[Any] = []
    pool = await asyncpg.create_pool(url, min_size=1, max_size=3)
    try:
        web_old = WebServer(env, logs / "reindex-web-old.log").start()
        procs.append(web_old)
        yield {"env": env, "openai_env": openai_env, "keys": keys, "fake": fake,
               "web_old": web_old, "procs": procs, "pool": pool, "logs": logs}
    finally:
        await pool.close()
        for p in procs:
            p.stop()
        fake.close()
        await drop_database(admin_pg, name)


def _client(web: WebServer, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=web.url, timeout=30,
                             headers={"Authorization": f"Bearer {key}"})


async def test_reindex_switches_models_without_a_gap_and_resumes_after_a_kill(
        world: dict[str, Any]) -> None:
    keys, pool, fake, logs = world["keys"], world["pool"], world["fake"], world["logs"]
    old_worker = WorkerProc(world["env"], logs / "reindex-worker-old.log").start()
    world["procs"].append(old_worker)
    async with _client(world["web_old"], keys["cara"]) as cara, \
            _client(world["web_old"], keys["dan"]) as dan:
        cara_ids = await _upload_topics(cara, prefix="cara-")
        dan_ids = await _upload_topics(dan, prefix="dan-")
        before = {q: await _search(cara, q) for q in QUERIES.values()}
        for name, q in QUERIES.items():
            assert before[q][0]["upload_id"] == cara_ids[name]
        chunks = int(await pool.fetchval(
            "SELECT count(*) FROM document_chunks WHERE owner = 'cara'"))
        assert chunks >= len(TOPICS) and await _space_of(pool, "cara") == \
            "wordllama:l2_supercat_256"

        # Every worker now runs the new model (an operator's config change).
        old_worker.stop()
        new_worker = WorkerProc(world["openai_env"], logs / "reindex-worker-new.log").start()
        world["procs"].append(new_worker)
        r = await cara.post("/tasks", json={"type": "reindex", "params": {"batch": 1}})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]

        async def steps_done() -> list[str]:
            rows = await pool.fetch("SELECT name FROM task_steps WHERE task_id = $1::uuid",
                                    task_id)
            return [str(x["name"]) for x in rows]

        async def embedded(n: int) -> bool:
            return sum(s.startswith("embed-") for s in await steps_done()) >= n

        await eventually(lambda: embedded(2), timeout=60, interval=0.05)
        # Mid-reindex: new vectors stand beside the old, search still reads the old ones.
        assert await _space_of(pool, "cara") == "wordllama:l2_supercat_256"
        spaces = await pool.fetchval(
            "SELECT count(DISTINCT space_id) FROM chunk_vectors WHERE owner = 'cara'")
        assert spaces == 2
        for q, hits in before.items():
            during = await _search(cara, q)
            assert [(h["upload_id"], h["chunk_index"]) for h in during] == \
                [(h["upload_id"], h["chunk_index"]) for h in hits]
            assert [h["score"] for h in during] == pytest.approx([h["score"] for h in hits])

        # SIGKILL the worker inside a step; a new one resumes after the recorded batches.
        recorded = set(await steps_done())
        texts_before_kill = [t for req in list(fake.requests)
                             for t in req["body"]["input"]]
        new_worker.send_signal(signal.SIGKILL)
        new_worker.stop()
        assert not new_worker.alive
        resumed = WorkerProc(world["openai_env"], logs / "reindex-worker-resumed.log").start()
        world["procs"].append(resumed)
        done = await wait_terminal(cara, task_id, timeout=120)
        assert done["status"] == "completed", done
        result = done["result"]
        assert result["embedded"] == chunks and result["tenants"] == 1
        assert result["dropped_vectors"] == chunks and result["all_tenants"] is False
        assert result["space"] == "openai:proxy-wordllama/256"
        assert done["attempts"] >= 2  # the killed attempt and the one that finished

        # No recorded batch ran again: each text embedded before the kill by a step that was
        # recorded then was not sent to the endpoint again.
        steps = (await cara.get(f"/tasks/{task_id}/steps")).json()
        names = [s["name"] for s in steps]
        assert names[0] == "plan" and names[-1] == "switch"
        assert names[1:-1] == [f"embed-{i}" for i in range(chunks + 1)]  # the last: empty
        all_texts = [t for req in fake.requests for t in req["body"]["input"]]
        repeated = {t for t in texts_before_kill if all_texts.count(t) > 1}
        # at most the one batch in flight at the kill (batch=1: one chunk) went out twice,
        # plus the search queries (none went to the endpoint before the switch)
        assert len(repeated) <= 1, repeated
        assert len(recorded & set(names)) == len(recorded)

        # After the switch: search reads the new space (its queries go to the endpoint).
        assert await _space_of(pool, "cara") == "openai:proxy-wordllama"
        assert await pool.fetchval(
            "SELECT count(*) FROM chunk_vectors WHERE owner = 'cara'") == chunks
        web_new = WebServer(world["openai_env"], logs / "reindex-web-new.log").start()
        world["procs"].append(web_new)
        sent = len(fake.requests)
        async with _client(web_new, keys["cara"]) as cara_new:
            for name, q in QUERIES.items():
                hits = await _search(cara_new, q)
                assert hits[0]["upload_id"] == cara_ids[name]
                # the same model behind the endpoint: the same neighbours, nearly the same scores
                assert hits[0]["score"] == pytest.approx(before[q][0]["score"], abs=1e-3)
        assert len(fake.requests) == sent + len(QUERIES)

        # The other tenant was not touched: still on the old space, still answered.
        assert await _space_of(pool, "dan") == "wordllama:l2_supercat_256"
        hits = await _search(dan, QUERIES["volcanoes.pdf"])
        assert hits[0]["upload_id"] == dan_ids["volcanoes.pdf"]

    # An admin's reindex of every tenant moves dan too.
    fake.delay = 0
    async with _client(web_new, keys["root"]) as root, _client(web_new, keys["dan"]) as dan_new:
        r = await root.post("/tasks", json={"type": "reindex",
                                            "params": {"all_tenants": True, "batch": 100}})
        assert r.status_code == 202, r.text
        done = await wait_terminal(root, r.json()["task_id"], timeout=60)
        assert done["status"] == "completed", done
        assert done["result"]["all_tenants"] is True and done["result"]["tenants"] == 2
        assert await _space_of(pool, "dan") == "openai:proxy-wordllama"
        hits = await _search(dan_new, QUERIES["mortgages.pdf"])
        assert hits[0]["upload_id"] == dan_ids["mortgages.pdf"]
