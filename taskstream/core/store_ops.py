"""SQL of the operations area (migration 120): webhooks and their delivery outbox, retention,
deleting a finished task. Deliveries are written by a trigger in the event's own transaction;
everything here runs outside the event log's hot path."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from taskstream.core.events import Event
from taskstream.core.store import Executor, _event, ensure_tenant

#: Unfinished statuses, as SQL sees them.
_UNFINISHED = "('pending', 'running')"

# --- webhooks --------------------------------------------------------------------------------

_HOOK_COLS = "webhook_id, url, event_types, created_at"


@dataclass(slots=True)
class Webhook:
    webhook_id: str
    url: str
    event_types: list[str]
    created_at: datetime

    @classmethod
    def of(cls, r: asyncpg.Record) -> "Webhook":
        return cls(str(r["webhook_id"]), r["url"], list(r["event_types"]), r["created_at"])

    def to_json(self) -> dict[str, Any]:
        return {"webhook_id": self.webhook_id, "url": self.url,
                "event_types": self.event_types, "created_at": self.created_at.isoformat()}


async def create_webhook(db: Executor, owner: str, url: str, secret: str,
                         event_types: list[str], limit: int) -> Webhook | None:
    """The new webhook, or None when the tenant already has ``limit`` of them."""
    await ensure_tenant(db, owner)
    row = await db.fetchrow(
        f"""INSERT INTO webhooks (webhook_id, owner, url, secret, event_types)
            SELECT $1, $2, $3, $4, $5
             WHERE (SELECT count(*) FROM webhooks WHERE owner = $2) < $6
            RETURNING {_HOOK_COLS}""",
        uuid.uuid4(), owner, url, secret, event_types, limit)
    return Webhook.of(row) if row else None


async def list_webhooks(db: Executor, owner: str) -> list[Webhook]:
    rows = await db.fetch(
        f"SELECT {_HOOK_COLS} FROM webhooks WHERE owner = $1 ORDER BY created_at", owner)
    return [Webhook.of(r) for r in rows]


async def delete_webhook(db: Executor, owner: str, webhook_id: uuid.UUID) -> bool:
    done = await db.execute("DELETE FROM webhooks WHERE webhook_id = $1 AND owner = $2",
                            webhook_id, owner)
    return done != "DELETE 0"


async def webhook_deliveries(db: Executor, owner: str, webhook_id: uuid.UUID, limit: int,
                             before: int | None) -> list[dict[str, Any]] | None:
    """The webhook's deliveries, newest first; None if it is not the tenant's."""
    if await db.fetchval("SELECT 1 FROM webhooks WHERE webhook_id = $1 AND owner = $2",
                         webhook_id, owner) is None:
        return None
    rows = await db.fetch(
        """SELECT delivery_id, task_id, seq, event_type, status, attempts, response_code, error,
                  history, created_at, next_attempt_at, finished_at
             FROM webhook_deliveries
            WHERE webhook_id = $1 AND ($2::bigint IS NULL OR delivery_id < $2)
            ORDER BY delivery_id DESC LIMIT $3""",
        webhook_id, before, limit)
    out = []
    for r in rows:
        d = dict(r)
        d["task_id"] = str(d["task_id"])
        for k in ("created_at", "next_attempt_at", "finished_at"):
            d[k] = d[k].isoformat() if d[k] else None
        out.append(d)
    return out


@dataclass(slots=True)
class Delivery:
    delivery_id: int
    webhook_id: str
    owner: str
    url: str
    secret: str
    attempts: int  # including the one now claimed
    event_type: str
    task_type: str | None
    event: Event | None  # None: its task was deleted meanwhile


async def claim_deliveries(pool: asyncpg.Pool, limit: int, lease: float) -> list[Delivery]:
    """Due deliveries, each leased for ``lease`` seconds (a worker that dies mid-send lets it
    go again after that): at least once, never twice at the same time."""
    rows = await pool.fetch(
        """WITH due AS (
               SELECT delivery_id FROM webhook_deliveries
                WHERE status = 'pending' AND next_attempt_at <= now()
                  AND (locked_until IS NULL OR locked_until < now())
                ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
           UPDATE webhook_deliveries d
              SET locked_until = now() + make_interval(secs => $2), attempts = d.attempts + 1,
                  next_attempt_at = now() + make_interval(secs => $2)
             FROM due, webhooks w
            WHERE d.delivery_id = due.delivery_id AND w.webhook_id = d.webhook_id
           RETURNING d.delivery_id, d.webhook_id, d.owner, d.task_id, d.seq, d.event_type,
                     d.attempts, w.url, w.secret""",
        limit, lease)
    if not rows:
        return []
    events = await pool.fetch(
        """SELECT e.task_id, e.seq, e.tenant_seq, e.type, e.status, e.progress, e.message,
                  e.data, e.attempt, e.created_at, e.owner, t.task_type
             FROM unnest($1::uuid[], $2::bigint[]) AS k(task_id, seq)
             JOIN task_events e ON e.task_id = k.task_id AND e.seq = k.seq
             JOIN tasks t ON t.task_id = e.task_id""",
        [r["task_id"] for r in rows], [r["seq"] for r in rows])
    found = {(e["task_id"], e["seq"]): e for e in events}
    out = []
    for r in rows:
        e = found.get((r["task_id"], r["seq"]))
        out.append(Delivery(r["delivery_id"], str(r["webhook_id"]), r["owner"], r["url"],
                            r["secret"], r["attempts"], r["event_type"],
                            e["task_type"] if e else None, _event(e) if e else None))
    return out


async def record_attempt(db: Executor, delivery_id: int, *, delivered: bool,
                         code: int | None, error: str | None, ms: float,
                         retry_in: float | None) -> None:
    """One attempt's outcome. ``retry_in`` None and not delivered: failed for good."""
    status = "delivered" if delivered else ("pending" if retry_in is not None else "failed")
    await db.execute(
        """UPDATE webhook_deliveries
              SET status = $2, response_code = $3, error = $4, locked_until = NULL,
                  next_attempt_at = now() + make_interval(secs => $5),
                  finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE now() END,
                  history = history || jsonb_build_array(jsonb_build_object(
                      'at', now(), 'code', $3::int, 'error', $4::text, 'ms', round($6::numeric)))
            WHERE delivery_id = $1""",
        delivery_id, status, code, error, retry_in or 0.0, ms)


async def seconds_to_next_delivery(db: Executor) -> float | None:
    """Seconds until the earliest pending delivery is due (<= 0: now); None: none pending.
    Not ``greatest(0, ...)``: GREATEST skips a NULL, so an empty outbox read as "due now"
    and every idle worker polled it 100 times a second."""
    return await db.fetchval(  # type: ignore[no-any-return]
        """SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
             FROM webhook_deliveries WHERE status = 'pending'""")


# --- retention and deletion ------------------------------------------------------------------

#: The cut-off of a tenant's rows: its own retention, else the deployment's ($1 days; 0 =
#: forever, which makes the comparison NULL, i.e. false).
_CUTOFF = "now() - coalesce(tn.retention_days, nullif($1::float8, 0)) * interval '1 day'"


async def prune_tasks(db: Executor, default_days: float, batch: int) -> int:
    """Delete up to ``batch`` finished tasks past their retention, with their events (no
    foreign key there since migration 040) and a batch parent's rows; chunks, steps and
    waits go by cascade; in one short statement;
    locked rows are skipped."""
    n = await db.fetchval(
        f"""WITH gone AS (
                DELETE FROM tasks WHERE task_id IN (
                    SELECT t.task_id FROM tasks t JOIN tenants tn ON tn.owner = t.owner
                     WHERE t.finished_at IS NOT NULL AND t.status NOT IN {_UNFINISHED}
                       AND t.finished_at < {_CUTOFF}
                     ORDER BY t.finished_at LIMIT $2 FOR UPDATE OF t SKIP LOCKED)
                RETURNING task_id),
            events AS (DELETE FROM task_events e USING gone WHERE e.task_id = gone.task_id),
            -- a batch parent's rows (migration 100 gave them no foreign key)
            b AS (DELETE FROM batches b USING gone WHERE b.batch_id = gone.task_id),
            bc AS (DELETE FROM batch_counts c USING gone WHERE c.batch_id = gone.task_id),
            be AS (DELETE FROM batch_ends x USING gone WHERE x.batch_id = gone.task_id)
            SELECT count(*) FROM gone""",
        default_days, batch)
    return int(n)


async def prune_uploads(db: Executor, default_days: float, batch: int) -> int:
    """Uploads past their retention that no unfinished task names."""
    done = await db.execute(
        f"""DELETE FROM uploads WHERE upload_id IN (
                SELECT u.upload_id FROM uploads u JOIN tenants tn ON tn.owner = u.owner
                 WHERE u.created_at < {_CUTOFF}
                   AND NOT EXISTS (SELECT 1 FROM tasks t
                                    WHERE t.status IN {_UNFINISHED} AND t.owner = u.owner
                                      AND t.params->>'upload_id' = u.upload_id::text)
                 ORDER BY u.created_at LIMIT $2 FOR UPDATE OF u SKIP LOCKED)""",
        default_days, batch)
    return int(done.split()[-1])


async def prune_deliveries(db: Executor, default_days: float, batch: int) -> int:
    """Finished webhook deliveries past their tenant's retention."""
    done = await db.execute(
        f"""DELETE FROM webhook_deliveries WHERE delivery_id IN (
                SELECT d.delivery_id FROM webhook_deliveries d
                  JOIN tenants tn ON tn.owner = d.owner
                 WHERE d.finished_at IS NOT NULL AND d.finished_at < {_CUTOFF}
                 ORDER BY d.finished_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED)""",
        default_days, batch)
    return int(done.split()[-1])


async def delete_finished_task(pool: asyncpg.Pool, owner: str, task_id: uuid.UUID) -> str | None:
    """Delete the tenant's finished task with its events and its upload (unless an unfinished
    task still names that upload). Returns None when deleted, else the status that forbids it
    ("missing": not the tenant's task)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT status, params FROM tasks WHERE task_id = $1 AND owner = $2 FOR UPDATE",
            task_id, owner)
        if row is None:
            return "missing"
        if row["status"] in ("pending", "running"):
            return str(row["status"])
        await conn.execute("DELETE FROM tasks WHERE task_id = $1", task_id)
        await conn.execute("DELETE FROM task_events WHERE task_id = $1", task_id)
        for table in ("batches", "batch_counts", "batch_ends"):  # a batch parent's rows
            await conn.execute(f"DELETE FROM {table} WHERE batch_id = $1", task_id)
        upload = (row["params"] or {}).get("upload_id")
        if isinstance(upload, str):
            try:
                upload_id = uuid.UUID(upload)
            except ValueError:
                return None
            await conn.execute(
                f"""DELETE FROM uploads u WHERE u.upload_id = $1 AND u.owner = $2
                      AND NOT EXISTS (SELECT 1 FROM tasks t
                                       WHERE t.status IN {_UNFINISHED} AND t.owner = $2
                                         AND t.params->>'upload_id' = $3)""",
                upload_id, owner, str(upload_id))
        return None


async def any_tenant_retention(db: Executor) -> bool:
    return bool(await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE retention_days IS NOT NULL)"))


async def set_tenant_retention(db: Executor, owner: str, days: float | None) -> None:
    await db.execute(
        """INSERT INTO tenants (owner, retention_days) VALUES ($1, $2)
           ON CONFLICT (owner) DO UPDATE SET retention_days = excluded.retention_days""",
        owner, days)


async def table_bytes(db: Executor, tables: list[str]) -> dict[str, int]:
    """Total size (heap + indexes + TOAST) of each table, for the growth figures."""
    rows = await db.fetch(
        "SELECT t, pg_total_relation_size(t::regclass) AS b FROM unnest($1::text[]) AS t",
        tables)
    return {r["t"]: r["b"] for r in rows}
