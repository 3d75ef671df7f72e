"""Celery's own virtualenv, created on first use, under the user's cache directory
(``~/.cache/taskstream/bench-celery-<key>``, or ``TASKSTREAM_BENCH_CELERY_VENV``): every
clone on the machine shares it, so a fresh clone's test run (CI) does not install Celery
again. The key covers the requirements and the Python version, so a change makes a new one.

Celery 5.7 needs redis-py >= 6.1 while the product pins redis < 6 for arq 0.28, so the peer
cannot share the project venv. The tutorial peer (``bench.tutorial_app``) runs from it too. ``python
-m bench.celery_env`` creates it by hand.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = [
    "celery[redis]==5.7.0",
    # The tutorial's own web stack (``bench.tutorial_app``): the product's versions of FastAPI,
    # uvicorn (plain, as ``uvicorn app.main:app``) and SQLAlchemy; psycopg 3, the driver
    # SQLAlchemy 2.1 picks for a plain ``postgresql://`` URL.
    "fastapi==0.165.0",
    "uvicorn==0.54.0",
    "sqlalchemy==2.1.9",
    "psycopg[binary]==3.3.9",
]


def _shared_venv() -> Path:
    key = hashlib.sha256("\n".join([sys.version, *REQUIREMENTS]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "taskstream" / f"bench-celery-{key}"


VENV = Path(os.environ.get("TASKSTREAM_BENCH_CELERY_VENV") or _shared_venv())


def python() -> Path:
    return VENV / "bin" / "python"


def ensure(quiet: bool = True) -> Path:
    """Create or update the venv when its recorded requirements differ; return its python."""
    marker = VENV / "bench-requirements.txt"
    want = "\n".join(REQUIREMENTS)
    if python().exists() and marker.exists() and marker.read_text() == want:
        return python()
    if not python().exists():
        VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    q = ["-q"] if quiet else []
    subprocess.run([str(python()), "-m", "pip", "install", *q, "--disable-pip-version-check",
                    *REQUIREMENTS], check=True)
    marker.write_text(want)
    return python()


def versions() -> dict[str, str]:
    out = subprocess.run(
        [str(python()), "-c",
         "import celery, kombu, redis; print(celery.__version__, kombu.__version__, "
         "redis.__version__)"],
        capture_output=True, text=True, check=True).stdout.split()
    return dict(zip(["celery", "kombu", "redis-py (celery venv)"], out, strict=True))


if __name__ == "__main__":
    print(ensure(quiet=False))
    print(versions())
