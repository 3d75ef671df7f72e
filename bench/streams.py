"""Scenarios 3 and 4: push latency and fan-out, open-stream capacity, the cost of waiting.

Streams watch ``bench_tick`` tasks, which sleep until a common start time (so every stream is
open before the first event) and then report progress on a schedule, each event stamped with
the wall-clock time the worker reported it. Latency = receive time - stamp, on this machine's
one clock.
"""

import asyncio
import contextlib
import os
import time
from typing import Any

import asyncpg

from bench.common import (
    Outcome,
    Row,
    Run,
    backend_pids,
    count_status,
    host_port,
    median,
    percentile,
    port_open,
    quiet_gc,
    ratio,
    submit_many,
    wait_for,
)
from bench.cpu import CpuSampler
from bench.env import streams_allowed
from bench.net import HttpConn, SSEPool
from bench.ticks import TICK
from taskstream.devservices.processes import Proc, WebServer, free_port

WORKER_ENV = {"TASKSTREAM_WORKER_MAX_JOBS": "12000"}  # every tick task runs at once


def tick_bodies(n: int, *, count: int, interval: float, start_at: float) -> list[dict[str, Any]]:
    return [{"type": TICK, "params": {"count": count, "interval": interval,
                                      "start_at": start_at}} for _ in range(n)]


async def start_ticks(run: Run, web: WebServer, pool: asyncpg.Pool, n: int, *, count: int,
                      interval: float, lead: float) -> tuple[list[str], float]:
    """Submit n tick tasks starting ``lead`` seconds from now; wait until all are running."""
    start_at = time.time() + lead
    ids, _, _ = await submit_many(web.url, tick_bodies(n, count=count, interval=interval,
                                                       start_at=start_at), 32)

    async def running() -> bool:
        return await count_status(pool, "running") >= n

    if not await wait_for(running, 60, 0.05):
        raise RuntimeError(f"only {await count_status(pool, 'running')}/{n} tick tasks running")
    return ids, start_at


class CommitProbe:
    """Durable commits (one tiny INSERT every 20 ms) beside a latency round: every pushed
    event waits for its commit to reach the disk (persist, then publish), so a stall of the
    disk's fsync is a floor under push latency. Its max says whether the round met one."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.latencies: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "CommitProbe":
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (x int)")
            while True:
                t0 = time.perf_counter()
                await conn.execute("INSERT INTO bench_commit_probe VALUES (1)")
                self.latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.02)
        finally:
            await conn.close()


def rss(p: Proc) -> int:
    """Resident set size of a process, in bytes (Linux /proc)."""
    with open(f"/proc/{p.pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {p.pid}")


def check_streams(out: Outcome, name: str, pool_: SSEPool, expect_last_seq: int | None) -> None:
    ss = pool_.streams
    out.check(f"{name}: every stream answered 200", all(s.status == 200 for s in ss))
    out.check(f"{name}: every stream reached the terminal event", all(s.terminal for s in ss))
    out.check(f"{name}: ids 1,2,3... with no gap or repeat", all(s.seqs_ok for s in ss))
    if expect_last_seq is not None:
        out.check(f"{name}: every event received",
                  all(s.last_seq == expect_last_seq for s in ss))


#: The web process's SSE responses (TASKSTREAM_SSE_RESPONSE); latency and capacity measure
#: each (sse-starlette's is the default).
SSE_RESPONSES = ("starlette", "lean")
#: Opening a round's streams (submit, then every stream's headers and replay) may take up to
#: this many times the last measured time before the first tick is due; the rest is margin.
LEAD_MARGIN = 1.5
#: Opening times are scaled by the stream count only when measured on this many or more.
MIN_STREAMS_TO_SCALE = 100
#: A round whose streams were not all open before the first tick is run again (at most this
#: many times in all), with the lead from the opening time it measured.
OPEN_ATTEMPTS = 3


async def all_replayed(streams: SSEPool, at_least: int, within: float) -> bool:
    """Wait until every stream has received ``at_least`` messages (its replay: then it is
    subscribed, and every later event reaches it live)."""
    async def replayed() -> bool:
        return all(s.messages >= at_least or s.closed for s in streams.streams)

    return await wait_for(replayed, within, 0.02)


async def latency(run: Run) -> Outcome:
    """p50/p95/p99 push latency with 1, 1,000 and 5,000 concurrent streams on one web process,
    once per SSE response (sse-starlette's, the default, and the lean one), each on a web
    process of its own.

    With N streams: T = min(N, 100) tasks, N/T streams each, one event per task per second
    (so every stream receives one event a second); with one stream, 20 events a second.
    Every stream is open (headers received and its replay of the task's 'created' and
    'started' events read) before the first tick: the lead before the ticks start comes from
    the opening time measured in the previous round, and a round that still opened late is
    run again with a longer one — so the figure is push latency, not the cost of opening.
    """
    env, out = run.env, Outcome()
    workers = await env.workers(1, "worker-latency", **WORKER_ENV)
    pool = await run.pool()
    try:
        for response in SSE_RESPONSES:
            web = await env.web(f"web-latency-{response}", TASKSTREAM_SSE_RESPONSE=response)
            try:
                await _latency_of(run, out, web, [w.pid for w in workers], pool, response)
            finally:
                env.stop([web])
        out.notes.append("push latency includes the event's durable commit (persist, then "
                         "publish): a probe commits every 20 ms during each round, and its "
                         "slowest commit is the disk's stall in that round")
        out.notes.append("every stream is open (headers and replay received) before the "
                         "first tick: the lead is measured, and a round that opened late "
                         "is run again (opened_late_s, open_attempts in the rounds)")
        out.notes.append("the last tick of a round is also when every stream ends (its task "
                         "completes): the web ends N streams within that second while it "
                         "still pushes the other tasks' ticks, so it is the slowest")
    finally:
        await pool.close()
        env.stop(workers)
    return out


async def _latency_of(run: Run, out: Outcome, web: WebServer, worker_pids: list[int],
                      pool: asyncpg.Pool, response: str) -> None:
    """Every stream count's rounds on one web process with this SSE response."""
    sz = run.sizes
    opened: tuple[float, int] | None = None  # seconds to submit and open n streams, measured
    for n in sz.latency_streams:
        per: dict[str, list[float]] = {"p50": [], "p95": [], "p99": [], "p99_before_end": [],
                                       "commit_max": [], "late": []}
        cpu: dict[str, list[float]] = {}  # "<tick>:<figure>" -> rounds
        for r in range(sz.stream_rounds):
            for attempt in range(1, OPEN_ATTEMPTS + 1):
                row, opened_s = await _latency_round(run, out, web, worker_pids, pool, n, r,
                                                     attempt, opened)
                opened = (opened_s, n)
                if row["opened_late_s"] == 0 or attempt == OPEN_ATTEMPTS:
                    break
                run.log(f"latency n={n} round {r}: streams opened "
                        f"{row['opened_late_s']:.1f}s after the first tick; again with "
                        "a longer lead")
            row["response"] = response
            out.rounds.append(row)
            out.check(f"latency {n} ({response}): every stream open before the first tick",
                      row["opened_late_s"] == 0)
            for k in ("p50", "p95", "p99", "p99_before_end", "commit_max"):
                v = row[f"{k}_ms"]
                if isinstance(v, float):
                    per[k].append(v)
            per["late"].append(row["opened_late_s"])
            for tick in ("cpu_last_tick", "cpu_tick_before"):
                for k, v in (row.get(tick) or {}).items():
                    cpu.setdefault(f"{tick}:{k}", []).append(v)
        target = {1000: 10.0, 5000: 25.0}.get(n)
        p99 = median(per["p99"])
        late = max(per["late"])
        what = f"{n} streams ({response})"
        out.rows += [
            Row("3 push latency", f"p50, {what}", median(per["p50"]), "ms"),
            Row("3 push latency", f"p95, {what}", median(per["p95"]), "ms"),
            Row("3 push latency", f"p99, {what}", p99, "ms",
                target=f"<= {target:g} ms" if target else "",
                met=(p99 is not None and p99 <= target) if target else None),
            Row("3 push latency", f"p99 before the last tick (no stream ends yet), {what}",
                median(per["p99_before_end"]), "ms"),
            Row("3 push latency", f"slowest durable commit meanwhile, {what}",
                median(per["commit_max"]), "ms"),
            Row("3 push latency", f"streams opened after the first tick, {what} "
                "(worst round)", late, "s", target="0 s (all open first)", met=late == 0),
        ]
        # What bounds the slowest second: the web busy all of it, or waiting for a core.
        for tick, when in (("cpu_last_tick", "the last tick's second (every stream ends)"),
                           ("cpu_tick_before", "the second before it")):
            for k, label in (("web_cpu", "web on a CPU"), ("web_sys", "web in the kernel"),
                             ("web_wait", "web runnable, waiting for a CPU"),
                             ("machine_busy", "machine busy (all CPUs)"),
                             ("machine_steal", "machine stolen by the hypervisor")):
                v = median(cpu.get(f"{tick}:{k}", []))
                if v is not None:
                    out.rows.append(Row("3 push latency", f"{label}, {when}, {what}",
                                        100 * v, "%"))


async def _latency_round(run: Run, out: Outcome, web: WebServer, worker_pids: list[int],
                         pool: asyncpg.Pool, n: int, r: int, attempt: int,
                         opened_before: tuple[float, int] | None
                         ) -> tuple[dict[str, Any], float]:
    """One round: (its row, seconds from submitting the ticks to every stream open)."""
    env, sz = run.env, run.sizes
    host, port = host_port(web.url)
    await env.reset()
    tasks = 1 if n == 1 else min(n, 100)
    interval = 0.05 if n == 1 else 1.0
    count = max(1, round(sz.latency_seconds / interval))
    lead = 2.0 + n / 400
    if opened_before is not None:  # as long as last time, or longer per stream if more
        seconds, streams_then = opened_before
        # a round of a few streams measures the fixed cost (submitting, the tasks starting)
        per = n / streams_then if streams_then >= MIN_STREAMS_TO_SCALE else 1.0
        lead = max(lead, 1.0 + LEAD_MARGIN * seconds * max(1.0, per))
    lead *= attempt  # measured, yet late: the machine is busier than it was
    t0 = time.time()
    ids, start_at = await start_ticks(run, web, pool, tasks, count=count,
                                      interval=interval, lead=lead)
    rss0 = rss(web)
    streams = SSEPool(host, port)
    groups = {"web": [web.pid], "worker": worker_pids, "client": [os.getpid()],
              "postgres": await backend_pids(pool, wal_writers=True)}
    with quiet_gc(), CpuSampler(groups) as cpu:
        async with CommitProbe(env.database_url) as probe:
            await streams.open(
                [f"/tasks/{ids[i % tasks]}/stream" for i in range(n)], parallel=200)
            # 'created' and 'started' (the tick tasks are running): replayed, so subscribed
            await all_replayed(streams, 2, start_at + count * interval + 60 - time.time())
            opened = time.time()
            late = opened - start_at
            rss1 = rss(web)
            ok = await streams.wait(start_at + count * interval + 60 - time.time())
    streams.close()
    lat = streams.latencies()
    # The last tick is also when every stream ends: the other ticks' figure, apart.
    before_end = [x for s in streams.streams for x in s.latencies[:-1]]
    check_streams(out, f"latency {n}", streams, count + 3)
    out.check(f"latency {n}: streams finished in time", ok)
    row: dict[str, Any] = {
        "streams": n, "round": r, "tasks": tasks, "interval": interval,
        "samples": len(lat), "lead_s": lead, "open_attempts": attempt,
        "open_s": opened - t0, "opened_late_s": max(0.0, late),
        "p50_ms": _ms(percentile(lat, 50)), "p95_ms": _ms(percentile(lat, 95)),
        "p99_ms": _ms(percentile(lat, 99)), "max_ms": _ms(max(lat or [0])),
        "p99_before_end_ms": _ms(percentile(before_end, 99)),
        "rss_per_stream_kb": (rss1 - rss0) / n / 1024,
        "commit_p50_ms": _ms(percentile(probe.latencies, 50)),
        "commit_max_ms": _ms(max(probe.latencies or [0]))}
    if interval >= 0.5 and count >= 2:  # seconds long enough to read from 25 ms samples
        last = start_at + (count - 1) * interval
        row["cpu_last_tick"] = cpu.window(last, last + interval)
        row["cpu_tick_before"] = cpu.window(last - interval, last)
    run.log(f"latency n={n} round {r} ({web.name}): p50 {row['p50_ms']:.1f} ms, p99 "
            f"{row['p99_ms']:.1f} ms ({len(lat)} samples); streams open "
            f"{opened - t0:.1f}s after submitting, {-late:.1f}s before the first tick; "
            f"durable commit meanwhile: p50 {row['commit_p50_ms'] or 0:.1f} ms, "
            f"max {row['commit_max_ms'] or 0:.1f} ms{_cpu_text(row)}")
    return row, opened - t0


def _cpu_text(row: dict[str, Any]) -> str:
    def one(w: dict[str, float]) -> str:
        procs = ", ".join(f"{g} {100 * w[f'{g}_cpu']:.0f}% (kernel {100 * w[f'{g}_sys']:.0f}"
                          f"%; +{100 * w[f'{g}_wait']:.0f}% waiting)"
                          for g in ("web", "worker", "client", "postgres"))
        return (f"{procs}; machine busy {100 * w['machine_busy']:.0f}%, stolen "
                f"{100 * w['machine_steal']:.0f}%")
    last, before = row.get("cpu_last_tick"), row.get("cpu_tick_before")
    if not last or not before:
        return ""
    return f"; the last tick's second: {one(last)}; the second before: {one(before)}"


async def capacity(run: Run) -> Outcome:
    """Open N (10,000) idle streams on one fresh web process, once per SSE response: memory
    each, and all alive. The responses alternate in order round by round (the machine's
    state drifts), and each is compared with the lean one measured in the same run."""
    env, sz, out = run.env, run.sizes, Outcome()
    want = sz.capacity_streams
    n = min(want, streams_allowed())
    if n < want:  # a sandbox's hard limit: say so, and hold as many as it allows
        out.notes.append(f"{want:,} streams asked for; this machine's descriptor limit "
                         f"allows {n:,} per process, so {n:,} were opened")
    workers = await env.workers(1, "worker-capacity", **WORKER_ENV)
    pool = await run.pool()
    per: dict[str, list[float]] = {r: [] for r in SSE_RESPONSES}
    held: dict[str, list[int]] = {r: [] for r in SSE_RESPONSES}
    try:
        for r in range(sz.stream_rounds):
            for response in SSE_RESPONSES if r % 2 == 0 else SSE_RESPONSES[::-1]:
                kb, h = await _hold_streams(run, out, pool, n, response)
                per[response].append(kb)
                held[response].append(h)
        lean = median(per["lean"])
        for response in SSE_RESPONSES:
            kb_med = median(per[response])
            other = response != "lean"
            out.rows += [
                Row("3 fan-out", f"open streams held by one web process ({response})",
                    min(held[response]), "streams",
                    target=">= 20,000" if want >= 20_000 else f"all {want:,}",
                    met=min(held[response]) >= want),
                Row("3 fan-out", f"memory per idle stream, RSS ({response})", kb_med, "KB",
                    baseline="lean response" if other else "",
                    baseline_value=lean if other else None,
                    ratio=ratio(kb_med, lean) if other else None,
                    target="" if other else "<= 25 KB",
                    met=None if other else (kb_med is not None and kb_med <= 25)),
            ]
        out.notes.append("memory per stream: RSS growth of a fresh web process over N idle "
                         "streams, after a warm-up; TASKSTREAM_SSE_RESPONSE=starlette "
                         "(sse-starlette, ping task off) and =lean (hand-written)")
    finally:
        await pool.close()
        env.stop(workers)
    return out


async def _hold_streams(run: Run, out: Outcome, pool: asyncpg.Pool, n: int,
                        response: str) -> tuple[float, int]:
    """One round for one response: (KB of RSS per idle stream, streams held)."""
    env = run.env
    name = f"capacity {n} {response}"
    web = await env.web(f"web-capacity-{response}", TASKSTREAM_SSE_RESPONSE=response)
    host, port = host_port(web.url)
    try:
        await env.reset()
        tasks = min(n, 100)
        # The tasks stay quiet until cancelled, however long opening the streams takes.
        ids, _ = await start_ticks(run, web, pool, tasks, count=1, interval=0.0, lead=3600)
        warm = SSEPool(host, port)  # first-use allocations are not per-stream cost
        await warm.open([f"/tasks/{ids[i % tasks]}/stream" for i in range(min(n, 200))])
        warm.close()
        await asyncio.sleep(1.0)
        rss0 = rss(web)
        streams = SSEPool(host, port)
        t0 = time.perf_counter()
        await streams.open([f"/tasks/{ids[i % tasks]}/stream" for i in range(n)], parallel=200)
        open_s = time.perf_counter() - t0
        await asyncio.sleep(2.0)
        rss1 = rss(web)
        held = sum(1 for s in streams.streams if s.status == 200 and not s.closed)
        # Every stream must still be alive: cancel the tasks; each stream gets the
        # cancellation events and ends.
        conn = HttpConn(host, port)
        try:
            for tid in ids:
                status, _body = await conn.request("POST", f"/tasks/{tid}/cancel")
                out.check(f"{name}: cancel answered 200", status == 200)
        finally:
            await conn.close()
        ok = await streams.wait(120)
        streams.close()
        check_streams(out, name, streams, None)
        out.check(f"{name}: all streams open at once", held == n)
        out.check(f"{name}: streams finished in time", ok)
        per_kb = (rss1 - rss0) / n / 1024
        out.rounds.append({"response": response, "streams": n, "held": held,
                           "open_seconds": open_s, "rss_before_mb": rss0 / 2**20,
                           "rss_after_mb": rss1 / 2**20, "rss_per_stream_kb": per_kb})
        run.log(f"capacity ({response}): held {held}/{n} streams; {per_kb:.1f} KB each; "
                f"opened in {open_s:.1f}s")
        return per_kb, held
    finally:
        env.stop([web])


async def _xacts(conn: asyncpg.Connection) -> int:
    v = await conn.fetchval("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                            "WHERE datname = current_database()")
    return int(v)


async def _queries_per_second(conn: asyncpg.Connection, window: float, settle: float
                              ) -> float:
    """Transactions/s in our database over ``window`` (each pooled query is one transaction).

    PostgreSQL publishes a busy backend's counters about once a second, but an idle one's
    up to 10 s late (PGSTAT_IDLE_INTERVAL): so wait ``settle`` seconds after the last burst
    (opening the streams) before the window opens. Each read is itself one transaction,
    counted at the next read.
    """
    await asyncio.sleep(settle)
    prev = await _xacts(conn)
    await asyncio.sleep(1.1)
    prev = await _xacts(conn)
    t0 = time.monotonic()
    await asyncio.sleep(window)
    x1 = await _xacts(conn)
    return max(0.0, (x1 - prev - 1) / (time.monotonic() - t0))


async def waiting(run: Run) -> Outcome:
    """Database queries/s while N streams wait on running tasks; then the delivery latency.

    Same streams for the peer: the seed's design, each stream reading its task row once a
    second (``bench.entry polling``).
    """
    env, sz, out = run.env, run.sizes, Outcome()
    n = sz.waiting_streams
    web = await env.web("web-waiting")
    workers = await env.workers(1, "worker-waiting", **WORKER_ENV)
    pport = free_port()
    poller = env.spawn("polling", [env.python, "-m", "bench.entry", "polling", str(pport),
                                   env.database_url, "1.0"])
    pool = await run.pool()
    conn = await asyncpg.connect(env.database_url)
    count, interval = 3, 1.0
    settle = 11.0 if run.mode != "tiny" else 1.0
    res: dict[str, dict[str, list[float]]] = {}
    try:
        await wait_for(lambda: port_open(pport), 20, 0.1)
        for r in range(max(1, sz.stream_rounds - 1)):
            for system, (h, p) in (("taskstream", host_port(web.url)),
                                   ("seed polling", ("127.0.0.1", pport))):
                await env.reset()
                lead = 3.0 + n / 250 + 2 * (sz.waiting_window + settle + 2)
                ids, start_at = await start_ticks(run, web, pool, n, count=count,
                                                  interval=interval, lead=lead)
                # The worker's own queries (lease heartbeats, the sweeper) go on with or
                # without streams: measure them first, then subtract.
                background = await _queries_per_second(conn, sz.waiting_window, settle)
                streams = SSEPool(h, p, check_seq=system == "taskstream")
                with quiet_gc():
                    await streams.open([f"/tasks/{i}/stream" for i in ids], parallel=200)
                    total = await _queries_per_second(conn, sz.waiting_window, settle)
                    qps = max(0.0, total - background)
                    waited_through = time.time() < start_at
                    ok = await streams.wait(start_at + count * interval + 60 - time.time())
                streams.close()
                lat = streams.latencies()
                name = f"waiting {system}"
                out.check(f"{name}: measured before the first event", waited_through)
                out.check(f"{name}: every stream answered 200",
                          all(s.status == 200 for s in streams.streams))
                out.check(f"{name}: every stream reached the terminal status",
                          all(s.terminal for s in streams.streams) and ok)
                if system == "taskstream":
                    check_streams(out, name, streams, count + 3)
                seen = len(lat) / (n * count)
                row: dict[str, Any] = {
                       "system": system, "round": r, "streams": n, "queries_per_s": qps,
                       "queries_per_s_total": total, "queries_per_s_background": background,
                       "mean_ms": _ms(sum(lat) / len(lat)) if lat else None,
                       "p99_ms": _ms(percentile(lat, 99)), "events_seen": seen}
                out.rounds.append(row)
                run.log(f"waiting {system} round {r}: {qps:.1f} queries/s from streams "
                        f"({total:.1f} total - {background:.1f} worker background), mean "
                        f"delivery {row['mean_ms'] or 0:.0f} ms, {seen:.0%} of events seen")
                d = res.setdefault(system, {"qps": [], "mean": [], "seen": []})
                d["qps"].append(qps)
                mean = row["mean_ms"]
                d["mean"].append(mean if isinstance(mean, float) else float("nan"))
                d["seen"].append(seen)
        ts, peer = res["taskstream"], res["seed polling"]
        q_ts, q_peer = median(ts["qps"]), median(peer["qps"])
        m_ts, m_peer = median(ts["mean"]), median(peer["mean"])
        out.rows += [
            Row("4 cost of waiting", f"DB queries/s, {n} waiting streams", q_ts, "q/s",
                "seed polling", q_peer, target="0", met=q_ts is not None and q_ts < 0.5),
            Row("4 cost of waiting", "mean delivery latency", m_ts, "ms", "seed polling",
                m_peer, ratio(m_peer, m_ts)),
            Row("4 cost of waiting", "share of progress events seen", median(ts["seen"]), "",
                "seed polling", median(peer["seen"])),
        ]
        out.notes.append("ratio for latency = peer / taskstream (how many times faster)")
    finally:
        await conn.close()
        await pool.close()
        env.stop([*workers, web, poller])
    return out


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000
