"""The event log against a real PostgreSQL and Redis: the typed fast path for an attempt's
reports mixed with lifecycle events in one batch (order, fencing, snapshots, counters),
persist-then-publish, and the worker context's pipelined reporting."""

import asyncio
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from taskstream.context import AttemptSuperseded
from taskstream.core import store
from taskstream.core.constants import tenant_channel
from taskstream.core.eventlog import EventLog
from taskstream.core.events import NewEvent
from taskstream.core.settings import Settings
from taskstream.core.states import EventType
from worker.context import WorkerContext as TaskContext

P, L, PA = EventType.PROGRESS, EventType.LOG, EventType.PARTIAL


async def _tasks(pool: asyncpg.Pool, owner: str, n: int, *, start: bool = True) -> list[str]:
    made = await store.create_tasks(pool, [store.NewTask(owner, "noop", {}, 3)
                                           for _ in range(n)])
    ids = [t.task_id for t, _ in made]
    if start:
        res = await store.append_events(pool, [
            NewEvent(task_id=i, owner=owner, type=EventType.STARTED, attempt=1,
                     worker_id="w", lease=60) for i in ids])
        assert [r.outcome for r in res] == ["ok"] * n
    await store.flush(pool)
    return ids


def _ev(task_id: str, owner: str, etype: EventType, **kw: Any) -> NewEvent:
    kw.setdefault("attempt", 1)
    return NewEvent(task_id=task_id, owner=owner, type=etype, **kw)


async def test_mixed_batch_keeps_each_tasks_order_and_fences(pool: asyncpg.Pool) -> None:
    owner = f"o-{uuid.uuid4().hex[:8]}"
    a, b, c, d, e = await _tasks(pool, owner, 5)
    (pending,) = await _tasks(pool, owner, 1, start=False)
    missing = str(uuid.uuid4())
    batch = [
        _ev(a, owner, P, progress=10, message="ten"),
        _ev(b, owner, L, message="b log"),
        _ev(a, owner, L, message="a log"),
        _ev(a, owner, P, progress=20),                     # no message: the row keeps "ten"
        _ev(b, owner, PA, data={"part": 1}),
        _ev(a, owner, EventType.COMPLETED, result={"ok": True}, progress=20),
        _ev(a, owner, P, progress=30),                     # after completed: refused
        _ev(c, owner, P, progress=5, attempt=2),           # not the current attempt
        _ev(pending, owner, P, progress=5),                # never started: no attempt 1
        _ev(missing, owner, P, progress=5),
        _ev(d, owner, EventType.FAILED, error="boom", data={"reason": "error"}),
        _ev(d, owner, P, progress=50),                     # after a terminal event
        _ev(e, owner, P, progress=40, message="forty", data={"k": [1, 2]}),
    ]
    res = await store.append_events(pool, batch)
    assert [r.outcome for r in res] == ["ok", "ok", "ok", "ok", "ok", "ok", "illegal", "fenced",
                                        "fenced", "missing", "ok", "illegal", "ok"]
    ok = [r.event for r in res if r.event is not None]
    # per task: seq continues after 'created' (1) and 'started' (2); snapshots in order
    a_events = [r.event for r in res[:6] if r.event is not None and r.event.task_id == a]
    assert [(x.seq, x.type, x.progress, x.status) for x in a_events] == [
        (3, "progress", 10, "running"), (4, "log", 10, "running"),
        (5, "progress", 20, "running"), (6, "completed", 100, "completed")]
    assert res[4].event is not None and res[4].event.data == {"part": 1}
    # the tenant's counter: one number per accepted event, no gaps, no repeats
    tseqs = sorted(x.tenant_seq for x in ok)
    assert tseqs == list(range(tseqs[0], tseqs[0] + len(ok)))
    rows = {r["task_id"]: r for r in await pool.fetch(
        "SELECT task_id::text, status, progress, message, last_seq FROM tasks"
        " WHERE task_id = ANY($1::uuid[])", [a, b, c, d, e])}
    assert (rows[a]["status"], rows[a]["progress"], rows[a]["last_seq"]) == ("completed", 100, 6)
    assert (rows[b]["status"], rows[b]["last_seq"]) == ("running", 4)
    assert (rows[c]["progress"], rows[c]["last_seq"]) == (0, 2)
    assert (rows[d]["status"], rows[d]["last_seq"]) == ("failed", 3)
    assert (rows[e]["progress"], rows[e]["message"], rows[e]["last_seq"]) == (40, "forty", 3)
    stored = await pool.fetch("SELECT seq, type, progress, message, data FROM task_events"
                              " WHERE task_id = $1 ORDER BY seq", uuid.UUID(a))
    assert [(s["seq"], s["type"], s["progress"]) for s in stored] == [
        (1, "created", 0), (2, "started", 0), (3, "progress", 10), (4, "log", 10),
        (5, "progress", 20), (6, "completed", 100)]
    assert stored[3]["message"] == "a log"


async def test_progress_without_message_keeps_the_rows_message(pool: asyncpg.Pool) -> None:
    owner = f"o-{uuid.uuid4().hex[:8]}"
    (t,) = await _tasks(pool, owner, 1)
    await store.append_events(pool, [_ev(t, owner, P, progress=1, message="first")])
    await store.append_events(pool, [_ev(t, owner, P, progress=2), _ev(t, owner, L, message="x")])
    row = await pool.fetchrow("SELECT progress, message FROM tasks WHERE task_id = $1",
                              uuid.UUID(t))
    assert (row["progress"], row["message"]) == (2, "first")
    await store.append_events(pool, [_ev(t, owner, EventType.COMPLETED, result=None)])
    (late,) = await store.append_events(pool, [_ev(t, owner, P, progress=3)])  # fast path alone
    assert (late.outcome, late.status) == ("illegal", "completed")


async def test_fast_path_stores_messages_and_data_as_given(pool: asyncpg.Pool) -> None:
    """The fast path's rows travel as one JSON list: text that looks like JSON, quotes,
    newlines and astral characters come back as given; a missing message or data is NULL,
    and the JSON value null in a message's or data's place is not confused with it."""
    owner = f"o-{uuid.uuid4().hex[:8]}"
    (t,) = await _tasks(pool, owner, 1)
    cases: list[tuple[str | None, Any]] = [
        ("null", "null"), ('{"a": 1}', {"a": None}), ('quote " back\\slash\n', [1.5, "x"]),
        ("🙂 naïve 日本", 0), ("", False), (None, None), (None, {"1": [None]}),
    ]
    res = await store.append_events(pool, [
        _ev(t, owner, L if i % 2 else P, progress=None if i % 2 else float(i), message=m,
            data=d) for i, (m, d) in enumerate(cases)])
    assert [r.outcome for r in res] == ["ok"] * len(cases)
    stored = await pool.fetch(
        "SELECT message, data, data IS NULL AS no_data, progress FROM task_events"
        " WHERE task_id = $1 AND seq > 2 ORDER BY seq", uuid.UUID(t))
    assert [(s["message"], s["data"]) for s in stored] == cases
    assert [s["no_data"] for s in stored] == [d is None for _, d in cases]
    assert [s["progress"] for s in stored][:3] == [0.0, 0.0, 2.0]


async def test_one_batch_spanning_tenants_numbers_each_tenant(pool: asyncpg.Pool) -> None:
    owners = [f"o-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    ids = {o: await _tasks(pool, o, 2) for o in owners}
    before = {o: await store.tenant_last_seq(pool, o) for o in owners}
    batch = [_ev(t, o, P, progress=float(k)) for k in range(1, 4)
             for o in owners for t in ids[o]]
    res = await store.append_events(pool, batch)
    assert all(r.outcome == "ok" for r in res)
    for o in owners:
        mine = sorted(r.event.tenant_seq for r in res if r.event and r.event.owner == o)
        assert mine == list(range(before[o] + 1, before[o] + 7))


async def test_events_are_published_after_they_are_durable_in_order(
        pool: asyncpg.Pool, redis: Redis, settings: Settings) -> None:
    owner = f"o-{uuid.uuid4().hex[:8]}"
    ids = await _tasks(pool, owner, 4)
    log = EventLog(pool, redis, settings.namespace, max_batch=7)
    log.start()
    async with redis.pubsub() as ps:
        await ps.subscribe(tenant_channel(settings.namespace, owner))
        await ps.get_message(timeout=1)  # the subscribe confirmation
        futs = [log.enqueue(_ev(t, owner, P, progress=float(k)))
                for k in range(1, 11) for t in ids]
        results = await asyncio.gather(*futs)
        got: list[dict[str, Any]] = []
        while len(got) < 40:
            msg = await ps.get_message(ignore_subscribe_messages=True, timeout=5)
            assert msg is not None, f"only {len(got)} of 40 published"
            got.append(orjson.loads(msg["data"]))
    await log.close()
    assert all(r.outcome == "ok" for r in results)
    assert [m["tenant_seq"] for m in got] == sorted(m["tenant_seq"] for m in got)
    for t in ids:  # each task's events arrive in its order, all of them
        assert [m["progress"] for m in got if m["task_id"] == t] == [float(k) for k in range(1, 11)]
    stored = await pool.fetchval("SELECT count(*) FROM task_events WHERE owner = $1"
                                 " AND type = 'progress'", owner)
    assert stored == 40
    assert log.batches > 1  # max_batch 7: the 40 events went in several batches


class _HeldLog(EventLog):
    """An event log whose publish of its first batch waits for ``release``."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.release = asyncio.Event()
        self.publishing = asyncio.Event()
        self.published = 0

    async def _publish(self, events: Any) -> None:
        if self.published == 0:
            self.publishing.set()
            await self.release.wait()
        self.published += 1
        await super()._publish(events)


async def test_a_batch_is_appended_while_the_one_before_is_published(
        pool: asyncpg.Pool, redis: Redis, settings: Settings) -> None:
    """The second stage (flush, publish) of one batch overlaps the next batch's append;
    callers are answered only after their own batch is published, and appends run at most
    one batch ahead of the publishes."""
    owner = f"o-{uuid.uuid4().hex[:8]}"
    a, b, c = await _tasks(pool, owner, 3)
    log = _HeldLog(pool, redis, settings.namespace)
    log.start()
    try:
        first = log.enqueue(_ev(a, owner, P, progress=1))
        await asyncio.wait_for(log.publishing.wait(), 5)
        second = log.enqueue(_ev(b, owner, P, progress=2))

        async def stored(task_id: str) -> int:
            return int(await pool.fetchval("SELECT count(*) FROM task_events WHERE task_id ="
                                           " $1::uuid AND type = 'progress'", task_id))

        for _ in range(500):  # the second batch is appended while the first is held
            if await stored(b):
                break
            await asyncio.sleep(0.01)
        assert await stored(b) == 1
        third = log.enqueue(_ev(c, owner, P, progress=3))
        await asyncio.sleep(0.2)
        assert not first.done() and not second.done()
        assert await stored(c) == 0  # at most one batch ahead of the publishes
        log.release.set()
        results = await asyncio.wait_for(asyncio.gather(first, second, third), 5)
        assert [r.outcome for r in results] == ["ok"] * 3 and log.published == 3
    finally:
        log.release.set()
        await log.close()


async def test_context_reports_are_pipelined_with_back_pressure(
        pool: asyncpg.Pool, redis: Redis, settings: Settings) -> None:
    owner = f"o-{uuid.uuid4().hex[:8]}"
    (t,) = await _tasks(pool, owner, 1)
    log = EventLog(pool, redis, settings.namespace)
    ctx = TaskContext(task_id=t, owner=owner, attempt=1, worker_id="w", eventlog=log,
                      pool=pool, settings=settings.model_copy(update={"progress_window": 3}))
    # The writer is not running: reports queue up to the window, then the next one waits.
    for k in range(1, 4):
        await asyncio.wait_for(ctx.progress(k), 1)
    blocked = asyncio.create_task(ctx.progress(4))
    await asyncio.sleep(0.1)
    assert not blocked.done()
    log.start()
    await asyncio.wait_for(blocked, 5)
    await ctx.log("done")
    await ctx.flush()
    stored = await pool.fetch("SELECT type, progress FROM task_events WHERE task_id = $1"
                              " AND seq > 2 ORDER BY seq", uuid.UUID(t))
    assert [(r["type"], r["progress"]) for r in stored] == [
        ("progress", 1), ("progress", 2), ("progress", 3), ("progress", 4), ("log", 4)]
    # Superseded (another attempt started): the refusal surfaces at the next report or flush.
    await store.append_events(pool, [_ev(t, owner, EventType.REQUEUED, data={"reason": "x"}),
                                     _ev(t, owner, EventType.STARTED, attempt=2, lease=60,
                                         worker_id="w2")])
    await ctx.progress(50)
    with pytest.raises(AttemptSuperseded):
        await ctx.flush()
    await log.close()


#: What store._appended reads by position from every function that appends events.
APPEND_COLUMNS = ("idx integer, outcome text, seq bigint, tenant_seq bigint, status text, "
                  "progress double precision, attempt integer, "
                  "created_at timestamp with time zone")


async def test_append_functions_return_the_columns_appended_reads(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch(
        "SELECT p.proname, pg_get_function_result(p.oid) AS result FROM pg_proc p "
        "WHERE p.proname IN ('ts_append', 'ts_append_events', 'ts_start_limited')")
    assert {r["proname"] for r in rows} == {"ts_append", "ts_append_events",
                                            "ts_start_limited"}
    for r in rows:
        assert r["result"].startswith(f"TABLE({APPEND_COLUMNS}"), r["proname"]
