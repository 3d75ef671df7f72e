"""Scenario ``batches`` (issue 12): ``POST /batches`` of 1,000 tasks on one web process
(tasks accepted per second: the request's wall time, children validated, inserted with
their events in one transaction, published and queued), and a batch of PDFs end to end
(one multipart upload -> every document_process child done): documents/s and the parent
stream's update rate while its children report.
"""

import asyncio
import time
from typing import Any

import httpx
import orjson

from bench.common import Outcome, Row, Run, median
from bench.net import HttpConn, auth_headers
from tests.pdfs import make_pdf

NOOP = {"type": "noop", "params": {}}
TOPICS = ["orbital mechanics of small satellites", "sourdough fermentation and gluten",
          "medieval trade routes across the baltic", "protein folding energy landscapes",
          "urban heat islands and tree canopy"]


def _pdf(i: int) -> bytes:
    words = f"document {i} about {TOPICS[i % len(TOPICS)]} " * 40
    return make_pdf([words, words[::-1], f"final page of document {i} " * 30])


async def _submit_rounds(run: Run, url: str, children: int, rounds: int, out: Outcome
                         ) -> list[float]:
    host, port = url.removeprefix("http://").split(":")
    conn = HttpConn(host, int(port))
    rates: list[float] = []
    pool = await run.pool()
    try:
        body = {"tasks": [NOOP] * children}
        await conn.request("POST", "/batches", {"tasks": [NOOP] * 10})  # warm up
        for r in range(rounds):
            t0 = time.perf_counter()
            status, data = await conn.request("POST", "/batches", body)
            wall = time.perf_counter() - t0
            made = orjson.loads(data) if status == 202 else {}
            stored = await pool.fetchval(
                "SELECT count(*) FROM tasks WHERE parent_id = $1::uuid",
                made.get("task_id")) if made else 0
            out.check(f"batches submit {children}: 202 and every child stored",
                      status == 202 and stored == children == len(made.get("children", [])))
            rates.append(children / wall)
            out.rounds.append({"kind": "submit", "round": r, "children": children,
                               "seconds": wall, "tasks_per_s": rates[-1]})
            run.log(f"batches submit round {r}: {children} tasks in {wall * 1000:.0f} ms "
                    f"= {rates[-1]:.0f} tasks/s")
    finally:
        await conn.close()
        await pool.close()
    return rates


async def _documents_round(run: Run, url: str, n: int, r: int, out: Outcome
                           ) -> dict[str, Any]:
    files = [("file", (f"doc{i}.pdf", _pdf(i), "application/pdf")) for i in range(n)]
    arrivals: list[float] = []
    ended: list[str] = []

    async with httpx.AsyncClient(base_url=url, headers=auth_headers(), timeout=600) as http:
        t0 = time.perf_counter()
        resp = await http.post("/upload", files=files)
        if resp.status_code != 202:
            raise RuntimeError(f"upload -> {resp.status_code}: {resp.text[:300]}")
        batch = resp.json()
        accepted = time.perf_counter() - t0

        async def follow() -> None:
            async with http.stream("GET", f"/tasks/{batch['task_id']}/stream") as s:
                async for line in s.aiter_lines():
                    if line.startswith("data:"):
                        arrivals.append(time.perf_counter())
                        ev = orjson.loads(line[5:])
                        if ev["type"] == "aggregate":
                            ended.extend(e["task_id"] for e in ev["data"]["finished"])

        await asyncio.wait_for(follow(), 600)
        seconds = time.perf_counter() - t0
        final = (await http.get(f"/batches/{batch['task_id']}?children=false")).json()
    out.check(f"batches documents {n}: every child completed",
              final["counts"]["completed"] == n and final["status"] == "completed")
    out.check(f"batches documents {n}: each child's end on the parent stream once",
              sorted(ended) == sorted(c["task_id"] for c in batch["children"]))
    span = (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    per_second: dict[int, int] = {}
    for a in arrivals:
        per_second[int(a - arrivals[0])] = per_second.get(int(a - arrivals[0]), 0) + 1
    row = {"kind": "documents", "round": r, "documents": n, "seconds": seconds,
           "upload_seconds": accepted, "docs_per_s": n / seconds,
           "parent_events": len(arrivals),
           "parent_events_per_s": len(arrivals) / span if span else 0.0,
           "parent_events_max_1s": max(per_second.values(), default=0)}
    out.rounds.append(row)
    run.log(f"batches documents round {r}: {n} PDFs in {seconds:.1f} s "
            f"({row['docs_per_s']:.1f}/s); parent stream {len(arrivals)} events, "
            f"{row['parent_events_per_s']:.1f}/s, max {row['parent_events_max_1s']} in 1 s")
    return row


async def batches(run: Run) -> Outcome:
    env, out = run.env, Outcome()
    tiny = run.mode == "tiny"
    children = 100 if tiny else 1000
    docs = 5 if tiny else 100
    web = await env.web("web-batches")
    try:
        rates = await _submit_rounds(run, web.url, children, 1 if tiny else 5, out)
        rate = median(rates)
        out.rows.append(Row("9 batches", f"POST /batches of {children}: tasks accepted/s",
                            rate, "tasks/s", target=">= 10,000",
                            met=(rate or 0) >= 10_000))
        await env.reset()
        workers = await env.workers(1, "worker-batches")
        try:
            rows = [await _documents_round(run, web.url, docs, r, out)
                    for r in range(1 if tiny else run.sizes.stream_rounds)]
        finally:
            env.stop(workers)
        out.rows += [
            Row("9 batches", f"{docs}-PDF batch end to end, 1 worker",
                median([x["docs_per_s"] for x in rows]), "docs/s"),
            Row("9 batches", "parent stream updates/s while children run",
                median([x["parent_events_per_s"] for x in rows]), "events/s",
                target="a few (<= 10)",
                met=all(x["parent_events_max_1s"] <= 10 for x in rows)),
        ]
    finally:
        env.stop([web])
    return out


