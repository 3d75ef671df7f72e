"""Batches under chaos (issue 12): batches of a mix of child kinds (the workload's own kinds,
retries, dead letters, timeouts, no-ops, limited) under each failure policy, some cancelled
mid-run, submitted through the same kills and restarts as everything else.

Invariant: every parent ends exactly once, after all of its children, with counts equal
to its children's final statuses, and with the status its policy (or its cancel) decides.
"""

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from chaos.api import Api
from chaos.checks import TERMINAL, Check
from chaos.workload import _spec

#: Child kinds of a batch (a child is never cancelled alone here: the batch may be).
CHILD_KINDS = [("demo", 40), ("retry", 15), ("dead", 6), ("noop", 25), ("timeout", 4),
               ("limited", 10)]
POLICIES = ["any", "all", "threshold"]


@dataclass(slots=True)
class BatchSpec:
    n: int
    key: str
    body: dict[str, Any]
    cancel_after: float | None = None
    task_id: str | None = None
    children: list[str] = field(default_factory=list)
    refused: str | None = None
    cancelled: bool = False  # a cancel was accepted (before the batch ended)


def make_batches(count: int, size: int, rng: random.Random) -> list[BatchSpec]:
    names = [k for k, _ in CHILD_KINDS]
    weights = [w for _, w in CHILD_KINDS]
    out = []
    for i in range(count):
        kids = [_spec(j, rng.choices(names, weights)[0], rng).body for j in range(size)]
        policy = POLICIES[i % len(POLICIES)]
        body: dict[str, Any] = {"tasks": kids, "policy": policy}
        if policy == "threshold":
            body["threshold"] = rng.randint(2, max(2, size // 5))
        key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        cancel_after = round(rng.uniform(0.5, 3.0), 2) if i % 4 == 3 else None
        out.append(BatchSpec(i, key, body, cancel_after))
    return out


async def submit_batches(api: Api, specs: list[BatchSpec], window: float) -> None:
    """POST /batches spread over ``window``; retried with the same Idempotency-Key."""
    t0 = time.monotonic()
    step = window / max(1, len(specs))

    async def one(spec: BatchSpec, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        resp = await api.request("POST /batches", "POST", "/batches", json=spec.body,
                                 headers={"Idempotency-Key": spec.key})
        if resp is None or resp.status_code not in (200, 202):
            spec.refused = "no answer" if resp is None else \
                f"{resp.status_code}: {resp.text[:200]}"
            return
        spec.task_id = resp.json()["task_id"]
        if spec.cancel_after is not None:
            await asyncio.sleep(spec.cancel_after)
            c = await api.request("POST /batches/{id}/cancel", "POST",
                                  f"/batches/{spec.task_id}/cancel")
            spec.cancelled = c is not None and c.status_code == 200

    await asyncio.gather(*(one(s, t0 + i * step) for i, s in enumerate(specs)))


async def task_ids(pool: asyncpg.Pool, specs: list[BatchSpec]) -> list[str]:
    """The parents and all their children (for the drain)."""
    out: list[str] = []
    for s in specs:
        if s.task_id:
            rows = await pool.fetch("SELECT task_id FROM tasks WHERE parent_id = $1::uuid",
                                    s.task_id)
            s.children = [str(r["task_id"]) for r in rows]
            out += [s.task_id, *s.children]
    return out


def _broken(policy: str, threshold: int | None, counts: dict[str, int], total: int) -> bool:
    bad = counts.get("failed", 0) + counts.get("cancelled", 0)
    if policy == "any":
        return bad > 0
    if policy == "threshold":
        return bad >= (threshold or 1)
    return counts.get("completed", 0) == 0 and sum(counts.values()) == total


async def check_batches(pool: asyncpg.Pool, specs: list[BatchSpec]) -> Check:
    c = Check("every batch parent ended once, after its children, with their counts")
    for s in specs:
        if s.refused:
            c.violations.append(f"batch {s.n} refused: {s.refused}")
            continue
        if not s.task_id:
            continue
        c.checked += 1
        same_key = await pool.fetchval(
            "SELECT count(*) FROM tasks WHERE idempotency_key = $1", s.key)
        if same_key != 1:
            c.violations.append(f"batch {s.n}: its Idempotency-Key maps to {same_key} tasks")
        parent = await pool.fetchrow(
            "SELECT status, finished_at FROM tasks WHERE task_id = $1::uuid", s.task_id)
        kids = await pool.fetch(
            "SELECT status, finished_at FROM tasks WHERE parent_id = $1::uuid", s.task_id)
        total = len(s.body["tasks"])
        actual: dict[str, int] = {}
        for k in kids:
            actual[k["status"]] = actual.get(k["status"], 0) + 1
        if len(kids) != total:
            c.violations.append(f"batch {s.task_id}: {len(kids)} children, asked {total}")
        if parent is None or parent["status"] not in TERMINAL:
            c.violations.append(f"batch {s.task_id}: parent "
                                f"{parent['status'] if parent else 'missing'}")
            continue
        ends = await pool.fetch(
            """SELECT type, data FROM task_events WHERE task_id = $1::uuid
               AND type IN ('completed', 'failed', 'cancelled')""", s.task_id)
        if len(ends) != 1:
            c.violations.append(f"batch {s.task_id}: {len(ends)} terminal events")
        late = [k for k in kids if k["status"] not in TERMINAL
                or k["finished_at"] > parent["finished_at"]]
        if late:
            c.violations.append(f"batch {s.task_id}: {len(late)} children ended after it")
        last = await pool.fetchval(
            """SELECT data FROM task_events WHERE task_id = $1::uuid AND type = 'aggregate'
               ORDER BY seq DESC LIMIT 1""", s.task_id)
        reported = {k: v for k, v in (last or {}).get("counts", {}).items() if v}
        if reported != actual:
            c.violations.append(f"batch {s.task_id}: reported {reported}, children {actual}")
        if parent["status"] == "cancelled":
            if not s.cancelled:
                c.violations.append(f"batch {s.task_id}: cancelled, but no cancel accepted")
            continue
        broken = _broken(s.body["policy"], s.body.get("threshold"), actual, total)
        want = "failed" if broken else "completed"
        if parent["status"] != want:
            c.violations.append(f"batch {s.task_id} ({s.body['policy']}): {parent['status']}"
                                f" with {actual}; the policy says {want}")
    return c
