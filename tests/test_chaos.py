"""The chaos run, small: the same code as ``python -m chaos`` with 60 tasks on
2 workers, one SIGKILL, one Redis restart and one short PostgreSQL stop, against a private
PostgreSQL and Redis of its own (never the shared ones). Every invariant the full run checks
is checked here; the assertion message is the run's whole summary.

Its data dir is a fresh ``/tmp/taskstream-chaos-*`` (not ``tmp_path``: pytest resets its tmp
root to 0700 whenever a session starts, locking out the unprivileged PostgreSQL account);
it is removed after a pass and kept, with every process log, after a failure.
"""

import pytest

from chaos import ChaosConfig, run_chaos


@pytest.mark.timeout(240)
async def test_chaos_small() -> None:
    lines: list[str] = []
    result = await run_chaos(ChaosConfig.small(), say=lines.append)
    assert result.ok, "\n".join(lines)
    tokens = next(c for c in result.checks if "token stream" in c.name)
    assert tokens.checked > 0, "\n".join(lines)  # model texts were streamed and compared
