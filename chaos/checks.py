"""After the run: what PostgreSQL holds and what the clients saw, checked against the
invariants the service promises. Every check returns the violations it found, each one
self-explanatory.
"""

import itertools
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chaos.followers import Follow
from chaos.leases import Loss
from chaos.snapshot import Ev, Row, Snapshot
from chaos.tasktypes import APPROVAL, KEY_LIMIT, LIMIT, LIMITED, STEPS
from chaos.workload import TaskSpec
from taskstream.core.constants import BATCH_TASK_TYPE
from taskstream.core.schedules import next_after

TERMINAL = frozenset({"completed", "failed", "cancelled"})
#: Events after which their attempt is over: any later write of that attempt is a late one.
ENDS_ATTEMPT = frozenset({"retrying", "requeued", "suspended"})
#: Events the API or a sweeper appends to a pending task: they carry the current attempt's
#: number, though that attempt is over (a cancel, a concurrency-limit wait, a resumed wait).
PENDING_EVENTS = frozenset({"cancelled", "waiting", "resumed"})
#: The idempotency keys of the tasks a cron schedule fires: schedule:<id>:<slot>.
SCHEDULE_KEY = "schedule:"


@dataclass
class Check:
    name: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def check_all(snap: Snapshot, specs: list[TaskSpec], follows: list[Follow],
              lost: list[Loss]) -> list[Check]:
    return [accepted_terminal(snap, specs), one_terminal_event(snap), fencing(snap),
            gap_free(snap), outcomes(snap, specs), poison_pills(snap, lost),
            clients_exactly_once(snap, follows), clients_only_durable(snap, follows),
            not_before_run_at(snap), schedule_slots_once(snap),
            limits_held(snap, {LIMITED: LIMIT}, {LIMITED: KEY_LIMIT}),
            steps_once(snap), waits_resume_once(snap), agent_tokens(snap, specs),
            documents_stored_once(snap), token_streams_exact(snap, specs, follows)]


def steps_once(snap: Snapshot) -> Check:
    """A completed step is never executed again: no attempt after the one that recorded it
    began it (an attempt that died inside a step may run it again: that one was not
    completed). And every step a completed chaos task recorded did run."""
    c = Check("no completed durable step ran again")
    for (tid, step), attempt in snap.steps.items():
        if snap.tasks[tid].task_type not in (STEPS, APPROVAL):
            continue  # only chaos' own step types count their executions
        c.checked += 1
        ran = snap.step_runs.get((tid, step), [])
        if attempt not in ran and not step.startswith("wait:"):
            c.violations.append(f"task {tid}: step {step!r} recorded by attempt {attempt}, "
                                f"which never ran it (ran: {ran})")
        later = [a for a in ran if a > attempt]
        if later:
            c.violations.append(f"task {tid}: step {step!r} completed by attempt {attempt} "
                                f"but ran again in attempt(s) {later}")
    return c


def documents_stored_once(snap: Snapshot) -> Check:
    """A document is stored whole or not at all, once, whatever the kills: a completed
    document_process has as many chunks as its result says, each once, each with one vector
    in one space; any other has none or (stored, then lost before completing) all of them."""
    c = Check("every document's chunks and vectors stored once, whole")
    for tid, row in snap.tasks.items():
        if row.task_type != "document_process":
            continue
        c.checked += 1
        chunks, distinct, vectors, spaces = snap.documents.get(tid, (0, 0, 0, 0))
        whole = chunks == distinct == vectors and spaces <= 1
        if row.status == "completed":
            want = (row.result or {}).get("chunks")
            if not (whole and chunks == want and spaces == 1):
                c.violations.append(f"task {tid}: {chunks} chunks ({distinct} distinct), "
                                    f"{vectors} vectors in {spaces} space(s); result says {want}")
        elif not whole:
            c.violations.append(f"task {tid} ({row.status}): {chunks} chunks, {distinct} "
                                f"distinct, {vectors} vectors: half-written")
    return c


def waits_resume_once(snap: Snapshot) -> Check:
    """One signal resumes a suspended run at most once, and each suspension is followed by
    at most one resume."""
    c = Check("each wait resumed at most once per suspension")
    for tid, evs in snap.events.items():
        kinds = [e.type for e in evs if e.type in ("suspended", "resumed")]
        if not kinds:
            continue
        c.checked += 1
        for prev, cur in itertools.pairwise(kinds):
            if prev == cur == "resumed":
                c.violations.append(f"task {tid}: resumed twice after one suspension")
        if kinds[0] == "resumed":
            c.violations.append(f"task {tid}: resumed before it was ever suspended")
    return c


def token_streams_exact(snap: Snapshot, specs: list[TaskSpec], follows: list[Follow]) -> Check:
    """Model text: every completed ``demo_tokens`` task stored its exact text once, and every
    follower's tokens (dropped and resumed mid-text) equal the durable text when it arrived."""
    c = Check("every resumed token stream is exact (equal to the durable text)")
    for s in specs:
        row = snap.tasks.get(s.task_id or "")
        if s.kind != "tokens" or row is None or row.status != "completed":
            continue
        c.checked += 1
        ends = [e for e in snap.events.get(row.task_id, []) if e.type == "completed"]
        attempt = ends[-1].attempt if ends else 0
        got = snap.texts.get((row.task_id, attempt, "answer"))
        if got != s.text:
            c.violations.append(f"task {row.task_id}: durable text of attempt {attempt} is "
                                f"{'missing' if got is None else f'{len(got)} characters'}, "
                                f"expected {len(s.text or '')}")
    for f in follows:
        c.checked += f.texts.checked
        c.violations.extend(f.texts.violations)
    return c


def not_before_run_at(snap: Snapshot) -> Check:
    c = Check("no delayed task started before its run_at")
    for tid, row in snap.tasks.items():
        if row.run_at is None:
            continue
        c.checked += 1
        for e in snap.events.get(tid, []):
            if e.type == "started" and e.created < row.run_at:
                c.violations.append(f"task {tid}: attempt {e.attempt} started "
                                    f"{row.run_at - e.created:.3f}s before its run_at")
    return c


def accepted_terminal(snap: Snapshot, specs: list[TaskSpec]) -> Check:
    c = Check("every accepted task exists, once, in a terminal status")
    by_key: dict[str, list[Row]] = defaultdict(list)
    for r in snap.tasks.values():
        if r.parent_id is None and r.task_type != BATCH_TASK_TYPE:  # batches: chaos/batches
            by_key[r.key or ""].append(r)
    ours = {s.key for s in specs}
    for key, rows in by_key.items():
        if key not in ours and not key.startswith(SCHEDULE_KEY):
            c.violations.append(f"task {rows[0].task_id} has an Idempotency-Key the run "
                                f"never sent ({key!r})")
    for s in specs:
        if s.refused is not None:
            c.violations.append(f"submission #{s.n} ({s.kind}) never accepted: {s.refused}")
            continue
        if s.task_id is None:
            continue
        c.checked += 1
        rows = by_key.get(s.key, [])
        row = snap.tasks.get(s.task_id)
        if row is None:
            c.violations.append(f"accepted task {s.task_id} ({s.kind}) is not in PostgreSQL")
        elif row.status not in TERMINAL:
            c.violations.append(f"task {s.task_id} ({s.kind}) stuck {row.status}")
        if len(rows) != 1 or (row is not None and rows[0].task_id != row.task_id):
            c.violations.append(f"Idempotency-Key of #{s.n} maps to {len(rows)} tasks "
                                f"{[r.task_id for r in rows]}, client got {s.task_id}")
    return c


def one_terminal_event(snap: Snapshot) -> Check:
    c = Check("exactly one terminal event per task, matching its status")
    for tid, evs in snap.events.items():
        c.checked += 1
        ends = [e for e in evs if e.type in TERMINAL]
        row = snap.tasks[tid]
        if len(ends) != 1:
            c.violations.append(f"task {tid}: {len(ends)} terminal events "
                                f"{[(e.seq, e.type, e.attempt) for e in ends]}")
        elif ends[0].type != row.status:
            c.violations.append(f"task {tid}: status {row.status} but terminal event "
                                f"{ends[0].type}")
    return c


def fencing(snap: Snapshot) -> Check:
    """No write of an attempt after that attempt was superseded (re-queued as worker_lost,
    or ended by a retry), and every new attempt is the previous one plus one."""
    c = Check("no superseded attempt's write accepted (fencing)")
    for tid, evs in snap.events.items():
        c.checked += 1
        ended: dict[int, Ev] = {}
        newest = 0
        prev_status = "pending"
        for e in evs:
            if e.type == "started":
                if e.attempt != newest + 1:
                    c.violations.append(f"task {tid} seq {e.seq}: attempt {e.attempt} "
                                        f"started after attempt {newest}")
                newest = max(newest, e.attempt)
            elif e.attempt in ended and not (e.type in PENDING_EVENTS
                                             and prev_status == "pending"):
                end = ended[e.attempt]
                c.violations.append(
                    f"task {tid} seq {e.seq}: '{e.type}' of attempt {e.attempt} accepted "
                    f"after seq {end.seq} '{end.type}' ({end.reason}) ended that attempt")
            elif e.type not in ("created", "cancel_requested", "cancelled") and \
                    e.attempt != newest:
                c.violations.append(f"task {tid} seq {e.seq}: '{e.type}' of attempt "
                                    f"{e.attempt} while attempt {newest} is the newest")
            if e.type in ENDS_ATTEMPT:
                ended[e.attempt] = e
            prev_status = e.status
    return c


def gap_free(snap: Snapshot) -> Check:
    c = Check("per-task seq gap-free 1..last_seq, nothing after the terminal event")
    for tid, row in snap.tasks.items():
        c.checked += 1
        evs = snap.events.get(tid, [])
        seqs = [e.seq for e in evs]
        if seqs != list(range(1, row.last_seq + 1)):
            c.violations.append(f"task {tid}: seqs {_ranges(seqs)} but last_seq {row.last_seq}")
            continue
        if evs and evs[0].type != "created":
            c.violations.append(f"task {tid}: first event is {evs[0].type!r}")
        term = [i for i, e in enumerate(evs) if e.type in TERMINAL]
        if term and term[0] != len(evs) - 1:
            after = [(e.seq, e.type) for e in evs[term[0] + 1:]]
            c.violations.append(f"task {tid}: events after its terminal event: {after}")
        tseqs = [e.tenant_seq for e in evs]
        if tseqs != sorted(tseqs):
            c.violations.append(f"task {tid}: tenant_seq not increasing along seq: {tseqs}")
    return c


def outcomes(snap: Snapshot, specs: list[TaskSpec]) -> Check:
    c = Check("each task ended as its kind allows (and completed ones carry their result)")
    for s in specs:
        row = snap.tasks.get(s.task_id or "")
        if row is None or row.status not in TERMINAL:
            continue
        c.checked += 1
        got = (row.status, row.failure_reason)
        if got not in s.allowed:
            c.violations.append(f"task {row.task_id} ({s.kind}, {json.dumps(s.body)}) ended "
                                f"{got}; allowed {sorted(s.allowed, key=str)}")
        elif row.status == "completed" and _result(s, row.result) != s.result:
            c.violations.append(f"task {row.task_id} completed with {row.result!r}, "
                                f"expected {s.result!r}")
        c.violations.extend(f"task {row.task_id}: {n}" for n in s.notes)
    return c


def _result(spec: TaskSpec, result: Any) -> Any:
    """The part of a result the spec predicts (an agent's token count depends on its
    prompts: agent_tokens checks it against the usage record instead)."""
    if spec.kind == "agent" and isinstance(result, dict):
        return {k: v for k, v in result.items() if k != "tokens_used"}
    return result


_MODEL_STEP = re.compile(r"^(plan|decide-\d+|answer)$")


def agent_tokens(snap: Snapshot, specs: list[TaskSpec]) -> Check:
    """Each model call an agent run recorded as a step was paid for once, by the attempt that
    recorded it: its usage row exists, no later attempt called the model for it again, and
    the run's ``tokens_used`` is the sum of those rows."""
    c = Check("agent runs: each recorded model step called the model once, tokens add up")
    for s in specs:
        row = snap.tasks.get(s.task_id or "")
        if s.kind != "agent" or row is None or row.status != "completed":
            continue
        c.checked += 1
        tid, total = row.task_id, 0
        model_steps = [(st, a) for (t, st), a in snap.steps.items()
                       if t == tid and _MODEL_STEP.match(st)]
        if len(model_steps) != 4:  # plan, decide-0, decide-1, answer
            c.violations.append(f"agent {tid}: model steps {sorted(model_steps)}")
        for step, attempt in model_steps:
            tokens = snap.usage.get((tid, step, attempt))
            if tokens is None:
                c.violations.append(f"agent {tid}: step {step!r} (attempt {attempt}) has no "
                                    "usage row")
                continue
            total += tokens
            again = [a for (t, st, a) in snap.usage if t == tid and st == step and a > attempt]
            if again:
                c.violations.append(f"agent {tid}: step {step!r} recorded by attempt "
                                    f"{attempt} but called the model again in {again}")
        used = row.result.get("tokens_used") if isinstance(row.result, dict) else None
        if used != total:
            c.violations.append(f"agent {tid}: tokens_used {used}, recorded steps {total}")
    return c


def poison_pills(snap: Snapshot, lost: list[Loss]) -> Check:
    """``worker_lost`` as a final reason means the task killed its worker max_crashes times;
    a lease that expired while its worker was alive (say, PostgreSQL was away for longer than
    a lease) is not the task's fault."""
    c = Check("no task failed as worker_lost while one of its 'lost' workers was alive")
    per_task: dict[str, list[Loss]] = defaultdict(list)
    for loss in lost:
        per_task[loss.ev.task_id].append(loss)
    for tid, row in snap.tasks.items():
        if row.status != "failed" or row.failure_reason != "worker_lost":
            continue
        c.checked += 1
        alive = [x for x in per_task[tid] if x.why == "alive"]
        if alive:
            c.violations.append(
                f"task {tid} failed as worker_lost after {len(per_task[tid])} lost leases, "
                f"{len(alive)} of them while the worker was alive "
                f"(attempts {[x.ev.attempt for x in alive]})")
    return c


def clients_exactly_once(snap: Snapshot, follows: list[Follow]) -> Check:
    c = Check("every resuming SSE client saw every event once, in order")
    for f in follows:
        c.checked += 1
        c.violations.extend(f.problems)
        c.violations.extend(f.stalls)
        got = [s.id for s in f.seen]
        if f.kind == "task":
            assert f.task_id is not None
            row = snap.tasks.get(f.task_id)
            if got != list(range(1, len(got) + 1)):
                c.violations.append(f"task stream {f.task_id}: ids {_ranges(got)} over "
                                    f"{f.connections} connections")
            elif not f.ended:
                c.violations.append(f"task stream {f.task_id} never ended (got {len(got)} of "
                                    f"{row.last_seq if row else '?'} events)")
            elif row is not None and len(got) != row.last_seq:
                c.violations.append(f"task stream {f.task_id} ended after {len(got)} of "
                                    f"{row.last_seq} events")
        else:
            top = got[-1] if got else 0
            want = sorted(t for t in snap.by_tenant_seq if t <= top)
            if got != want:
                c.violations.append(f"tenant stream: ids {_ranges(got)}, PostgreSQL has "
                                    f"{_ranges(want)}")
            elif top != max(snap.by_tenant_seq, default=0):
                c.violations.append(f"tenant stream stopped at {top} of "
                                    f"{max(snap.by_tenant_seq, default=0)}")
    return c


def clients_only_durable(snap: Snapshot, follows: list[Follow]) -> Check:
    c = Check("no event reached a client that PostgreSQL lacks")
    for f in follows:
        for s in f.seen:
            c.checked += 1
            evs = snap.events.get(s.task_id, [])
            db = evs[s.seq - 1] if 0 < s.seq <= len(evs) else None
            if db is None or db.seq != s.seq:
                c.violations.append(f"client got {s.type} seq {s.seq} of task {s.task_id} "
                                    f"(tenant_seq {s.tenant_seq}); PostgreSQL has no such event")
            elif (db.tenant_seq, db.type, db.status, db.attempt) != \
                    (s.tenant_seq, s.type, s.status, s.attempt):
                c.violations.append(
                    f"client got task {s.task_id} seq {s.seq} as "
                    f"{(s.tenant_seq, s.type, s.status, s.attempt)}, PostgreSQL has "
                    f"{(db.tenant_seq, db.type, db.status, db.attempt)}")
    return c


def _ranges(xs: list[int]) -> str:
    """[1,2,3,5,5,6] -> '1-3,5,5-6' (short, shows gaps, repeats and disorder)."""
    if not xs:
        return "[]"
    out: list[str] = []
    start = prev = xs[0]
    for x in xs[1:]:
        if x == prev + 1:
            prev = x
            continue
        out.append(f"{start}-{prev}" if prev != start else str(start))
        start = prev = x
    out.append(f"{start}-{prev}" if prev != start else str(start))
    text = ",".join(out)
    return text if len(text) < 200 else text[:200] + "..."


def schedule_slots_once(snap: Snapshot) -> Check:
    """A cron schedule's slots: each fired once, none skipped while it ran (the run's outages
    are shorter than the misfire grace, so every slot is owed)."""
    c = Check("every cron slot fired exactly once, none skipped")
    slots: dict[str, list[datetime]] = defaultdict(list)
    for r in snap.tasks.values():
        if r.key and r.key.startswith(SCHEDULE_KEY):
            sid, _, at = r.key[len(SCHEDULE_KEY):].partition(":")
            slots[sid].append(datetime.fromisoformat(at))
    for sid, sched in snap.schedules.items():
        mine = sorted(slots.get(sid, []))
        c.checked += len(mine)
        if not mine:
            c.violations.append(f"schedule {sid} never fired")
            continue
        if sched.fired != len(mine):
            c.violations.append(f"schedule {sid} fired {sched.fired} times for {len(mine)} "
                                "tasks: a slot was claimed twice")
        doubles = sorted({s for s in mine if mine.count(s) > 1})
        if doubles:
            c.violations.append(f"schedule {sid}: slots with more than one task {doubles}")
        owed: list[datetime] = []
        slot = mine[0]
        while slot <= mine[-1]:
            owed.append(slot)
            slot = next_after(sched.cron, sched.timezone, slot)
        skipped = sorted(set(owed) - set(mine))
        if skipped:
            c.violations.append(f"schedule {sid}: {len(skipped)} slots skipped "
                                f"{[s.isoformat() for s in skipped[:5]]}")
    return c


def running_spans(evs: list[Ev]) -> list[tuple[float, float]]:
    """When a task held a slot: from each 'started' to the next event that left 'running'
    (a task still running holds it to the end of time). A start's time is when its slot
    was taken (070_concurrency_limits.sql), an end's is before its commit: spans that
    overlap here overlapped in PostgreSQL."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for e in evs:
        if e.type == "started":
            start = e.created
        elif start is not None and e.status != "running":
            spans.append((start, e.created))
            start = None
    if start is not None:
        spans.append((start, float("inf")))
    return spans


def most_at_once(spans: list[tuple[float, float]]) -> tuple[int, float]:
    """The most spans open at one instant, and the first instant it happened (an end and a
    start at the same instant do not overlap)."""
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    n = best = 0
    when = 0.0
    for t, d in points:
        n += d
        if n > best:
            best, when = n, t
    return best, when


def limits_held(snap: Snapshot, limits: dict[str, int], key_limits: dict[str, int]
                ) -> Check:
    """No more than ``limits[type]`` tasks of a type ran at once, nor ``key_limits[type]``
    of one concurrency key; and no slot leaked: every task of those types ended."""
    c = Check("concurrency limits held and no slot leaked")
    groups: dict[tuple[str, str | None], list[tuple[float, float]]] = defaultdict(list)
    for tid, row in snap.tasks.items():
        if row.task_type not in limits and row.task_type not in key_limits:
            continue
        c.checked += 1
        if row.status not in TERMINAL:
            c.violations.append(f"task {tid} ({row.task_type}) never ended: {row.status}")
        spans = running_spans(snap.events.get(tid, []))
        groups[(row.task_type, None)] += spans
        if row.task_type in key_limits and row.concurrency_key is not None:
            groups[(row.task_type, row.concurrency_key)] += spans
    for (ttype, key), spans in groups.items():
        cap = limits.get(ttype) if key is None else key_limits[ttype]
        if cap is None:
            continue
        most, when = most_at_once(spans)
        if most > cap:
            which = ttype if key is None else f"{ttype} key {key!r}"
            c.violations.append(f"{most} tasks of {which} ran at once at {when:.3f} "
                                f"(limit {cap})")
    return c
