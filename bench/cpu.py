"""Who has the CPU during a stretch of a scenario: each process's time on a CPU and time
runnable but waiting for one (Linux schedstat), and the machine's busy and stolen share
(/proc/stat), sampled in a thread.

The latency scenario uses it to say what bounds its slowest second (the last tick, when
every stream ends): the web process itself (on a CPU all the time), the other processes on
the same cores (the web runnable but waiting), or the hypervisor (steal)."""

import os
import threading
import time
from dataclasses import dataclass

from bench.common import sched_seconds, user_system_seconds


@dataclass(frozen=True)
class Sample:
    at: float
    #: name -> seconds on a CPU, runnable but waiting, and in the kernel (a part of the first;
    #: counted in clock ticks, so in 10 ms steps)
    procs: dict[str, tuple[float, float, float]]
    busy: float  # every CPU's busy seconds so far (not idle, not iowait, not steal)
    steal: float
    total: float


def _machine() -> tuple[float, float, float]:
    """(busy, steal, total) CPU seconds over every CPU so far."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    total = user + nice + system + idle + iowait + irq + softirq + steal
    busy = user + nice + system + irq + softirq
    return busy / tick, steal / tick, total / tick


class CpuSampler:
    """Samples every ``every`` seconds until closed; ``window`` reads a stretch afterwards.

    ``groups`` names each set of processes (e.g. "web": [pid], "postgres": [its backends]);
    a group's figures are summed over its processes and all their threads."""

    def __init__(self, groups: dict[str, list[int]], every: float = 0.025) -> None:
        self.groups = groups
        self.every = every
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> "CpuSampler":
        self.samples.append(self._sample())  # the first one now: a window may start at once
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> Sample:
        procs = {}
        for name, pids in self.groups.items():
            run = wait = 0.0
            for pid in pids:
                r, w = sched_seconds(pid)
                run, wait = run + r, wait + w
            procs[name] = (run, wait, user_system_seconds(pids)[1])
        busy, steal, total = _machine()
        return Sample(time.time(), procs, busy, steal, total)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(self._sample())
        self.samples.append(self._sample())  # the last one at the end: a window may end then

    def window(self, t0: float, t1: float) -> dict[str, float] | None:
        """Shares over the samples that bracket [t0, t1]: ``<group>_cpu``, ``<group>_wait``
        and ``<group>_sys`` (in the kernel) per group, in cores' worth; ``machine_busy`` and
        ``machine_steal``, fractions of every CPU's time. None if the samples do not cover
        the window."""
        before = [s for s in self.samples if s.at <= t0]
        after = [s for s in self.samples if s.at >= t1]
        if not before or not after:
            return None
        a, b = before[-1], after[0]
        span = b.at - a.at
        cpus = b.total - a.total
        if span <= 0 or cpus <= 0:
            return None
        out = {}
        for name in self.groups:
            (r0, w0, s0), (r1, w1, s1) = a.procs[name], b.procs[name]
            out[f"{name}_cpu"] = (r1 - r0) / span
            out[f"{name}_wait"] = (w1 - w0) / span
            out[f"{name}_sys"] = (s1 - s0) / span
        out["machine_busy"] = (b.busy - a.busy) / cpus
        out["machine_steal"] = (b.steal - a.steal) / cpus
        return out
