#!/usr/bin/env bash
# Run the service locally: web + worker from the Procfile (via honcho).
# With neither DATABASE_URL nor REDIS_URL set, a project-local PostgreSQL and Redis are started
# (data in .data/, ports 55432/56379; `.venv/bin/python -m taskstream.devservices down` stops them).
# If only one is set, the other one comes from the local servers.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/bootstrap.sh

if [[ -z "${DATABASE_URL:-}" || -z "${REDIS_URL:-}" ]]; then
    # The local embedded run: authentication off unless asked for (TASKSTREAM_AUTH=true),
    # so the tutorial's browser snippet works as written. Anything else defaults to on.
    export TASKSTREAM_AUTH="${TASKSTREAM_AUTH:-false}"
    if [[ "$TASKSTREAM_AUTH" == "false" ]]; then
        # Without authentication every caller is the same tenant: this machine only.
        export TASKSTREAM_HOST="${TASKSTREAM_HOST:-127.0.0.1}"
    fi
    urls="$(.venv/bin/python -m taskstream.devservices up)"
    while IFS='=' read -r key value; do
        if [[ -n "$key" && -z "${!key:-}" ]]; then
            export "$key=$value"
        fi
    done <<<"$urls"
fi

.venv/bin/python -m taskstream.core.migrate

# Every Procfile process but `release` (a one-shot: honcho stops everything when one exits).
mapfile -t procs < <(sed -nE 's/^([A-Za-z0-9_-]+):.*/\1/p' Procfile | grep -vx release)

export PORT="${PORT:-8000}"
# /metrics sums the web and worker processes of this host (prometheus-client's multiprocess
# mode): their shared directory starts empty on every run.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$PWD/.data/prometheus}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/honcho start -f Procfile "${procs[@]}"
