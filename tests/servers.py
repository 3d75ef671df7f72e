"""Real processes for tests: uvicorn on a loopback port and arq workers, as in the Procfile."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        fh = open(self.log, "ab")
        self.p = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=fh,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        fh.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.p is None or self.p.poll() is not None:
            return
        self.p.send_signal(sig)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None


class WebServer(Proc):
    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
             "--timeout-graceful-shutdown", "3",
             "--log-level", "warning"],
            env, log,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"web server died; see {self.log}:\n{self.log.read_text()}")
            try:
                r = httpx.get(self.url + "/health", timeout=1)
                if r.status_code == 200 and r.json()["hub_connected"]:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"web server did not become ready; see {self.log}")


class WorkerProc(Proc):
    def __init__(self, env: dict[str, str], log: Path) -> None:
        super().__init__([sys.executable, "-m", "worker"], env, log)


#: The recovery clock at test speed: a lost task is re-run within ~3 s.
TEST_TIMINGS = {
    "TASKSTREAM_HEARTBEAT_INTERVAL": "0.5",
    "TASKSTREAM_LEASE_SECONDS": "2",
    "TASKSTREAM_SWEEP_INTERVAL": "0.5",
    "TASKSTREAM_PENDING_STALE_SECONDS": "2",
    "TASKSTREAM_RETRY_BACKOFF": "0.1",
    "TASKSTREAM_SHUTDOWN_GRACE": "3",
}


def service_env(database_url: str, redis_url: str, namespace: str,
                **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url,
               TASKSTREAM_NAMESPACE=namespace, LOG_LEVEL="WARNING", **TEST_TIMINGS)
    env.setdefault("TASKSTREAM_AUTH", "false")  # as in the local run; security tests turn it on
    env.update(extra)
    return env
