"""Taskstream's own processes on this machine, as the Procfile starts them: a web server on a
loopback port and arq workers, for the tests, the bench and the chaos run.

Each child runs in its own session (a Ctrl-C in the parent's terminal does not reach it; a
test signals it on purpose), from the repository root, logging to a file, and is stopped by
its own pid only: SIGTERM, then SIGKILL if it lingers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

import httpx

from taskstream.devservices.proc import DevServiceError, log_tail, wait_for_exit, wait_until

ROOT = Path(__file__).resolve().parents[2]  # the repository (processes run from there)
HOST = "127.0.0.1"

#: The recovery clock at test speed (tests and the chaos run): a lost task is re-run within ~3 s.
TEST_TIMINGS: Mapping[str, str] = {
    "TASKSTREAM_HEARTBEAT_INTERVAL": "0.5",
    "TASKSTREAM_LEASE_SECONDS": "2",
    "TASKSTREAM_SWEEP_INTERVAL": "0.5",
    "TASKSTREAM_PENDING_STALE_SECONDS": "2",
    "TASKSTREAM_RETRY_BACKOFF": "0.1",
    "TASKSTREAM_SHUTDOWN_GRACE": "3",
    "TASKSTREAM_STREAM_CHECK_INTERVAL": "1",
}


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(database_url: str, redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    """This process's environment pointed at one database, Redis and key namespace, logging
    warnings only; `extra` last, so a caller can override any of it."""
    env = dict(os.environ)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, TASKSTREAM_NAMESPACE=namespace,
               LOG_LEVEL="WARNING")
    env.update(extra)
    return env


def fast_env(database_url: str, redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    """`service_env` at TEST_TIMINGS, with auth off unless this environment turns it on (as in
    the local run): what the tests and the chaos run deploy."""
    env = service_env(database_url, redis_url, namespace, **TEST_TIMINGS)
    env.setdefault("TASKSTREAM_AUTH", "false")
    env.update(extra)
    return env


class Proc:
    """One child process, restartable: `p` is the Popen of its current life."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path, *,
                 name: str | None = None) -> None:
        self.args, self.env, self.log = list(args), dict(env), log
        self.name = name or log.stem
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with open(self.log, "ab") as out:
            self.p = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                self.args, env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        if self.p is None:
            raise DevServiceError(f"{self.name} was never started")
        return self.p.pid

    @property
    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has exited; None while it runs (or before it started)."""
        return None if self.p is None else self.p.poll()

    def send_signal(self, sig: int) -> None:
        """Signal it if it is alive (never a reaped pid that may belong to someone else now)."""
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        """`sig`, then SIGKILL after `timeout` seconds; returns once it is dead and reaped."""
        if self.p is None or self.p.poll() is not None:
            return
        self.p.send_signal(sig)
        if not wait_for_exit(self.p.pid, timeout):
            self.p.kill()
        self.p.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines)


def uvicorn_command(port: int) -> list[str]:
    """The web process as the Procfile runs it, quieter and with a short graceful shutdown."""
    return [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
            "--host", HOST, "--port", str(port), "--no-access-log",
            "--timeout-graceful-shutdown", "3", "--log-level", "warning"]


class WebServer(Proc):
    """A web process on 127.0.0.1; `start()` returns once /health says it is ready."""

    def __init__(self, env: Mapping[str, str], log: Path, port: int | None = None, *,
                 command: Callable[[int], Sequence[str]] = uvicorn_command,
                 name: str | None = None) -> None:
        self.port = port or free_port()
        super().__init__(command(self.port), env, log, name=name)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        super().start()
        self.wait_ready()
        return self

    def healthy(self) -> bool:
        """Up and connected to Redis (its SSE hub): ready for traffic."""
        try:
            r = httpx.get(self.url + "/health", timeout=1)
            return r.status_code == 200 and bool(r.json().get("hub_connected"))
        except (httpx.HTTPError, ValueError):
            return False

    def wait_ready(self, within: float = 30) -> None:
        def ready() -> bool:
            if not self.alive:
                raise DevServiceError(f"{self.name} died\n{self.tail()}")
            return self.healthy()

        if not wait_until(ready, within, interval=0.1):
            raise DevServiceError(f"{self.name} not ready in {within:.0f}s\n{self.tail()}")


WORKER_COMMAND = (sys.executable, "-m", "worker")


class WorkerProc(Proc):
    """A worker process (`python -m worker` unless `command` says otherwise)."""

    def __init__(self, env: Mapping[str, str], log: Path, *,
                 command: Sequence[str] = WORKER_COMMAND, name: str | None = None) -> None:
        super().__init__(command, env, log, name=name)
