#!/usr/bin/env bash
# The one test command, for humans and CI (.ci/run): bootstrap, then ruff, mypy and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k stream -x).
# Tests start their own PostgreSQL and Redis through devservices.ensure() (tests/conftest.py).
# All three checks run; the exit code is non-zero if any failed. pytest's exit code 5
# (no tests collected) counts as a failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/bootstrap.sh

failed=()

echo "== ruff check"
.venv/bin/ruff check . || failed+=("ruff")

echo "== mypy"
.venv/bin/mypy || failed+=("mypy")

echo "== pytest"
pytest_rc=0
# Two pytest processes (pytest-xdist), whole files each (--dist loadfile keeps a file's
# fixtures in one process): most tests wait on servers, so two overlap well even on two cores.
# Each process has its own database and Redis namespace (tests/conftest.py).
# TASKSTREAM_TEST_PROCESSES=0 runs them in this process.
.venv/bin/pytest -n "${TASKSTREAM_TEST_PROCESSES:-2}" --dist loadfile "$@" || pytest_rc=$?
if [[ $pytest_rc -eq 5 ]]; then
    echo "test.sh: pytest collected no tests" >&2
    failed+=("pytest (no tests collected)")
elif [[ $pytest_rc -ne 0 ]]; then
    failed+=("pytest (exit $pytest_rc)")
fi

if ((${#failed[@]})); then
    echo "test.sh: FAILED: ${failed[*]}"
    exit 1
fi
echo "test.sh: OK (ruff, mypy, pytest all passed)"
