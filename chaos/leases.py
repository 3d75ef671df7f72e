"""Which leases the sweeper declared lost, and whether the worker really was gone.

The sampler (``chaos.faults.Sampler``) saw which worker ran each attempt; the deployment
knows when each worker process died and which one was paused. A lease lost while its
worker was alive (and not paused) expired for another reason, such as PostgreSQL being
away for longer than a lease.
"""

from dataclasses import dataclass

from chaos.deployment import Fault, WorkerLife
from chaos.faults import worker_pid
from chaos.snapshot import Ev, Snapshot


@dataclass
class Loss:
    """A lease declared lost (``requeued`` or ``failed`` with reason worker_lost), and why."""

    ev: Ev
    why: str  # killed | paused | alive (its worker was running) | unknown (owner unsampled)
    rerun_after: float | None = None  # SIGKILL -> next attempt started, seconds


def losses(snap: Snapshot, lives: list[WorkerLife], owners: dict[tuple[str, int], str],
           faults: list[Fault]) -> list[Loss]:
    by_pid = {life.pid: life for life in lives}
    pause = next((f for f in faults if f.kind == "pause worker"), None)
    out: list[Loss] = []
    for tid, evs in snap.events.items():
        for i, e in enumerate(evs):
            if e.type not in ("requeued", "failed") or e.reason != "worker_lost":
                continue
            pid = worker_pid(owners.get((tid, e.attempt), ""))
            life = by_pid.get(pid) if pid is not None else None
            if life is None:
                out.append(Loss(e, "unknown"))
            elif pause is not None and f"pid {pid}," in pause.detail and \
                    pause.started <= e.created <= pause.ended + 1:
                out.append(Loss(e, "paused"))
            elif life.ended is not None and life.ended <= e.created:
                nxt = next((x for x in evs[i:] if x.type == "started"), None)
                out.append(Loss(e, "killed", nxt.created - life.ended
                                if nxt is not None and life.how == "killed" else None))
            else:
                out.append(Loss(e, "alive"))
    return out
