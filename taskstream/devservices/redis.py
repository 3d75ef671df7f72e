"""A project-local Redis on its own port, keeping nothing on disk (`save ""`, no AOF).

Layout of `data_dir`: `redis/redis.conf` (rewritten on every start), `redis/redis.pid`,
`logs/redis.log`. Redis runs as the calling user, root included (it does not refuse root).
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from taskstream.devservices.binaries import find_redis
from taskstream.devservices.proc import (
    DevServiceError,
    cmdline,
    file_lock,
    log_tail,
    pid_alive,
    port_in_use,
    proc_link,
    run,
    same_path,
    wait_for_exit,
    wait_until,
)

_START_TIMEOUT = 15.0


def ping(port: int, host: str = "127.0.0.1") -> bool:
    """A raw RESP PING, so this package needs no Redis client."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Redis:
    """Handle on the Redis of `data_dir`; methods are safe to call from several processes."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.dir = self.data_dir / "redis"
        self.conf_file = self.dir / "redis.conf"
        self.pid_file = self.dir / "redis.pid"
        self.log_file = self.data_dir / "logs" / "redis.log"
        self._lock = self.data_dir / ".redis.lock"

    def __repr__(self) -> str:
        return f"Redis(data_dir={str(self.data_dir)!r}, port={self.port})"

    # -- inspection ----------------------------------------------------------------------
    def pid(self) -> int | None:
        """Pid of this data dir's live redis-server, or None (stale pid files are ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) and self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        """Not a pid reused after a reboot (perhaps by the system's own redis-server)."""
        cwd = proc_link(pid, "cwd")  # redis-server chdir()s into its `dir`
        if cwd is not None:
            return same_path(cwd, self.dir)
        args = cmdline(pid)
        if args is not None:  # proctitle "redis-server 127.0.0.1:<port>"
            port = self.running_port()
            return port is not None and any(arg.endswith(f":{port}") for arg in args)
        return True  # no procfs: trust the pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def running_port(self) -> int | None:
        try:
            lines = self.conf_file.read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            key, _, value = line.partition(" ")
            if key == "port" and value.strip().isdigit():
                return int(value)
        return None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start if not running; return once it answers PING."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(exist_ok=True)
        with file_lock(self._lock):
            if self.pid() is not None:
                self._adopt()
                return
            binary = find_redis()
            self.pid_file.unlink(missing_ok=True)
            if port_in_use(self.port):
                raise DevServiceError(
                    f"port {self.port} is taken by another process, not the Redis of "
                    f"{self.data_dir}; stop it or pick another port (--redis-port)"
                )
            self._write_conf()
            # daemonize yes: the launcher exits at once, the server is reparented to init.
            run([binary.path, self.conf_file], what=f"redis-server ({binary.source})",
                cwd=self.dir, timeout=_START_TIMEOUT)  # fmt: skip
            up = wait_until(lambda: self.pid() is not None and ping(self.port), _START_TIMEOUT)
            if not up:
                raise DevServiceError(f"redis-server did not come up\n{log_tail(self.log_file)}")

    def stop(self) -> None:
        """SIGTERM (a clean shutdown; nothing is saved), SIGKILL if it lingers."""
        if not self.dir.is_dir():
            return
        with file_lock(self._lock):
            pid = self.pid()
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                if not wait_for_exit(pid, 10):
                    os.kill(pid, signal.SIGKILL)
                    wait_for_exit(pid, 5)
            self.pid_file.unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- helpers -------------------------------------------------------------------------
    def _adopt(self) -> None:
        port = self.running_port()
        if port is not None and port != self.port:
            raise DevServiceError(
                f"the Redis of {self.data_dir} is already running on port {port}, "
                f"not {self.port}; stop it first (python -m taskstream.devservices down --dir ...)"
            )
        if not wait_until(lambda: ping(self.port), _START_TIMEOUT):
            raise DevServiceError(f"redis-server is running but not answering\n"
                                  f"{log_tail(self.log_file)}")  # fmt: skip

    def _write_conf(self) -> None:
        self.conf_file.write_text(
            "# Written by devservices on every start.\n"
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            "protected-mode yes\n"
            "daemonize yes\n"
            f"pidfile {_quote(self.pid_file)}\n"
            f"logfile {_quote(self.log_file)}\n"
            f"dir {_quote(self.dir)}\n"
            'save ""\n'
            "appendonly no\n"
        )


def _quote(path: Path) -> str:
    text = str(path)
    if "\n" in text:
        raise DevServiceError(f"unsupported path for redis.conf: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
