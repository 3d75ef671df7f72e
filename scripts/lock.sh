#!/usr/bin/env bash
# Re-pin the lock files from pyproject.toml (run after changing a dependency):
#  - requirements.txt: what a deploy installs (the client + the `server` extra); Heroku's
#    Python buildpack builds from it, and .python-version names the Python.
#  - requirements-dev.txt: the same pins plus the `dev` and `local` extras, for the run
#    and test commands (scripts/bootstrap.sh installs from it).
# With hashes (pip installs with --require-hashes), from PyPI only: this machine's pip
# configuration (local wheel folders, extra indexes) is ignored so the pins hold anywhere.
# tests/test_lock.py fails when pyproject.toml and the locks disagree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tool="${LOCK_TOOL:-.venv/bin/pip-compile}"
export PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS="" PIP_EXTRA_INDEX_URL="" PIP_CONSTRAINT=""
common=(--quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url
        --no-emit-find-links --newline=LF)
"$tool" "${common[@]}" --extra server -o requirements.txt pyproject.toml
# The dev lock starts from the deploy lock's pins, so both name the same versions.
cp requirements.txt requirements-dev.txt
"$tool" "${common[@]}" --extra server --extra dev --extra local --extra otel -o requirements-dev.txt \
    pyproject.toml
