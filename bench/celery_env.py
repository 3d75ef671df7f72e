"""Celery's own virtualenv (bench/.venv-celery, git-ignored), created on first use.

Celery 5.7 needs redis-py >= 6.1 while the product pins redis < 6 for arq 0.28, so the peer
cannot share the project venv. The tutorial peer (``bench.tutorial_app``) runs from it too. ``python
-m bench.celery_env`` creates it by hand.
"""

import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".venv-celery"
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


def python() -> Path:
    return VENV / "bin" / "python"


def ensure(quiet: bool = True) -> Path:
    """Create or update the venv when its recorded requirements differ; return its python."""
    marker = VENV / "bench-requirements.txt"
    want = "\n".join(REQUIREMENTS)
    if python().exists() and marker.exists() and marker.read_text() == want:
        return python()
    if not python().exists():
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
