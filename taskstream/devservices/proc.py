"""Process, port, lock and command helpers shared by the service handles (Linux first, POSIX ok)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskstream.devservices.users import ServiceUser

_PROC = Path("/proc")
_HAS_PROCFS = (_PROC / "self").exists()


class DevServiceError(RuntimeError):
    """A local service could not be started, stopped or inspected."""


def notice(message: str) -> None:
    """Progress and housekeeping messages go to stderr: stdout is for `KEY=value` lines."""
    print(f"devservices: {message}", file=sys.stderr, flush=True)


def pid_alive(pid: int) -> bool:
    """True when `pid` exists and is not a zombie (a zombie is a stopped server not yet reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if not _HAS_PROCFS:
        return True
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    fields = stat.rpartition(")")[2].split()
    return not fields or fields[0] not in ("Z", "X")


def pid_exists(pid: int) -> bool:
    """True for any process with this pid, zombies included (what PostgreSQL's lock check sees)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pids_with_cwd(path: Path) -> list[int]:
    """Live processes whose working directory is `path` (a cluster's backends chdir into it)."""
    if not _HAS_PROCFS:
        return []
    target = os.path.realpath(path)
    found = []
    for entry in os.listdir(_PROC):
        if entry.isdigit():
            cwd = proc_link(int(entry), "cwd")
            if cwd is not None and str(cwd) == target and pid_alive(int(entry)):
                found.append(int(entry))
    return found


def cmdline(pid: int) -> list[str] | None:
    """The process's argv, or None when it cannot be read."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def proc_link(pid: int, name: str) -> Path | None:
    """Target of /proc/<pid>/<name> (`cwd`, `exe`), or None when it cannot be read."""
    try:
        return Path(os.readlink(_PROC / str(pid) / name))
    except OSError:
        return None


def same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_for_exit(pid: int, timeout: float, *, reaped: bool = False) -> bool:
    """Wait until `pid` is dead (or, with `reaped`, gone from the process table entirely)."""
    check = pid_exists if reaped else pid_alive
    return wait_until(lambda: not check(pid), timeout)


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 180.0) -> Iterator[None]:
    """Exclusive inter-process lock (flock) so concurrent `ensure()` calls start one server."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DevServiceError(f"timed out waiting for lock {path}") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _child_env() -> dict[str, str]:
    # PGDATA/PGPORT/PGHOST... from the caller's shell must not redirect our server or pg_ctl.
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


def run(
    cmd: Sequence[str | Path],
    *,
    what: str,
    user: ServiceUser | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> str:
    """Run a command (as `user` when given), return its combined output, raise on failure.

    Output goes through a temporary file, not a pipe: a daemon started by the command
    (pg_ctl's postmaster, a forking redis-server) must never hold our pipe open.
    """
    args = [str(part) for part in cmd]
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
        try:
            completed = subprocess.run(  # noqa: S603 - fixed argv, no shell
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=_child_env(),
                timeout=timeout,
                check=False,
                user=user.uid if user else None,
                group=user.gid if user else None,
                extra_groups=[] if user else None,
            )
        except subprocess.TimeoutExpired:
            raise DevServiceError(f"{what} timed out after {timeout:.0f}s: {args}") from None
        except OSError as exc:
            raise DevServiceError(f"{what} could not run {args[0]}: {exc}") from exc
        out.seek(0)
        output = out.read()
    if completed.returncode != 0:
        raise DevServiceError(f"{what} failed (exit {completed.returncode}):\n{output.strip()}")
    return output


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return f"last lines of {path}:\n" + "\n".join(text.splitlines()[-lines:])
