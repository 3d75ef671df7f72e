"""What ``core.queue`` assumes of arq's internals, pinned: an arq upgrade that changes any of
it fails here, in one place, instead of as lost or doubled jobs in production."""

import inspect
import re
import uuid
from importlib.metadata import version

import arq
from arq.constants import (
    abort_jobs_ss,
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import Job, JobStatus, deserialize_job
from arq.worker import Worker

from taskstream.core import queue
from taskstream.core.constants import RUN_TASK_FUNCTION, queue_name
from taskstream.core.settings import Settings


def test_arq_release_is_the_one_pinned() -> None:
    assert version("arq") == "0.28.0", "core.queue re-implements arq 0.28 internals; re-check"


def test_key_layout() -> None:
    # The Lua scripts and the finisher write these keys by name.
    assert (job_key_prefix, in_progress_key_prefix, result_key_prefix, retry_key_prefix,
            abort_jobs_ss) == ("arq:job:", "arq:in-progress:", "arq:result:", "arq:retry:",
                               "arq:abort")
    assert expires_extra_ms == 86_400_000


def test_overridden_worker_methods_keep_their_signatures() -> None:
    expected = {
        "_poll_iteration": ["self"],
        "start_jobs": ["self", "job_ids"],
        "finish_job": ["self", "job_id", "finish", "result_data", "result_timeout_s",
                       "keep_result_forever", "incr_score", "keep_in_progress"],
        "run_job": ["self", "job_id", "score"],
        "finish_failed_job": ["self", "job_id", "result_data"],
        "_release_sem_dec_counter_on_complete": ["self"],
    }
    for name, params in expected.items():
        assert list(inspect.signature(getattr(Worker, name)).parameters) == params, name
        assert getattr(queue.BatchingWorker, name).__qualname__.split(".")[0] in (
            "Worker", "BatchingWorker")


async def test_worker_state_and_in_progress_lifetime(settings: Settings) -> None:
    """(async: arq's Worker takes the running loop.) The attributes the batched claim
    touches, and the marker's lifetime that ``held_for``
    inverts: arq sets it to the job timeout + IN_PROGRESS_MARGIN_S."""

    async def startup(ctx: dict[str, object]) -> None: ...

    async def run(ctx: dict[str, object], task_id: str) -> str:
        return task_id

    w = queue.build_worker(settings, run, on_startup=startup, on_shutdown=startup, burst=True)
    assert w.in_progress_timeout_s == queue.job_timeout(settings) + queue.IN_PROGRESS_MARGIN_S
    assert w.job_counter == 0 and w.tasks == {}
    assert w.poll_delay_s == settings.worker_poll_delay  # start_jobs waits this for a slot
    assert w.sem._value == settings.worker_max_jobs + 1  # arq's BoundedSemaphore(max_jobs + 1)
    assert w.queue_name == queue_name(settings.namespace)
    assert list(w.functions) == [RUN_TASK_FUNCTION]


async def test_a_job_we_enqueue_is_the_job_arq_would_read(settings: Settings) -> None:
    """Our enqueue script writes arq's job record, score and expiry: arq's own ``Job`` reads
    it back, with our msgpack serializer (never pickle)."""
    s = settings.model_copy(update={"namespace": f"qc{uuid.uuid4().hex[:8]}"})
    redis = await queue.connect(s)
    try:
        task_id = str(uuid.uuid4())
        assert await queue.enqueue(redis, s, [(task_id, 1)], defer_by=30) == 1
        assert await queue.enqueue(redis, s, [(task_id, 1)]) == 0  # same state: refused
        jid = queue.job_id(task_id, 1)
        job = Job(jid, redis, _queue_name=queue_name(s.namespace),
                  _deserializer=queue.deserialize)
        assert await job.status() == JobStatus.deferred
        info = await job.info()
        assert info is not None
        assert (info.function, info.args, info.kwargs) == (RUN_TASK_FUNCTION, [task_id], {})
        raw = await redis.get(job_key_prefix + jid)
        assert deserialize_job(raw, deserializer=queue.deserialize).function == RUN_TASK_FUNCTION
        ttl = await redis.pttl(job_key_prefix + jid)
        assert expires_extra_ms < ttl <= expires_extra_ms + 30_000
        assert await queue.job_known(redis, jid)
        assert await queue.held_for(redis, s, jid) is None
    finally:
        await redis.aclose()


async def test_many_jobs_in_one_script_call_are_the_same_records(settings: Settings) -> None:
    """A batch's children are enqueued by one script call per 500 jobs: the same job
    records, scores, priority offsets and expiries as one call per job."""
    s = settings.model_copy(update={"namespace": f"qc{uuid.uuid4().hex[:8]}"})
    one = settings.model_copy(update={"namespace": f"qc{uuid.uuid4().hex[:8]}"})
    redis = await queue.connect(s)
    try:
        ids = [str(uuid.uuid4()) for _ in range(600)]
        jobs = [queue.Job.of(t, 1, {"priority": ("high", "normal", "low")[i % 3]})
                for i, t in enumerate(ids)]
        assert await queue.enqueue(redis, s, jobs) == 600
        assert await queue.enqueue(redis, s, jobs) == 0  # same state: refused
        singles = [str(uuid.uuid4()) for _ in range(3)]
        for i, t in enumerate(singles):  # the same priorities, one call each
            job = queue.Job.of(t, 1, {"priority": ("high", "normal", "low")[i]})
            assert await queue.enqueue(redis, one, [job]) == 1
        for i, t in enumerate(ids[:3]):
            jid = queue.job_id(t, 1)
            many_score = await redis.zscore(queue_name(s.namespace), jid)
            one_score = await redis.zscore(queue_name(one.namespace),
                                           queue.job_id(singles[i], 1))
            assert many_score is not None and one_score is not None
            assert abs(many_score - one_score) < 1000, (i, many_score, one_score)
            assert deserialize_job(await redis.get(job_key_prefix + jid),
                                   deserializer=queue.deserialize).args == [t]
        assert await redis.zcard(queue_name(s.namespace)) == 600
    finally:
        await redis.aclose()


def test_the_package_exports_what_we_build_on() -> None:
    assert arq.Worker is Worker
    assert queue.RunAgainLater is arq.worker.Retry


def test_priorities_ride_on_the_score_as_arq_reads_it() -> None:
    """The priority offsets rely on arq 0.28 (1) polling due jobs lowest score first with
    nothing else judged from the score (a score hours in the past is just "due", the job
    expires by its key's TTL only), and (2) re-scoring a job it runs again later at now +
    defer, whatever its claimed score (so the finisher can re-arm the offset)."""
    poll = inspect.getsource(Worker._poll_iteration)
    assert "zrangebyscore(" in poll and "min=float('-inf')" in poll and "max=now" in poll
    run_job = inspect.getsource(Worker.run_job)
    assert "incr_score = e.defer_score + (timestamp_ms() - score)" in run_job
    uses = [line.strip() for line in run_job.splitlines()
            if re.search(r"(?<![_.])score\b", line) and "def run_job" not in line]
    # The claimed score goes only to the job's ctx, a log line ("delayed=" says hours for a
    # high job: cosmetic) and the re-deferral's increment.
    assert uses == ["'score': score,", "if (start_ms - score) > 1200:",
                    "extra += f' delayed={(start_ms - score) / 1000:0.2f}s'",
                    "incr_score = e.defer_score + (timestamp_ms() - score)"]


def test_run_job_opens_as_the_claim_reads() -> None:
    """The claim reads each job's record and counts its try (``_CLAIM_LUA`` with read), in
    place of the transaction arq's ``run_job`` opens with: the same keys, the same TTL."""
    src = inspect.getsource(Worker.run_job)
    opening = src[:src.index("pipe.execute()")]
    assert "pipe.get(job_key_prefix + job_id)" in opening
    assert "pipe.incr(retry_key_prefix + job_id)" in opening
    assert "pipe.expire(retry_key_prefix + job_id, 88400)" in opening
    assert "if self.allow_abort_jobs:" in opening  # the abort ZREM: our fast run falls back
    assert queue._RETRY_KEY_TTL_S == 88400
    # what the fast run mirrors after that: timeout, Retry's re-score, the finish call
    assert "asyncio.wait_for(task, timeout_s)" in src
    assert "incr_score = e.defer_score + (timestamp_ms() - score)" in src
    assert "self.finish_job(" in src


async def test_our_run_of_a_claimed_job_leaves_what_arqs_run_job_leaves(
        settings: Settings) -> None:
    """The same jobs — one that completes, one that asks to run again later, one that
    fails, one whose record is gone — through ``_run_claimed`` (what the claim read) and
    through arq's own ``run_job``: the same keys, try counts, TTLs and scores afterwards."""
    states = {}
    for path in ("ours", "arq's"):
        s = settings.model_copy(update={"namespace": f"qc{uuid.uuid4().hex[:8]}"})

        async def nothing(ctx: dict[str, object]) -> None: ...

        async def run(ctx: dict[str, object], task_id: str) -> str:
            assert ctx["job_try"] == 1 and ctx["job_id"] == queue.job_id(task_id, 1)
            if task_id.startswith("later"):
                raise queue.RunAgainLater(defer=30)
            if task_id.startswith("fail"):
                raise ValueError("boom")
            return task_id

        redis = await queue.connect(s)
        w = queue.build_worker(s, run, on_startup=nothing, on_shutdown=nothing, burst=True)
        w._pool = redis  # what arq's main() would connect
        w.ctx["redis"] = redis
        q = queue_name(s.namespace)
        try:
            kinds = ["done", "later", "fail", "gone"]
            tasks = [f"{k}-{uuid.uuid4()}" for k in kinds]  # arq's job keys are global
            assert await queue.enqueue(redis, s, [(t, 1) for t in tasks]) == 4
            await redis.delete(job_key_prefix + queue.job_id(tasks[3], 1))
            ids = [queue.job_id(t, 1) for t in tasks]
            claimed, used = await queue.claim_from(redis, q, ids, 10, 60_000,
                                                   read=path == "ours")
            assert used == 4 and [c.job_id for c in claimed] == ids
            for c in claimed:
                if path == "ours":
                    assert c.job_try == 1 and (c.record is None) == (c.job_id == ids[3])
                    await w._run_claimed(c)
                else:
                    await w.run_job(c.job_id, c.score)
            state = {}
            for t, jid in zip(kinds, ids, strict=True):
                ttl = await redis.ttl(retry_key_prefix + jid)
                score = await redis.zscore(q, jid)
                state[t] = (await redis.get(retry_key_prefix + jid), ttl > 88_000,
                            await redis.exists(job_key_prefix + jid),
                            await redis.exists(in_progress_key_prefix + jid),
                            score is not None and score > queue.timestamp_ms() + 20_000)
            states[path] = state
        finally:
            if w._finisher is not None:
                await w._finisher.close()
            await redis.aclose()
    assert states["ours"] == states["arq's"], states
    # and what that state is: completed and failed jobs gone, the re-run one deferred 30 s
    assert states["ours"]["done"] == (None, False, 0, 0, False)
    assert states["ours"]["later"] == (b"1", True, 1, 0, True)
