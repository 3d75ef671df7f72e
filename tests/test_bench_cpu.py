"""The bench's CPU sampler: what a window of samples reports (the latency scenario reads
the last tick's second from it to say what bounds that second)."""

import os
import time

import pytest

from bench.cpu import CpuSampler, Sample


def test_a_window_reads_the_samples_that_bracket_it() -> None:
    s = CpuSampler({"web": [1]})
    s.samples = [  # every CPU: 2 cores, so 2 CPU-seconds per wall second
        Sample(at=10.0, procs={"web": (5.0, 1.0, 1.0)}, busy=8.0, steal=0.0, total=20.0),
        Sample(at=11.0, procs={"web": (5.5, 1.1, 1.2)}, busy=9.0, steal=0.2, total=22.0),
        Sample(at=12.0, procs={"web": (6.5, 1.5, 1.5)}, busy=11.0, steal=0.2, total=24.0),
    ]
    w = s.window(11.0, 12.0)
    assert w == pytest.approx({"web_cpu": 1.0, "web_wait": 0.4, "web_sys": 0.3,
                              "machine_busy": 1.0, "machine_steal": 0.0})
    w = s.window(10.5, 11.5)  # widened to the samples around it: 10.0 and 12.0
    assert w is not None
    assert w["web_cpu"] == pytest.approx(0.75) and w["machine_steal"] == pytest.approx(0.05)
    assert s.window(9.0, 11.0) is None  # nothing sampled before it: not covered


def test_it_samples_a_running_process() -> None:
    with CpuSampler({"me": [os.getpid()]}, every=0.01) as s:
        t0 = time.time()
        while time.time() - t0 < 0.2:  # on a CPU for most of the window
            pass
        t1 = time.time()
    w = s.window(t0, t1)
    assert w is not None, len(s.samples)
    assert 0 < w["me_cpu"] <= 1.5  # one thread busy, plus the sampler's own reads
    assert 0 <= w["machine_busy"] <= 1 and 0 <= w["machine_steal"] <= 1
