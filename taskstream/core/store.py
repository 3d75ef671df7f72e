"""All SQL in one place (with taskstream/core/store_read.py, the SQLModel read side). Routes and the
worker runtime call these functions and nothing else. What stays here runs on the asyncpg pool:
the hot paths (event appends, submissions, the worker's loads, leases and the sweeper, stream
replay) and the upload chunks.

Connections are taken from the pool for the duration of one call, so no caller holds a
connection while it waits (an SSE stream in particular holds none).
"""

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from taskstream.core.constants import BATCH_TASK_TYPE
from taskstream.core.events import COMPLETED, Event, NewEvent
from taskstream.core.limits import LimitReason
from taskstream.core.states import EventType, Outcome

Executor = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy


@dataclass(slots=True)
class Task:
    task_id: str
    owner: str
    task_type: str
    params: dict[str, Any]
    status: str
    progress: float
    message: str | None
    result: Any
    error: str | None
    attempts: int
    max_attempts: int
    last_seq: int
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    idempotency_key: str | None = None
    request_hash: str | None = None
    failures: int = 0
    crashes: int = 0
    failure_reason: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, r: asyncpg.Record) -> "Task":
        return cls(
            task_id=str(r["task_id"]),
            owner=r["owner"],
            task_type=r["task_type"],
            params=r["params"],
            status=r["status"],
            progress=r["progress"],
            message=r["message"],
            result=r["result"],
            error=r["error"],
            attempts=r["attempts"],
            max_attempts=r["max_attempts"],
            last_seq=r["last_seq"],
            cancel_requested=r["cancel_requested"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
            idempotency_key=r["idempotency_key"],
            request_hash=r["request_hash"],
            failures=r["failures"],
            crashes=r["crashes"],
            failure_reason=r["failure_reason"],
            options=r["options"],
        )

    def to_json(self) -> dict[str, Any]:
        """The ``core.models.TaskRead`` shape without links (what submit, cancel and retry
        answer from this row); tests/test_models.py holds the two together."""

        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "task_id": self.task_id,
            "type": self.task_type,
            "task_type": self.task_type,
            "status": self.status,
            "progress": self.progress,
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "params": self.params,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "failures": self.failures,
            "failure_reason": self.failure_reason,
            "last_event_id": self.last_seq,
            "priority": self.options.get("priority", "normal"),
            "run_at": self.options.get("run_at"),
            "batch": None,
            "parent_id": None,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }


@dataclass(slots=True)
class Appended:
    """Outcome of one appended event: 'ok' with the event, or why it was refused."""

    outcome: Outcome
    event: Event | None
    status: str | None


_TASK_COLS = """task_id, owner, task_type, params, status, progress, message, result, error,
    attempts, max_attempts, last_seq, cancel_requested, created_at, updated_at, started_at,
    finished_at, idempotency_key, request_hash, failures, crashes, failure_reason, options"""


#: Events a running attempt reports that change no status: ts_append's typed fast path
#: (it sets the row's message from progress events only).
_FAST_TYPES = frozenset({EventType.PROGRESS, EventType.LOG, EventType.PARTIAL,
                         EventType.STEP_STARTED, EventType.STEP_COMPLETED, EventType.TEXT})


#: ts_append's six arrays, from one jsonb parameter of [task_id, attempt, type, progress,
#: message, data] rows. Passed as arrays, asyncpg checked every element against three
#: collections.abc classes (8 checks per event, a tenth of a worker's time per event); as
#: one list, the pool's jsonb codec (orjson) encodes it in one call. JSON nulls are NULLs.
_APPEND_FAST = """
SELECT f.* FROM (
    SELECT array_agg((e->>0)::uuid ORDER BY n) AS tids,
           array_agg((e->>1)::integer ORDER BY n) AS atts,
           array_agg(e->>2 ORDER BY n) AS typs,
           array_agg((e->>3)::float8 ORDER BY n) AS prs,
           array_agg(e->>4 ORDER BY n) AS msgs,
           array_agg(NULLIF(e->5, 'null'::jsonb) ORDER BY n) AS datas
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS r(e, n)
) u, ts_append(u.tids, u.atts, u.typs, u.prs, u.msgs, u.datas, $2::text[], $3::jsonb) f
"""


async def append_events(pool: asyncpg.Pool, events: Sequence[NewEvent]) -> list[Appended]:
    """Persist a batch of events in one round trip and one transaction (group commit).

    The transaction commits asynchronously (see migration 030): the events are durable once
    ``EventLog.flush()`` has returned, and nobody may hear of them before that.

    An attempt's progress, log and partial events take the typed fast path (migration 040);
    an event goes there only if no earlier event of its task in this batch is slow, so each
    task's events keep their order.
    """
    fast: list[int] = []
    slow: list[int] = []
    slow_tasks: set[str] = set()
    for i, ev in enumerate(events):
        if ev.type in _FAST_TYPES and ev.attempt is not None and ev.task_id not in slow_tasks:
            fast.append(i)
        else:
            slow.append(i)
            slow_tasks.add(ev.task_id)
    slow_json = [events[i].to_sql() for i in slow]
    if not fast:
        rows = await pool.fetch("SELECT * FROM ts_append_events($1::jsonb, false)", slow_json)
    else:
        fe = [events[i] for i in fast]
        owners = sorted({e.owner for e in events})
        rows = await pool.fetch(
            _APPEND_FAST,
            [(e.task_id, e.attempt, e.type, e.progress, e.message, e.data) for e in fe],
            owners if len(owners) > 1 else None, slow_json or None,
        )
    order = fast + slow  # row idx (1-based) -> position in ``events``
    out: list[Appended | None] = [None] * len(events)
    for r in rows:
        i = order[r["idx"] - 1]
        out[i] = _appended(events[i], r)
    done = [a for a in out if a is not None]
    if len(done) != len(events):
        raise RuntimeError(f"{len(events) - len(done)} events came back without an outcome")
    return done


#: Plain values, looked up once: an enum's ``.value`` and its members are Python-level
#: attribute lookups, twice per event on the event log's hot path.
_OK: str = Outcome.OK.value
_OUTCOME_OK = Outcome.OK
_TYPE_VALUE: dict[str, str] = {t: t.value for t in EventType}


def _appended(ev: NewEvent, r: asyncpg.Record) -> Appended:
    """One row of ts_append_events (or ts_start_limited) as the outcome of ``ev``."""
    # The functions' first eight columns, by position (idx, outcome, seq, tenant_seq,
    # status, progress, attempt, created_at), and Event built positionally: lookups by
    # name and keywords cost twice as much, once per event.
    _, outcome, seq, tenant_seq, status, progress, attempt, created_at = r[:8]
    if outcome != _OK:
        return Appended(Outcome(outcome), None, status)
    etype = _TYPE_VALUE[ev.type]
    return Appended(_OUTCOME_OK, Event(
        ev.task_id, seq, tenant_seq or 0, etype, status, progress,
        ev.message if ev.message is not None else ev.error,
        ev.result if etype == COMPLETED else ev.data,
        attempt, created_at, ev.owner,
    ), status)


@dataclass(slots=True)
class Limited:
    """Why a start was refused, how many run, and since when the task waits (None: it was
    not waiting yet)."""

    reason: LimitReason
    running: int
    waiting_since: datetime | None


@dataclass(slots=True)
class LimitedStart:
    """A 'started' event to append only while its type and key are under their limits."""

    started: NewEvent
    limit: int | None
    key: str | None
    key_limit: int | None


async def start_limited(db: Executor, starts: Sequence[LimitedStart]
                        ) -> list[tuple[Appended, Limited | None]]:
    """Append 'started' events unless a concurrency limit is full (migration 070), in one
    round trip and one transaction that commits asynchronously: flush before telling anyone,
    as for a batch of the event log."""
    rows = await db.fetch("SELECT * FROM ts_start_limited($1::jsonb)", [
        {"ev": s.started.to_sql(), "limit": s.limit, "key": s.key, "key_limit": s.key_limit}
        for s in starts])
    out: list[tuple[Appended, Limited | None] | None] = [None] * len(starts)
    for r in rows:
        i = r["idx"] - 1
        if r["outcome"] == Outcome.LIMITED:
            out[i] = (Appended(Outcome.LIMITED, None, r["status"]),
                      Limited(LimitReason(r["reason"]), int(r["running"]),
                              r["waiting_since"]))
        else:
            out[i] = (_appended(starts[i].started, r), None)
    done = [o for o in out if o is not None]
    if len(done) != len(starts):
        raise RuntimeError(f"{len(starts) - len(done)} starts came back without an outcome")
    return done


async def ensure_tenant(db: Executor, owner: str) -> None:
    await db.execute(
        "INSERT INTO tenants (owner) VALUES ($1) ON CONFLICT (owner) DO NOTHING", owner
    )


async def create_task(
    pool: asyncpg.Pool,
    *,
    owner: str,
    task_type: str,
    params: dict[str, Any],
    max_attempts: int,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[Task, Event | None]:
    """Insert one task and its 'created' event atomically (``create_tasks`` of one).

    With an idempotency key already used by this owner, returns the existing task and None
    (the caller compares ``request_hash``).
    """
    (result,) = await create_tasks(pool, [NewTask(owner, task_type, params, max_attempts,
                                                  idempotency_key, request_hash,
                                                  options or {})])
    return result


@dataclass(slots=True)
class NewTask:
    owner: str
    task_type: str
    params: dict[str, Any]
    max_attempts: int
    idempotency_key: str | None = None
    request_hash: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


async def create_tasks(pool: asyncpg.Pool, items: Sequence[NewTask]
                       ) -> list[tuple[Task, Event | None]]:
    """Insert many tasks and their 'created' events in one transaction and a few round trips
    (group commit for submissions). Per item: (task, its created event), or (the task an
    earlier submission with the same idempotency key made, None)."""
    # A tenant row is created only when the insert finds it missing: an INSERT ... ON
    # CONFLICT per submission would be a round trip, and would wait on any in-flight update
    # of the tenant's counter row.
    try:
        return await _insert_tasks(pool, items)
    except asyncpg.ForeignKeyViolationError:
        for owner in sorted({i.owner for i in items}):
            await ensure_tenant(pool, owner)
        return await _insert_tasks(pool, items)


async def _insert_tasks(pool: asyncpg.Pool, items: Sequence[NewTask]
                        ) -> list[tuple[Task, Event | None]]:
    # One statement, its own transaction (migration 040): tasks, 'created' events, tenant_seq.
    ids = [uuid.uuid4() for _ in items]
    made = await _insert_new(pool, ids, items)
    out: list[tuple[Task, Event | None]] = []
    for tid, item in zip(ids, items, strict=True):
        if tid in made:
            out.append(made[tid])
            continue
        # An idempotent replay (maybe of an item in this very batch).
        out.append((await task_by_key(pool, item.owner, item.idempotency_key), None))
    return out


async def task_by_key(db: Executor, owner: str, idempotency_key: str | None) -> Task:
    """The task an idempotency key already made (the caller knows one exists)."""
    row = await db.fetchrow(
        f"SELECT {_TASK_COLS} FROM tasks WHERE owner = $1 AND idempotency_key = $2",
        owner, idempotency_key)
    assert row is not None
    return Task.from_row(row)


async def _insert_new(db: Executor, ids: Sequence[uuid.UUID], items: Sequence[NewTask]
                      ) -> dict[uuid.UUID, tuple[Task, Event]]:
    """ts_create_tasks: the tasks it created (an idempotent replay is left out), by id."""
    rows = await db.fetch(
        "SELECT * FROM ts_create_tasks($1::uuid[], $2::text[], $3::text[], $4::jsonb[],"
        " $5::integer[], $6::text[], $7::text[], $8::jsonb[])",
        ids, [i.owner for i in items], [i.task_type for i in items],
        [i.params for i in items], [i.max_attempts for i in items],
        [i.idempotency_key for i in items], [i.request_hash for i in items],
        [i.options for i in items],
    )
    made: dict[uuid.UUID, tuple[Task, Event]] = {}
    for r in rows:
        task = Task.from_row(r)
        made[r["task_id"]] = (task, Event(
            task_id=task.task_id, seq=1, tenant_seq=r["tenant_seq"], type=EventType.CREATED.value,
            status=task.status, progress=task.progress, message=None, data=None, attempt=0,
            created_at=task.created_at, owner=task.owner,
        ))
    return made


async def get_task(db: Executor, task_id: uuid.UUID, owner: str | None = None) -> Task | None:
    """One task; with ``owner`` given, another tenant's task is simply not found."""
    if owner is None:
        row = await db.fetchrow(f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = $1", task_id)
    else:
        row = await db.fetchrow(
            f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = $1 AND owner = $2", task_id, owner
        )
    return Task.from_row(row) if row else None


async def task_heads(db: Executor, task_ids: Sequence[str]) -> dict[str, int]:
    """Each task's last event ``seq`` (tasks not found are left out)."""
    rows = await db.fetch("SELECT task_id, last_seq FROM tasks WHERE task_id = ANY($1::uuid[])",
                          [uuid.UUID(t) for t in task_ids])
    return {str(r["task_id"]): int(r["last_seq"]) for r in rows}


async def tenant_heads(db: Executor, owners: Sequence[str]) -> dict[str, int]:
    """Each tenant's last event ``tenant_seq``."""
    rows = await db.fetch("SELECT owner, last_seq FROM tenants WHERE owner = ANY($1::text[])",
                          list(owners))
    return {str(r["owner"]): int(r["last_seq"]) for r in rows}


async def task_attempt(db: Executor, task_id: str, owner: str) -> int | None:
    """A task's current attempt (None: no such task of this owner)."""
    value = await db.fetchval("SELECT attempts FROM tasks WHERE task_id = $1 AND owner = $2",
                              uuid.UUID(task_id), owner)
    return None if value is None else int(value)


async def get_tasks(db: Executor, task_ids: Sequence[uuid.UUID]) -> dict[str, Task]:
    """Many tasks by id in one query (the worker loads the tasks its jobs start together)."""
    rows = await db.fetch(f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = ANY($1::uuid[])",
                          task_ids)
    return {str(r["task_id"]): Task.from_row(r) for r in rows}


_EVENT_COLS = (
    "owner, task_id, seq, tenant_seq, type, status, progress, message, data, attempt, created_at"
)


def _event(r: asyncpg.Record) -> Event:
    return Event(
        task_id=str(r["task_id"]), seq=r["seq"], tenant_seq=r["tenant_seq"], type=r["type"],
        status=r["status"], progress=r["progress"], message=r["message"], data=r["data"],
        attempt=r["attempt"], created_at=r["created_at"], owner=r["owner"],
    )


def _flushed(select: str, order: str = "seq") -> str:
    """``select`` (of events), made durable before it returns, in one round trip: when it
    finds rows, ts_flush() runs in the same statement, whose implicit transaction commits
    synchronously after it read them — so every commit it saw is on disk before the rows
    reach us (asyncpg hands them over only after that COMMIT). No rows: no flush (a stream
    opened on a quiet task costs no fsync)."""
    return (f"WITH ev AS MATERIALIZED ({select}), "
            "f AS MATERIALIZED (SELECT count(*) FROM ts_flush() "
            "WHERE EXISTS (SELECT 1 FROM ev)) "
            f"SELECT ev.* FROM ev, f ORDER BY ev.{order}")


async def events_after(
    db: Executor, task_id: uuid.UUID | str, after: int, limit: int
) -> list[Event]:
    """A task's events after ``after``, durable before anyone sees them (writers commit
    asynchronously; a crash must not take back an event a client was shown)."""
    rows = await db.fetch(
        _flushed(f"""SELECT {_EVENT_COLS} FROM task_events WHERE task_id = $1 AND seq > $2
                     ORDER BY seq LIMIT $3"""),
        task_id if isinstance(task_id, uuid.UUID) else uuid.UUID(task_id), after, limit,
    )
    return [_event(r) for r in rows]


async def tenant_events_after(db: Executor, owner: str, after: int, limit: int) -> list[Event]:
    rows = await db.fetch(
        _flushed(f"""SELECT {_EVENT_COLS} FROM task_events WHERE owner = $1
                     AND tenant_seq > $2 ORDER BY tenant_seq LIMIT $3""", "tenant_seq"),
        owner, after, limit,
    )
    return [_event(r) for r in rows]


async def tenant_last_seq(db: Executor, owner: str) -> int:
    v = await db.fetchval("SELECT last_seq FROM tenants WHERE owner = $1", owner)
    return int(v or 0)


# --- uploads -------------------------------------------------------------------------------

@dataclass(slots=True)
class Upload:
    upload_id: str
    owner: str
    filename: str
    content_type: str
    size: int
    sha256: str


async def begin_upload(conn: asyncpg.Connection, owner: str, upload_id: uuid.UUID,
                       filename: str, content_type: str) -> None:
    """Inside the caller's transaction: the upload row exists only if every chunk lands."""
    await ensure_tenant(conn, owner)
    await conn.execute(
        """INSERT INTO uploads (upload_id, owner, filename, content_type, size, sha256)
           VALUES ($1, $2, $3, $4, 0, '')""",
        upload_id, owner, filename, content_type,
    )


async def add_upload_chunk(conn: asyncpg.Connection, upload_id: uuid.UUID, idx: int,
                           data: bytes) -> None:
    await conn.execute(
        "INSERT INTO upload_chunks (upload_id, idx, data) VALUES ($1, $2, $3)",
        upload_id, idx, data,
    )


async def finish_upload(conn: asyncpg.Connection, upload_id: uuid.UUID, size: int,
                        sha256: str) -> None:
    await conn.execute(
        "UPDATE uploads SET size = $2, sha256 = $3 WHERE upload_id = $1", upload_id, size, sha256
    )


async def get_upload(db: Executor, upload_id: uuid.UUID, owner: str | None = None
                     ) -> Upload | None:
    r = await db.fetchrow(
        """SELECT upload_id, owner, filename, content_type, size, sha256 FROM uploads
           WHERE upload_id = $1 AND ($2::text IS NULL OR owner = $2)""",
        upload_id, owner,
    )
    if r is None:
        return None
    return Upload(str(r["upload_id"]), r["owner"], r["filename"], r["content_type"], r["size"],
                  r["sha256"])


async def get_uploads(db: Executor, upload_ids: Sequence[uuid.UUID]) -> list[Upload]:
    rows = await db.fetch(
        """SELECT upload_id, owner, filename, content_type, size, sha256 FROM uploads
           WHERE upload_id = ANY($1::uuid[])""", list(upload_ids))
    return [Upload(str(r["upload_id"]), r["owner"], r["filename"], r["content_type"],
                   r["size"], r["sha256"]) for r in rows]


async def iter_upload(pool: asyncpg.Pool, upload_id: uuid.UUID) -> AsyncIterator[bytes]:
    """Chunks in order, one query each, so a large file never sits in memory whole."""
    idx = 0
    while True:
        data = await pool.fetchval(
            "SELECT data FROM upload_chunks WHERE upload_id = $1 AND idx = $2", upload_id, idx
        )
        if data is None:
            return
        yield bytes(data)
        idx += 1


@asynccontextmanager
async def transaction(db: Executor) -> AsyncIterator[asyncpg.Connection]:
    """``async with transaction(pool_or_conn) as conn``: a transaction on a pooled or given
    connection. Nested ``async with`` blocks, so the connection goes back to the pool however
    the transaction ends, BEGIN failing or cancelled included (a connection kept that way
    hung the pool's close at a worker's shutdown)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn  # type: ignore[misc]  # a proxy, used as a Connection
    else:
        async with db.transaction():
            yield db  # type: ignore[misc]


# --- leases, sweeping, dead letters ----------------------------------------------------------

async def renew_leases(db: Executor, worker_id: str, lease: float, task_ids: Sequence[str]
                       ) -> list[tuple[str, bool]]:
    """Heartbeat: extend the lease of the tasks this worker is really running (a task whose
    run ended without a terminal write must not be kept alive); returns (task_id,
    cancel_requested) so a cancel whose pub/sub message was lost still lands."""
    # Rows are locked in task_id order, the order event batches lock them in: an
    # unordered UPDATE deadlocked with concurrent batches (seen in the benchmark).
    rows = await db.fetch(
        """UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => $2)
           FROM (SELECT task_id FROM tasks
                 WHERE worker_id = $1 AND status = 'running' AND task_id = ANY($3::uuid[])
                 ORDER BY task_id FOR NO KEY UPDATE) held
           WHERE t.task_id = held.task_id
           RETURNING t.task_id, t.cancel_requested""",
        worker_id, lease, [uuid.UUID(t) for t in task_ids],
    )
    return [(str(r["task_id"]), r["cancel_requested"]) for r in rows]


@dataclass(slots=True)
class Lost:
    task_id: str
    owner: str
    attempts: int
    crashes: int
    cancel_requested: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    task_type: str = ""


async def expired_leases(db: Executor, limit: int = 100) -> list[Lost]:
    """Running tasks whose worker stopped renewing its lease (killed, or paused)."""
    rows = await db.fetch(
        """SELECT task_id, owner, attempts, crashes, cancel_requested, options, task_type
           FROM tasks WHERE status = 'running' AND lease_expires_at < now()
             AND task_type <> $2
           ORDER BY lease_expires_at LIMIT $1""",
        limit, BATCH_TASK_TYPE,
    )
    return [Lost(str(r["task_id"]), r["owner"], r["attempts"], r["crashes"],
                 r["cancel_requested"], r["options"], r["task_type"]) for r in rows]


async def stale_pending(db: Executor, older_than: float, limit: int = 500
                        ) -> list[tuple[str, int, dict[str, Any]]]:
    """Pending tasks untouched for a while, but for those suspended in ``ctx.wait_for``
    (they have no job on purpose): (task_id, last_seq, options) — their job id's
    parts, and the priority and start time their job is queued with. Those due first: tasks
    delayed far ahead (their jobs rightly waiting) must not fill the batch every pass."""
    rows = await db.fetch(
        """SELECT task_id, last_seq, options FROM tasks
           WHERE status = 'pending' AND updated_at < now() - make_interval(secs => $1)
             AND task_type <> $3
             AND NOT EXISTS (SELECT 1 FROM task_waits w WHERE w.task_id = tasks.task_id
                             AND w.suspended AND w.resumed_at IS NULL)
           ORDER BY greatest(updated_at, (options->>'run_at')::timestamptz), updated_at
           LIMIT $2""",
        older_than, limit, BATCH_TASK_TYPE,
    )
    return [(str(r["task_id"]), r["last_seq"], r["options"]) for r in rows]


# --- server secrets ------------------------------------------------------------------------

async def server_secret(db: Executor, name: str, fresh_value: str) -> str:
    """The deployment-wide secret ``name``, created once with ``fresh_value``."""
    await db.execute(
        "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        name, fresh_value,
    )
    value = await db.fetchval("SELECT value FROM server_secrets WHERE name = $1", name)
    return str(value)


async def inflight_count(db: Executor, owner: str) -> int:
    return int(await db.fetchval(
        "SELECT count(*) FROM tasks WHERE owner = $1 AND status IN ('pending', 'running')",
        owner) or 0)


async def flush(db: Executor) -> None:
    """Make every commit so far durable (see 030_group_commit.sql: writers commit
    asynchronously; whoever shows their rows to anyone flushes first)."""
    await db.execute("SELECT ts_flush()")


async def flush_and_find(db: Executor, keys: Sequence[tuple[str, int]]
                         ) -> set[tuple[str, int]]:
    """Flush, then which of these (task_id, seq) are stored."""
    rows = await db.fetch("SELECT * FROM ts_flush($1::jsonb)", [list(k) for k in keys])
    return {(str(r["task_id"]), int(r["seq"])) for r in rows}


# --- which task types the running workers load -----------------------------------------------

async def announce_worker_types(db: Executor, worker_id: str, versions: dict[str, str]) -> None:
    """A worker's rows, replaced: (task type, schema hash) for each type it loads."""
    async with transaction(db) as conn:
        await conn.execute("DELETE FROM worker_types WHERE worker_id = $1", worker_id)
        await conn.executemany(
            "INSERT INTO worker_types (worker_id, task_type, schema_hash) VALUES ($1, $2, $3)",
            [(worker_id, name, digest) for name, digest in sorted(versions.items())])


async def touch_worker_types(db: Executor, worker_id: str) -> None:
    await db.execute("UPDATE worker_types SET seen_at = now() WHERE worker_id = $1", worker_id)


async def forget_worker_types(db: Executor, worker_id: str) -> None:
    await db.execute("DELETE FROM worker_types WHERE worker_id = $1", worker_id)


async def live_worker_types(db: Executor, within: float) -> tuple[int, dict[str, set[str]]]:
    """(how many workers were seen within ``within`` seconds, type -> their schema hashes)."""
    rows = await db.fetch(
        """SELECT worker_id, task_type, schema_hash FROM worker_types
           WHERE seen_at > now() - make_interval(secs => $1)""", within)
    types: dict[str, set[str]] = {}
    for r in rows:
        types.setdefault(r["task_type"], set()).add(r["schema_hash"])
    return len({r["worker_id"] for r in rows}), types


async def pending_of_unknown_types(db: Executor, known: Sequence[str], older_than: float,
                                   limit: int = 500) -> list[tuple[str, str, str]]:
    """Pending tasks, due (created, or their ``run_at`` passed) more than ``older_than``
    seconds ago, whose type is not in ``known``: (task_id, owner, task_type). A delayed task
    is not judged before it is due: workers for its type may come by then."""
    rows = await db.fetch(
        """SELECT task_id, owner, task_type FROM tasks
           WHERE status = 'pending' AND NOT (task_type = ANY($1::text[]))
             AND task_type <> $4
             AND created_at < now() - make_interval(secs => $2)
             AND coalesce((options->>'run_at')::timestamptz, created_at)
                 < now() - make_interval(secs => $2)
           ORDER BY created_at LIMIT $3""",
        list(known), older_than, limit, BATCH_TASK_TYPE)
    return [(str(r["task_id"]), r["owner"], r["task_type"]) for r in rows]


# --- cron schedules ----------------------------------------------------------------------------

_SCHEDULE_COLS = """schedule_id, owner, task_type, params, cron, timezone, misfire, declared,
    paused, disabled, next_run_at, last_fired_at, fired, created_at, updated_at"""


@dataclass(slots=True)
class NewSchedule:
    owner: str
    task_type: str
    params: dict[str, Any]
    cron: str
    timezone: str
    misfire: str
    next_run_at: datetime


@dataclass(slots=True)
class DueSchedule(NewSchedule):
    """A schedule claimed for firing: a new one's fields and its id."""

    schedule_id: str


#: Given a claimed schedule and the database's now: the tasks to create, and its next slot.
Planner = Callable[[DueSchedule, datetime], tuple[list[NewTask], datetime]]


async def fire_due_schedules(pool: asyncpg.Pool, planner: Planner, limit: int = 50
                             ) -> tuple[int, list[tuple[Task, Event]]]:
    """Claim due schedules (rows another worker holds are skipped), create their slots'
    tasks and advance them, all in one transaction: a slot fires once across all workers.
    Returns (schedules claimed, the created tasks with their events: flush/publish, then
    enqueue them)."""
    async with transaction(pool) as conn:
        # The database's clock, one for every worker.
        rows = await conn.fetch(
            """SELECT schedule_id, owner, task_type, params, cron, timezone, misfire,
                      next_run_at, now() AS now
               FROM schedules WHERE next_run_at <= now() AND NOT paused AND NOT disabled
               ORDER BY next_run_at LIMIT $1 FOR UPDATE SKIP LOCKED""", limit)
        if not rows:
            return 0, []
        now: datetime = rows[0]["now"]
        items: list[NewTask] = []
        advances: list[tuple[uuid.UUID, datetime, int]] = []
        for r in rows:
            tasks, next_run_at = planner(DueSchedule(
                schedule_id=str(r["schedule_id"]), owner=r["owner"], task_type=r["task_type"],
                params=r["params"], cron=r["cron"], timezone=r["timezone"],
                misfire=r["misfire"], next_run_at=r["next_run_at"]), now)
            items += tasks
            advances.append((r["schedule_id"], next_run_at, len(tasks)))
        await conn.executemany(
            """UPDATE schedules SET next_run_at = $2, fired = fired + $3, updated_at = now(),
                      last_fired_at = CASE WHEN $3 > 0 THEN now() ELSE last_fired_at END
               WHERE schedule_id = $1""", advances)
        # Last, just before COMMIT: ts_create_tasks locks the tenant's counter row, which
        # every event append of that tenant waits for (see 040_fast_paths.sql).
        made = await _insert_new(conn, [uuid.uuid4() for _ in items], items) if items else {}
    return len(rows), [(task, ev) for task, ev in made.values() if ev is not None]


async def seconds_to_next_schedule(db: Executor) -> float | None:
    """How long until the earliest active schedule is due (negative: overdue); None: none."""
    value = await db.fetchval(
        """SELECT extract(epoch FROM min(next_run_at) - now())::float8 FROM schedules
           WHERE NOT paused AND NOT disabled""")
    return None if value is None else float(value)




async def create_schedule(db: Executor, s: NewSchedule) -> uuid.UUID:
    schedule_id = uuid.uuid4()
    await ensure_tenant(db, s.owner)
    await db.execute(
        """INSERT INTO schedules (schedule_id, owner, task_type, params, cron, timezone,
                                  misfire, next_run_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        schedule_id, s.owner, s.task_type, s.params, s.cron, s.timezone, s.misfire,
        s.next_run_at)
    return schedule_id


async def set_schedule_paused(db: Executor, schedule_id: uuid.UUID, owner: str, paused: bool,
                              next_run_at: datetime | None = None) -> bool:
    """Pause, or resume from ``next_run_at`` (slots passed while paused are not owed)."""
    status = await db.execute(
        """UPDATE schedules SET paused = $3, updated_at = now(),
                  next_run_at = coalesce($4, next_run_at)
           WHERE schedule_id = $1 AND owner = $2""",
        schedule_id, owner, paused, next_run_at)
    return status != "UPDATE 0"


async def delete_schedule(db: Executor, schedule_id: uuid.UUID, owner: str) -> bool:
    status = await db.execute("DELETE FROM schedules WHERE schedule_id = $1 AND owner = $2",
                              schedule_id, owner)
    return status != "DELETE 0"


async def declare_schedules(db: Executor, owner: str, declared: Sequence[NewSchedule]) -> None:
    """Upsert the schedules that ``@task(cron=...)`` declares, one per task type: a changed
    expression or timezone restarts from its next slot, an unchanged one keeps its place."""
    if not declared:
        return
    await ensure_tenant(db, owner)
    await db.executemany(
        """INSERT INTO schedules AS s (schedule_id, owner, task_type, params, cron, timezone,
                                       misfire, declared, next_run_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8)
           ON CONFLICT (owner, task_type) WHERE declared DO UPDATE SET
               params = excluded.params, misfire = excluded.misfire, disabled = false,
               cron = excluded.cron, timezone = excluded.timezone, updated_at = now(),
               next_run_at = CASE WHEN s.disabled OR s.cron <> excluded.cron
                                       OR s.timezone <> excluded.timezone
                                  THEN excluded.next_run_at ELSE s.next_run_at END""",
        [(uuid.uuid4(), owner, d.task_type, d.params, d.cron, d.timezone, d.misfire,
          d.next_run_at) for d in declared])


async def declared_schedule_types(db: Executor, owner: str) -> list[str]:
    rows = await db.fetch(
        "SELECT task_type FROM schedules WHERE owner = $1 AND declared AND NOT disabled",
        owner)
    return [r["task_type"] for r in rows]


async def disable_declared_schedules(db: Executor, owner: str, task_types: Sequence[str]
                                     ) -> None:
    """Declarations gone from the code: their schedules stop (kept, for their history)."""
    await db.execute(
        """UPDATE schedules SET disabled = true, updated_at = now()
           WHERE owner = $1 AND declared AND task_type = ANY($2::text[])""",
        owner, list(task_types))
