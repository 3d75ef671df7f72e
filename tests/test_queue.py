"""The arq queue as the worker uses it, against a real Redis: jobs enqueued by the service are
claimed in one round trip per poll with arq's own checks (not held by another worker, due)."""

import asyncio
import time
import uuid
import warnings

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms

from taskstream.core import queue
from taskstream.core.constants import queue_name
from taskstream.core.settings import Settings
from taskstream.declaration import Priority


async def test_claim_takes_due_unheld_jobs_once_up_to_the_limit(settings: Settings) -> None:
    s = settings.model_copy(update={"namespace": f"q{uuid.uuid4().hex[:8]}"})
    arq = await queue.connect(s)
    try:
        due = [(str(uuid.uuid4()), 1) for _ in range(6)]
        later = [(str(uuid.uuid4()), 1)]
        assert await queue.enqueue(arq, s, due) == 6
        assert await queue.enqueue(arq, s, later, defer_by=60) == 1
        q = queue_name(s.namespace)
        ids = [queue.job_id(t, n) for t, n in due + later]
        held = ids[0]
        await arq.psetex(in_progress_key_prefix + held, 60_000, b"1")  # another worker's

        first = await queue.claim(arq, q, ids, 3, 30_000)
        assert [j for j, _ in first] == ids[1:4]
        # Two workers racing for the rest: each job goes to exactly one of them.
        a, b = await asyncio.gather(queue.claim(arq, q, ids, 10, 30_000),
                                    queue.claim(arq, q, ids, 10, 30_000))
        taken = [j for j, _ in a + b]
        assert sorted(taken) == sorted(ids[4:6])  # not the held one, not the deferred one
        for jid in ids[1:6]:
            ttl = await arq.pttl(in_progress_key_prefix + jid)
            assert 0 < ttl <= 30_000
        assert all(score > 0 for _, score in first)
        assert await queue.claim(arq, q, ids, 0, 30_000) == []
    finally:
        await arq.aclose()


async def _due_in_poll_order(arq: ArqRedis, s: Settings) -> list[str]:
    """What arq's poll reads: due job ids in score order."""
    raw = await arq.zrangebyscore(queue_name(s.namespace), min=float("-inf"),
                                  max=timestamp_ms())
    return [r.decode() for r in raw]


async def test_due_jobs_poll_in_priority_order_then_enqueue_order(settings: Settings) -> None:
    s = settings.model_copy(update={"namespace": f"q{uuid.uuid4().hex[:8]}"})
    arq = await queue.connect(s)
    try:
        order = [Priority.LOW, Priority.NORMAL, Priority.NORMAL, Priority.HIGH, Priority.LOW]
        jobs = []
        for p in order:
            jobs.append(queue.Job(str(uuid.uuid4()), 1, p))
            assert await queue.enqueue(arq, s, jobs[-1:]) == 1
            await asyncio.sleep(0.002)
        ids = [queue.job_id(j.task_id, j.seq) for j in jobs]
        assert await _due_in_poll_order(arq, s) == [ids[3], ids[1], ids[2], ids[0], ids[4]]
    finally:
        await arq.aclose()


async def test_a_deferred_job_gets_its_priority_when_due_never_before(settings: Settings) -> None:
    s = settings.model_copy(update={"namespace": f"q{uuid.uuid4().hex[:8]}"})
    arq = await queue.connect(s)
    try:
        q = queue_name(s.namespace)
        normal = [queue.Job(str(uuid.uuid4()), 1) for _ in range(300)]
        high = queue.Job(str(uuid.uuid4()), 1, Priority.HIGH, run_at=time.time() + 0.3)
        assert await queue.enqueue(arq, s, [high, *normal]) == 301
        hid = queue.job_id(high.task_id, 1)
        order = await _due_in_poll_order(arq, s)
        assert len(order) == 300 and hid not in order  # not due: no offset yet
        assert await queue.claim(arq, q, [], 5, 30_000) == []
        assert hid not in await _due_in_poll_order(arq, s)
        await asyncio.sleep(0.35)
        # Due, but behind 300 normal jobs: past a poll's read window (100 by default).
        assert (await _due_in_poll_order(arq, s))[-1] == hid
        # Any claim first gives it its offset, whatever ids the poll read.
        taken = await queue.claim(arq, q, order[:2], 2, 30_000)
        assert [j for j, _ in taken] == order[:2]
        assert (await _due_in_poll_order(arq, s))[0] == hid
        assert [j for j, _ in await queue.claim(arq, q, [hid], 1, 30_000)] == [hid]
    finally:
        await arq.aclose()


async def test_a_job_run_again_later_owes_its_priority_again(settings: Settings) -> None:
    """arq's Retry re-scores a job at now + defer; our finisher re-arms its offset."""
    s = settings.model_copy(update={"namespace": f"q{uuid.uuid4().hex[:8]}"})
    arq = await queue.connect(s)

    async def nothing(ctx: dict[str, object]) -> None: ...

    w = queue.build_worker(s, nothing, on_startup=nothing, on_shutdown=nothing, burst=True)
    try:
        q = queue_name(s.namespace)
        job = queue.Job(str(uuid.uuid4()), 1, Priority.HIGH)
        jid = queue.job_id(job.task_id, 1)
        await queue.enqueue(arq, s, [job])
        ((_, score),) = await queue.claim(arq, q, [jid], 1, 30_000)
        assert score < timestamp_ms() - queue.PRIORITY_OFFSET_MS[Priority.HIGH] + 1000
        w._pool = arq
        # What arq's run_job passes for Retry(defer=0.2): defer + (now - claimed score).
        await w.finish_job(jid, False, None, None, False,
                           200 + timestamp_ms() - score, None)
        assert _score(await arq.zscore(q, jid)) > timestamp_ms()  # deferred, not due
        await asyncio.sleep(0.25)
        assert await queue.claim(arq, q, [], 1, 30_000) == []  # promoted
        assert _score(await arq.zscore(q, jid)) < timestamp_ms() - 3_600_000
        await w.finish_job(jid, True, None, None, False, None, None)
        assert await arq.zscore(q, jid) is None
        assert await arq.hget(queue.offsets_key(q), jid) is None
        # A job arq gives up on (expired, out of tries) takes its offset along too.
        later = queue.Job(str(uuid.uuid4()), 1, Priority.HIGH, run_at=time.time() + 60)
        await queue.enqueue(arq, s, [later])
        lid = queue.job_id(later.task_id, 1)
        assert await arq.hget(queue.offsets_key(q), lid) is not None
        assert await arq.zscore(queue.promote_key(q), lid) is not None
        await w.finish_failed_job(lid, None)
        assert await arq.hget(queue.offsets_key(q), lid) is None
        assert await arq.zscore(queue.promote_key(q), lid) is None
    finally:
        if w._finisher is not None:  # not w.close(): it would close our connection by the
            await w._finisher.close()  # deprecated name
        await arq.aclose()


def _score(value: float | None) -> float:
    assert value is not None
    return value


async def test_a_poll_goes_on_claiming_as_slots_free_up(settings: Settings) -> None:
    """A poll reads more due jobs than there are free slots: ``start_jobs`` goes on
    claiming them as running jobs end, as arq's does (taking only the free slots once per
    poll capped a worker at max_jobs per poll delay); while every slot stays busy it waits
    at most one poll delay and leaves the rest for the next poll, so long jobs never stall
    the poll loop."""
    s = settings.model_copy(update={"namespace": f"q{uuid.uuid4().hex[:8]}",
                                    "worker_max_jobs": 2, "worker_poll_delay": 0.2})
    gate = asyncio.Event()
    ran: list[str] = []

    async def nothing(ctx: dict[str, object]) -> None: ...

    async def run(ctx: dict[str, object], task_id: str) -> None:
        await gate.wait()
        ran.append(task_id)

    arq = await queue.connect(s)
    w = queue.build_worker(s, run, on_startup=nothing, on_shutdown=nothing, burst=True)
    w._pool = arq  # what arq's main() would connect
    w.ctx["redis"] = arq
    try:
        jobs = [(str(uuid.uuid4()), 1) for _ in range(6)]
        await queue.enqueue(arq, s, jobs)
        ids = await arq.zrangebyscore(queue_name(s.namespace), min=float("-inf"),
                                      max=timestamp_ms())
        assert len(ids) == 6

        # Every slot busy: two start, the call returns after about one poll delay, the
        # other four are left unclaimed (no in-progress marker) for the next poll.
        await asyncio.wait_for(w.start_jobs(ids), 5)
        assert w.job_counter == 2
        marked = [await arq.exists(in_progress_key_prefix + j.decode()) for j in ids]
        assert sum(marked) == 2

        # Jobs that end free their slots, and one call takes the whole list.
        gate.set()
        await asyncio.wait_for(w.start_jobs(ids), 5)
        await asyncio.wait_for(asyncio.gather(*w.tasks.values()), 5)
        assert sorted(ran) == sorted(t for t, _ in jobs)
        assert w.job_counter == 0
    finally:
        with warnings.catch_warnings():  # arq's close() calls redis-py's deprecated close()
            warnings.simplefilter("ignore", DeprecationWarning)
            await w.close()


async def test_a_poll_reads_past_a_page_of_jobs_held_elsewhere(settings: Settings) -> None:
    """Jobs taken by a worker that then died keep arq's in-progress marker for the job
    timeout. A poll that read only the first page (queue_read_limit ids) would find them all
    held, every time, and never reach the jobs behind them (seen in the chaos run: hundreds
    of tasks never started after worker kills and a Redis restart)."""
    s = settings.model_copy(update={"namespace": f"q{uuid.uuid4().hex[:8]}",
                                    "worker_max_jobs": 2})
    ran: list[str] = []

    async def nothing(ctx: dict[str, object]) -> None: ...

    async def run(ctx: dict[str, object], task_id: str) -> None:
        ran.append(task_id)

    arq = await queue.connect(s)
    w = queue.build_worker(s, run, on_startup=nothing, on_shutdown=nothing, burst=True)
    w._pool = arq
    w.ctx["redis"] = arq
    try:
        page = w.queue_read_limit
        held = [(str(uuid.uuid4()), 1) for _ in range(page + 3)]
        await queue.enqueue(arq, s, held)
        for t, n in held:
            await arq.psetex(in_progress_key_prefix + queue.job_id(t, n), 60_000, b"1")
        behind = (str(uuid.uuid4()), 1)
        await asyncio.sleep(0.01)  # a later score: behind every held job
        await queue.enqueue(arq, s, [behind])

        await asyncio.wait_for(w._poll_iteration(), 5)
        await asyncio.wait_for(asyncio.gather(*w.tasks.values()), 5)
        assert ran == [behind[0]]
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            await w.close()
