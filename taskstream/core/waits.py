"""Re-queueing a run suspended by ``ctx.wait_for``: once per suspension, by whoever gets there
first — the signal's request (web), the run itself (the signal came while it was parking), or
the sweeper (the wait's deadline passed)."""

import uuid

from arq.connections import ArqRedis

from taskstream.core import store_steps
from taskstream.core.eventlog import EventLog
from taskstream.core.events import NewEvent
from taskstream.core.pending import append_pending
from taskstream.core.settings import Settings
from taskstream.core.states import EventType, Outcome
from taskstream.core.store import Executor


async def resume(db: Executor, eventlog: EventLog, arq: ArqRedis, settings: Settings,
                 task_id: uuid.UUID, name: str, *, timed_out: bool = False) -> bool:
    """Queue the suspended run again (a ``resumed`` event, then its job). False: someone
    else resumed it, or it is no longer pending (cancelled meanwhile)."""
    if not await store_steps.claim_resume(db, task_id, name):
        return False
    state = await store_steps.task_state(db, task_id)
    if state is None:
        return False
    _, owner, options = state
    message = (f"no signal {name!r} before the wait's timeout" if timed_out
               else f"signal {name!r} received")
    done = await append_pending(eventlog, arq, settings, NewEvent(
        task_id=str(task_id), owner=owner, type=EventType.RESUMED, message=message,
        data={"signal": name, "timed_out": timed_out},
    ), options=options)
    return done.outcome == Outcome.OK
