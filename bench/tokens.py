"""Token streaming: R concurrent runs writing 50 tokens/s each to their text stream, followed
by C SSE clients (C/R per run) and R WebSocket clients (one per run) on one web process.

* **Delta latency, worker → client**: every token is its own wall-clock stamp
  (``bench_tokens``); a client's latency sample is its receive time minus the stamp, per token,
  so the coalescing into ~50 ms frames is included. SSE and WebSocket measured side by side.
* **Database writes**, once with the runs at 0 tokens/s and once at 50: the events stored per
  run (exact: created, started, completed, plus the one ``text`` event at 50 tokens/s — no
  row per token), and the database's commits/s over the streaming window
  (``pg_stat_database.xact_commit`` of the bench database: every transaction, reads included;
  PostgreSQL reports it with up to a second's delay, so it is noisy over a few seconds).
* Correctness: every client's text, put together from its token frames at their offsets (no
  gap, no duplicate), equals the run's durable ``text`` event.
"""

import asyncio
import contextlib
import json
import os
import re
import time
from typing import Any

import asyncpg
import websockets
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.common import (
    Outcome,
    Row,
    Run,
    count_status,
    cpu_seconds,
    host_port,
    median,
    percentile,
    quiet_gc,
    ratio,
    sched_seconds,
    submit_many,
    wait_for,
)
from bench.net import SSEPool, SSEProtocol, Stream
from bench.streams import WORKER_ENV, rss
from bench.ticks import TOKENS
from taskstream.core.constants import task_channel
from taskstream.core.live import TokenFrame, is_token_message
from taskstream.devservices.processes import WebServer, WorkerProc

RATE = 50.0
STAMP = re.compile(r"\[(\d+\.\d+)\]")


class Texts:
    """Per client: the text its token frames make, and whether they were contiguous."""

    def __init__(self) -> None:
        self.text: dict[int, str] = {}
        self.ok: dict[int, bool] = {}
        self.latencies: list[float] = []
        self.frames = 0

    def frame(self, client: int, frame: dict[str, Any], now: float) -> None:
        self.frames += 1
        have = self.text.get(client, "")
        if frame["offset"] != len(have):
            self.ok[client] = False
        self.text[client] = have + frame["delta"]
        self.ok.setdefault(client, True)
        self.latencies.extend(now - float(t) for t in STAMP.findall(frame["delta"]))


async def _db_stats(conn: asyncpg.Connection, db: str) -> tuple[int, int, int]:
    """(transactions committed, rows written, WAL bytes) so far."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    r = await conn.fetchrow(
        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS written, "
        "pg_current_wal_lsn() - '0/0'::pg_lsn AS wal FROM pg_stat_database WHERE datname = $1",
        db)
    assert r is not None
    return int(r["xact_commit"]), int(r["written"]), int(r["wal"])


async def tokens(run: Run) -> Outcome:
    env, sz, out = run.env, run.sizes, Outcome()
    web = await env.web("web-tokens")
    workers = await env.workers(1, "worker-tokens", **WORKER_ENV)
    host, port = host_port(web.url)
    pool = await run.pool()
    per: dict[str, list[float]] = {k: [] for k in (
        "sse_p50", "sse_p99", "ws_p50", "ws_p99", "commits_0", "commits_50", "frames_s",
        "events_0", "events_50", "web_cpu_us_per_frame")}
    try:
        for r in range(sz.stream_rounds):
            for rate in (0.0, RATE) if r % 2 == 0 else (RATE, 0.0):
                row = await _round(run, out, web, workers[0], host, port, pool, rate)
                row["round"] = r
                out.rounds.append(row)
                per["commits_50" if rate else "commits_0"].append(row["commits_per_s"])
                per["events_50" if rate else "events_0"].append(row["events_per_run"])
                if rate:
                    for k in ("sse_p50", "sse_p99", "ws_p50", "ws_p99", "frames_s",
                              "web_cpu_us_per_frame"):
                        if row[k] is not None:
                            per[k].append(row[k])
                run.log(f"tokens {rate:g}/s round {r}: CPU share {row['cpu_share']}, "
                        f"CPU wait share {row['cpu_wait_share']}, "
                        f"web CPU/frame {row['web_cpu_us_per_frame']} µs, load "
                        f"{row['load_average']:.1f}, tokens received/s "
                        f"{row['tokens_received_per_s']:.0f}; "
                        f"commits/s {row['commits_per_s']:.1f}, "
                        f"rows written/s {row['rows_written_per_s']:.1f}, "
                        f"WAL {row['wal_kb_per_s']:.1f} KB/s"
                        + (f", Redis-direct p50 {row['redis_p50']:.1f} "
                           f"p99 {row['redis_p99']:.1f} ms"
                           f", SSE p50 {row['sse_p50']:.1f} p99 {row['sse_p99']:.1f} ms, "
                           f"WS p50 {row['ws_p50']:.1f} p99 {row['ws_p99']:.1f} ms"
                           if rate else ""))
        c0, c50 = median(per["commits_0"]), median(per["commits_50"])
        e0, e50 = median(per["events_0"]), median(per["events_50"])
        what = f"{sz.token_runs} runs x {RATE:g} tokens/s"
        out.rows += [
            Row("5 token streaming", f"delta latency p50, {sz.token_clients} SSE clients",
                median(per["sse_p50"]), "ms"),
            Row("5 token streaming", f"delta latency p99, {sz.token_clients} SSE clients",
                median(per["sse_p99"]), "ms", target="<= 100 ms",
                met=_le(median(per["sse_p99"]), 100)),
            Row("5 token streaming", f"delta latency p50, {sz.token_runs} WebSocket clients",
                median(per["ws_p50"]), "ms"),
            Row("5 token streaming", f"delta latency p99, {sz.token_runs} WebSocket clients",
                median(per["ws_p99"]), "ms"),
            Row("5 token streaming", f"token frames/s published ({what})",
                median(per["frames_s"]), "/s"),
            Row("5 token streaming", "web CPU per token frame delivered to a client",
                median(per["web_cpu_us_per_frame"]), "µs"),
            Row("5 token streaming", f"DB commits/s while streaming, {what}", c50, "/s",
                baseline="same runs at 0 tokens/s", baseline_value=c0, ratio=ratio(c50, c0)),
            Row("5 token streaming", f"events stored per run, {what}", e50, "",
                baseline="same runs at 0 tokens/s", baseline_value=e0,
                target="<= 0 tokens/s + 1 (no row per token)",
                met=(e50 is not None and e0 is not None and e50 <= e0 + 1)),
        ]
        out.notes.append("delta latency per token: client receive time - the worker's stamp "
                         "at write(), so the ~50 ms coalescing into frames is included")
    finally:
        await pool.close()
        env.stop([*workers, web])
    return out


def _le(x: float | None, bound: float) -> bool | None:
    return None if x is None else x <= bound


async def _round(run: Run, out: Outcome, web: WebServer, worker: WorkerProc, host: str,
                 port: int, pool: asyncpg.Pool, rate: float) -> dict[str, Any]:
    env, sz, url = run.env, run.sizes, web.url
    await env.reset()
    n, clients, secs = sz.token_runs, sz.token_clients, sz.token_seconds
    lead = 5.0 + clients / 40  # every client is connected before the first token
    start_at = time.time() + lead
    bodies = [{"type": TOKENS, "params": {"rate": rate, "seconds": secs, "start_at": start_at}}
              for _ in range(n)]
    ids, _, _ = await submit_many(url, bodies, 32)

    async def running() -> bool:
        return await count_status(pool, "running") >= n

    if not await wait_for(running, 60, 0.05):
        raise RuntimeError(f"only {await count_status(pool, 'running')}/{n} runs running")
    name = f"tokens {rate:g}/s"
    sse_texts = Texts()
    index: dict[int, int] = {}  # id(stream) -> client number

    def on_message(s: Stream, msg: dict[str, Any]) -> None:
        if "delta" in msg:
            sse_texts.frame(index.setdefault(id(s), len(index)), msg, time.time())

    streams = SSEPool(host, port)
    streams_paths = [f"/tasks/{ids[i % n]}/stream" for i in range(clients)]
    ws_texts = Texts()
    ws_task = asyncio.create_task(_ws_clients(url, env.token, ids, ws_texts))
    # A direct pub/sub reader on a few runs' channels: how late frames leave Redis, without
    # the web process (worker write() -> script PUBLISH -> here).
    redis_lat: list[float] = []
    probe = asyncio.create_task(_redis_probe(env.redis_url, [
        task_channel(env.namespace, i) for i in ids[:10]], redis_lat))
    rss0 = rss(web)
    pids = [web.pid, worker.pid, os.getpid()]
    with quiet_gc():
        await _open(streams, streams_paths, on_message)
        late = time.time() - start_at
        out.check(f"{name}: every client connected before the first token", late < 0)
        conn = await asyncpg.connect(env.database_url)
        try:
            await asyncio.sleep(max(0.0, start_at + 1.0 - time.time()))
            s0, t0 = await _db_stats(conn, env.db_name), time.time()
            cpu0 = [cpu_seconds([p]) for p in pids]
            sch0 = [sched_seconds(p) for p in pids]
            got0 = len(sse_texts.latencies) + len(ws_texts.latencies)
            frames0 = sse_texts.frames + ws_texts.frames
            await asyncio.sleep(max(0.0, start_at + secs - 0.5 - time.time()))
            s1, t1 = await _db_stats(conn, env.db_name), time.time()
            cpu1 = [cpu_seconds([p]) for p in pids]
            sch1 = [sched_seconds(p) for p in pids]
            got1 = len(sse_texts.latencies) + len(ws_texts.latencies)
            frames1 = sse_texts.frames + ws_texts.frames
        finally:
            await conn.close()
        ok = await streams.wait(start_at + secs + 60 - time.time())
        frames_ws = await asyncio.wait_for(ws_task, 60)
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
    rss1 = rss(web)
    streams.close()
    out.check(f"{name}: every SSE stream reached the terminal event",
              ok and all(s.status == 200 and s.terminal for s in streams.streams))
    events = int(await pool.fetchval("SELECT count(*) FROM task_events") or 0)
    durable = dict(await pool.fetch(
        "SELECT task_id::text, data->>'text' FROM task_events WHERE type = 'text'"))
    expect_tokens = round(rate * secs)
    out.check(f"{name}: every run stored its text once", len(durable) == n and all(
        len(STAMP.findall(t)) == expect_tokens for t in durable.values()))
    by_client = {index.get(id(s)): s.path.split("/")[2] for s in streams.streams}
    if rate:
        out.check(f"{name}: every SSE client's tokens are the durable text, no gap or repeat",
                  len(sse_texts.text) == clients and all(
                      sse_texts.ok[c] and sse_texts.text[c] == durable.get(by_client[c])
                      for c in sse_texts.text))
        out.check(f"{name}: every WebSocket client's tokens are the durable text",
                  len(ws_texts.text) == n and all(
                      ws_texts.ok[c] and ws_texts.text[c] == durable.get(ids[c])
                      for c in ws_texts.text))
    lat_sse, lat_ws = sse_texts.latencies, ws_texts.latencies
    return {"rate": rate, "runs": n, "sse_clients": clients, "ws_clients": n,
            "opened_late_s": max(0.0, late),
            "commits_per_s": (s1[0] - s0[0]) / (t1 - t0),
            "rows_written_per_s": (s1[1] - s0[1]) / (t1 - t0),
            "events_per_run": events / n,
            "wal_kb_per_s": (s1[2] - s0[2]) / (t1 - t0) / 1024,
            "sse_samples": len(lat_sse), "ws_samples": len(lat_ws),
            "sse_p50": _ms(percentile(lat_sse, 50)), "sse_p99": _ms(percentile(lat_sse, 99)),
            "redis_p50": _ms(percentile(redis_lat, 50)),
            "redis_p99": _ms(percentile(redis_lat, 99)),
            "ws_p50": _ms(percentile(lat_ws, 50)), "ws_p99": _ms(percentile(lat_ws, 99)),
            "frames_s": frames_ws / secs, "web_rss_growth_mb": (rss1 - rss0) / 2**20,
            "cpu_share": {k: (b - a) / (t1 - t0) for k, a, b in zip(
                ("web", "worker", "bench clients"), cpu0, cpu1, strict=True)},
            # Seconds per second each process spent runnable but waiting for a CPU: high
            # with a low cpu_share means the machine starved it, not that it slept.
            "cpu_wait_share": {k: (b[1] - a[1]) / (t1 - t0) for k, a, b in zip(
                ("web", "worker", "bench clients"), sch0, sch1, strict=True)},
            "tokens_received_per_s": (got1 - got0) / (t1 - t0),
            "frames_delivered_per_s": (frames1 - frames0) / (t1 - t0),
            "web_cpu_us_per_frame": (cpu1[0] - cpu0[0]) / (frames1 - frames0) * 1e6
            if frames1 > frames0 else None,
            "load_average": os.getloadavg()[0]}


async def _open(streams: SSEPool, paths: list[str], on_message: Any) -> None:
    """SSEPool.open, with a message callback (for the token frames)."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(200)

    async def one(path: str) -> None:
        s = Stream(path)
        fut: asyncio.Future[None] = loop.create_future()
        opened: asyncio.Future[None] = loop.create_future()
        async with sem:
            t, _ = await loop.create_connection(
                lambda: SSEProtocol(s, streams.host, streams.port, False, fut,
                                    on_message=on_message, opened=opened),
                streams.host, streams.port)
            await asyncio.wait([opened, fut], return_when=asyncio.FIRST_COMPLETED)
        streams.streams.append(s)
        streams.done.append(fut)
        streams.transports.append(t)

    await asyncio.gather(*(one(p) for p in paths))


async def _ws_clients(url: str, token: str | None, ids: list[str], texts: Texts) -> int:
    """One WebSocket per run, subscribed to it, until its end; returns the frames seen."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    frames = 0

    async def one(i: int, tid: str) -> None:
        nonlocal frames
        async with websockets.connect(url.replace("http://", "ws://") + "/ws",
                                      additional_headers=headers) as ws:
            await ws.send(json.dumps({"op": "subscribe", "task_id": tid}))
            async for raw in ws:
                now = time.time()
                m = json.loads(raw)
                if m["kind"] == "token":
                    frames += 1
                    texts.frame(i, m["frame"], now)
                elif m["kind"] == "end":
                    return
                elif m["kind"] == "error":
                    raise RuntimeError(f"WebSocket error: {m}")

    await asyncio.gather(*(one(i, tid) for i, tid in enumerate(ids)))
    return frames


async def _redis_probe(redis_url: str, channels: list[str], out: list[float]) -> None:
    """Latency per token as published: receive time on a plain subscriber - the stamp."""
    r = Redis.from_url(redis_url)
    try:
        while True:
            try:
                async with r.pubsub() as ps:
                    await ps.subscribe(*channels)
                    while True:
                        msg = await ps.get_message(ignore_subscribe_messages=True,
                                                   timeout=1.0)
                        if msg is None:
                            continue
                        now, data = time.time(), msg["data"]
                        if is_token_message(data):
                            out.extend(now - float(t) for t in STAMP.findall(
                                TokenFrame.decode(data[1:]).delta))
            except (RedisError, OSError):
                await asyncio.sleep(0.1)  # the shared server dropped us: subscribe again
    finally:
        await r.aclose()


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000
