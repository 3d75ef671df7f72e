"""The printed summary: faults, outcomes, recovery, HTTP statuses, streams, checks, logs."""

import re
import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from chaos.api import Api
from chaos.checks import Check
from chaos.deployment import Deployment
from chaos.faults import Chaos
from chaos.followers import Follow
from chaos.leases import Loss
from chaos.snapshot import Snapshot
from chaos.workload import TaskSpec

SHOW = 8  # violations printed per check


def render(*, title: str, dep: Deployment, chaos: Chaos, specs: list[TaskSpec], api: Api,
           follows: list[Follow], snap: Snapshot, checks: list[Check], lost: list[Loss],
           t0: float) -> str:
    out: list[str] = [title, ""]
    out.append("Faults injected (seconds from start):")
    for f in sorted(dep.faults, key=lambda f: f.started):
        out.append(f"  {f.started - t0:7.1f}s  {f.ended - f.started:5.1f}s  {f.kind:17} {f.detail}")
    kills = sum(f.kind == "kill worker" for f in dep.faults)
    out.append(f"  ({kills} workers SIGKILLed and restarted)")
    out.extend(f"  note: {n}" for n in chaos.notes)
    for slot in range(len(dep.worker_procs)):
        died = [w for w in dep.lives if w.slot == slot and w.how.startswith("died")]
        if died:
            assert died[0].ended is not None and died[-1].ended is not None
            out.append(f"  note: worker slot {slot} exited by itself {len(died)} times "
                       f"({died[0].how}) between {died[0].ended - t0:.1f}s and "
                       f"{died[-1].ended - t0:.1f}s; restarted each time")
    out.append("")

    out.append(_outcomes(specs, snap))
    types = Counter(e.type for evs in snap.events.values() for e in evs)
    out.append(f"Events in PostgreSQL: {sum(types.values())}  " +
               "  ".join(f"{k}={v}" for k, v in types.most_common()))
    holes = snap.tenant_last_seq - len(snap.by_tenant_seq)
    if holes:
        out.append(f"  tenant_seq holes: {holes} (events of tasks deleted after a failed "
                   f"enqueue, or lost)")
    why = Counter(x.why for x in lost)
    lat = sorted(x.rerun_after for x in lost if x.rerun_after is not None)
    out.append(f"Leases declared lost: {len(lost)} (worker dead {why['killed']}, worker "
               f"paused {why['paused']}, worker alive {why['alive']}, owner unsampled "
               f"{why['unknown']})")
    if lat:
        out.append(f"SIGKILL -> next attempt started: median {statistics.median(lat):.1f}s, "
                   f"max {lat[-1]:.1f}s over {len(lat)} attempts (target with test "
                   f"timings: 5 s)")
    if chaos.paused_attempts:
        out.append(f"Paused worker held {len(chaos.paused_attempts)} attempts; their late "
                   f"writes are checked by the fencing check below")
    out.append("")

    out.append("HTTP statuses seen:")
    routes = sorted({r for r, _ in api.statuses})
    for route in routes:
        row = sorted((s, n) for (r2, s), n in api.statuses.items() if r2 == route)
        out.append(f"  {route:26} " + "  ".join(f"{s}:{n}" for s, n in row))
    out.append("")

    tf = [f for f in follows if f.kind == "task"]
    nf = [f for f in follows if f.kind == "tenant"]
    seen = sum(len(f.seen) for f in follows)
    out.append(f"SSE: {len(tf)} task streams followed ({sum(f.ended for f in tf)} to their "
               f"end), {len(nf)} tenant streams; {sum(f.connections for f in follows)} "
               f"connections, {seen} events received")
    out.append(f"     model text: {sum(f.texts.frames for f in follows)} token frames received; "
               f"{sum(f.texts.checked for f in follows)} texts held when their text event "
               f"came, {sum(f.texts.resumed for f in follows)} of them over several "
               f"connections")
    live = [s.at - snap.events[s.task_id][s.seq - 1].created for f in follows if f.patient
            for s in f.seen if 0 < s.seq <= len(snap.events.get(s.task_id, []))]
    if live:
        live.sort()
        out.append(f"     patient clients' delivery delay after commit: p50 "
                   f"{live[len(live) // 2] * 1000:.0f} ms, p99 "
                   f"{live[int(len(live) * 0.99)] * 1000:.0f} ms, max {live[-1]:.2f} s")
    out.append("")

    out.append("Checks:")
    extra = [Check("no HTTP 5xx other than 503; every 503 has Retry-After; no web died",
                   sum(api.statuses.values()),
                   [*api.server_errors, *(f"503 without Retry-After: {x}"
                                          for x in api.no_retry_after), *dep.web_deaths])]
    for c in [*checks, *extra]:
        out.append(f"  {'PASS' if c.ok else 'FAIL'}  {c.name}  ({c.checked} checked"
                   f"{'' if c.ok else f', {len(c.violations)} violations'})")
        out.extend(f"        - {v}" for v in c.violations[:SHOW])
        if len(c.violations) > SHOW:
            out.append(f"        ... and {len(c.violations) - SHOW} more")
    out.append("")
    out.append("Process logs (errors and tracebacks):")
    out.extend(_log_summary(dep.log_files()))
    return "\n".join(out)


def _outcomes(specs: list[TaskSpec], snap: Snapshot) -> str:
    accepted = [s for s in specs if s.task_id]
    table: dict[str, Counter[str]] = {}
    for s in accepted:
        row = snap.tasks.get(s.task_id or "")
        label = "missing" if row is None else \
            row.status + (f":{row.failure_reason}" if row.status == "failed" else "")
        table.setdefault(s.kind, Counter())[label] += 1
    cols = sorted({c for t in table.values() for c in t})
    lines = [f"Tasks: {len(accepted)} accepted of {len(specs)} submitted "
             f"({sum(s.replayed for s in accepted)} answered 200 to a retried POST)",
             f"  {'kind':8} {'n':>5} " + " ".join(f"{c:>18}" for c in cols)]
    total: Counter[str] = Counter()
    for kind in sorted(table):
        total.update(table[kind])
        lines.append(f"  {kind:8} {sum(table[kind].values()):5} " +
                     " ".join(f"{table[kind][c]:18}" for c in cols))
    lines.append(f"  {'all':8} {sum(total.values()):5} " +
                 " ".join(f"{total[c]:18}" for c in cols))
    return "\n".join(lines)


_NOISE = re.compile(r"^\S+ \S+ |0x[0-9a-f]+|\d+(\.\d+)?")


def _log_summary(files: Iterable[Path]) -> list[str]:
    out: list[str] = []
    for path in files:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        tb = sum("Traceback" in line for line in lines)
        errors = Counter(_NOISE.sub("#", line)[:140] for line in lines
                         if " ERROR " in line or line.startswith(("ERROR", "CRITICAL")))
        warns = sum(" WARNING " in line for line in lines)
        out.append(f"  {path.name:12} {len(lines):6} lines, {warns} warnings, "
                   f"{sum(errors.values())} errors, {tb} tracebacks")
        out.extend(f"      {n}x {msg}" for msg, n in errors.most_common(3))
    return out
