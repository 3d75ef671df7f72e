"""What PostgreSQL holds after the run: every task row and every event, read once."""

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg


@dataclass(slots=True)
class Ev:
    task_id: str
    seq: int
    tenant_seq: int
    type: str
    status: str
    attempt: int
    reason: str | None
    created: float  # epoch seconds


@dataclass(slots=True)
class Row:
    task_id: str
    status: str
    failure_reason: str | None
    result: Any
    last_seq: int
    key: str | None
    crashes: int
    run_at: float | None  # epoch seconds: a delayed task must not start before
    task_type: str = ""
    concurrency_key: str | None = None
    parent_id: str | None = None  # a batch's child


@dataclass(slots=True)
class Sched:
    cron: str
    timezone: str
    fired: int  # how many tasks the schedule says it created


@dataclass
class Snapshot:
    tasks: dict[str, Row]
    events: dict[str, list[Ev]]  # per task, by seq
    by_tenant_seq: dict[int, Ev]
    tenant_last_seq: int
    schedules: dict[str, Sched]
    #: The durable ``text`` events: (task_id, attempt, stream) -> text.
    texts: dict[tuple[str, int, str], str] = field(default_factory=dict)
    #: (task, step) -> the attempt that completed it (task_steps)
    steps: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (task, step) -> the attempts that began executing it (chaos_step_runs)
    step_runs: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: (task, step, attempt) -> the tokens that model call cost (llm_usage)
    usage: dict[tuple[str, str, int], int] = field(default_factory=dict)
    #: document_process task -> (chunks, distinct chunk indexes, vectors, vector spaces)
    documents: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)


async def snapshot(pool: asyncpg.Pool) -> Snapshot:
    rows = await pool.fetch("""SELECT task_id, status, failure_reason, result, last_seq,
                                      idempotency_key, crashes,
                                      extract(epoch FROM (options->>'run_at')::timestamptz)
                                          ::float8 AS run_at,
                                      task_type, options->>'concurrency_key' AS ckey,
                                      parent_id
                               FROM tasks""")
    tasks = {str(r["task_id"]): Row(str(r["task_id"]), r["status"], r["failure_reason"],
                                    r["result"], r["last_seq"], r["idempotency_key"],
                                    r["crashes"], r["run_at"], r["task_type"], r["ckey"],
                                    str(r["parent_id"]) if r["parent_id"] else None)
             for r in rows}
    events: dict[str, list[Ev]] = defaultdict(list)
    by_tseq: dict[int, Ev] = {}
    texts: dict[tuple[str, int, str], str] = {}
    for r in await pool.fetch(
            """SELECT task_id, seq, tenant_seq, type, status, attempt, data,
                      extract(epoch FROM created_at)::float8 AS created
               FROM task_events ORDER BY task_id, seq"""):
        data = r["data"]
        reason = data.get("reason") if isinstance(data, dict) else None
        ev = Ev(str(r["task_id"]), r["seq"], r["tenant_seq"], r["type"], r["status"],
                r["attempt"], reason, r["created"])
        events[ev.task_id].append(ev)
        if ev.type == "text" and isinstance(data, dict):
            texts[(ev.task_id, ev.attempt, str(data.get("stream")))] = str(data.get("text"))
        by_tseq[ev.tenant_seq] = ev
    last = await pool.fetchval("SELECT coalesce(max(last_seq), 0) FROM tenants")
    fired = {str(r["schedule_id"]): Sched(r["cron"], r["timezone"], int(r["fired"]))
             for r in await pool.fetch("SELECT schedule_id, cron, timezone, fired FROM schedules")}
    steps = {(str(r["task_id"]), r["name"]): int(r["attempt"])
             for r in await pool.fetch("SELECT task_id, name, attempt FROM task_steps")}
    step_runs: dict[tuple[str, str], list[int]] = defaultdict(list)
    if await pool.fetchval("SELECT to_regclass('chaos_step_runs') IS NOT NULL"):  # chaos.run's
        for r in await pool.fetch(
                "SELECT task_id, step, attempt FROM chaos_step_runs ORDER BY at"):
            step_runs[(str(r["task_id"]), r["step"])].append(int(r["attempt"]))
    usage = {(str(r["task_id"]), r["step"], int(r["attempt"])): int(r["tokens"])
             for r in await pool.fetch("""SELECT task_id, step, attempt,
                                                 prompt_tokens + completion_tokens AS tokens
                                          FROM llm_usage""")}
    documents = {str(r["task_id"]): (r["chunks"], r["distinct"], r["vectors"], r["spaces"])
                 for r in await pool.fetch(
        """SELECT c.task_id, count(*) AS chunks, count(DISTINCT c.chunk_index) AS distinct,
                  (SELECT count(*) FROM chunk_vectors v WHERE v.task_id = c.task_id) AS vectors,
                  (SELECT count(DISTINCT space_id) FROM chunk_vectors v
                    WHERE v.task_id = c.task_id) AS spaces
             FROM document_chunks c GROUP BY c.task_id""")}
    return Snapshot(tasks, dict(events), by_tseq, int(last), fired, texts=texts, steps=steps,
                    step_runs=dict(step_runs), usage=usage, documents=documents)
