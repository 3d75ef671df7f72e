"""The README's run command, for real: with no URLs set it starts the local servers, migrates,
and runs web + worker from the Procfile — and, since authentication is then off, the web
process listens on the loopback address only."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from taskstream.devservices.processes import ROOT, free_port


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state != "0A" or int(hexport, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr)
            if width == 8:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux's /proc/net")
def test_local_run_without_auth_listens_on_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "TASKSTREAM_AUTH", "TASKSTREAM_HOST")}
    env["PORT"] = str(port)
    env["TASKSTREAM_NAMESPACE"] = f"run{port}"  # its worker stays off everyone else's queue
    log = tmp_path / "run.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(["./scripts/run.sh"], cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                break
            except httpx.HTTPError:
                time.sleep(0.25)
        assert health is not None, f"run.sh did not serve; log:\n{log.read_text()[-3000:]}"
        assert health["auth"] is False
        assert _listening_addresses(port) == {"127.0.0.1"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
