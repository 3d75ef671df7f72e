"""The arq queue as the worker uses it, against a real Redis: jobs enqueued by the service are
claimed in one round trip per poll with arq's own checks (not held by another worker, due)."""

import asyncio
import uuid

from arq.constants import in_progress_key_prefix

from taskstream.core import queue
from taskstream.core.constants import queue_name
from taskstream.core.settings import Settings


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
