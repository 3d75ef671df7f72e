"""The client and the CLI with authentication on: API keys from arguments or the environment,
401s that are final (no reconnect loop), tenants kept apart, and 429s waited out."""

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taskstream.client import AsyncClient, NotFound, RateLimited, RetryPolicy, Unauthorized
from taskstream.devservices.processes import ROOT, WebServer, WorkerProc

SECURE = {
    "TASKSTREAM_AUTH": "true",
    "TASKSTREAM_KEY_CACHE_SECONDS": "0",
    "TASKSTREAM_SUBMIT_RATE_PER_TENANT": "3",
    "TASKSTREAM_MAX_STREAMS_PER_TENANT": "2",
}
FAST = RetryPolicy(backoff=0.05, max_backoff=0.5)
EXE = Path(sys.executable).with_name("taskstream")
COMMAND = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "taskstream.client"]


@pytest.fixture(scope="module")
def keys(env: dict[str, str]) -> dict[str, str]:
    """An API key for each name, each its own tenant (``python -m taskstream.core.keys``)."""
    names = ("alice", "bob", "rate", "streams")
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "taskstream.core.keys", "create",
         "--tenant", f"{name}-{uuid.uuid4().hex[:8]}"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for name in names}
    out = {name: p.communicate(timeout=60)[0].strip() for name, p in procs.items()}
    assert all(p.returncode == 0 and out[n] for n, p in procs.items()), out
    return out


@pytest.fixture(scope="module")
def secure(env: dict[str, str], logs: Path, worker: WorkerProc) -> Iterator[WebServer]:
    server = WebServer({**env, **SECURE}, logs / "web-client-auth.log")
    server.start()
    yield server
    server.stop()


class Counting(httpx.AsyncHTTPTransport):
    """Records the status of every response the client received."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


async def test_api_keys_and_tenants(secure: WebServer, keys: dict[str, str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob = keys["alice"], keys["bob"]
    monkeypatch.delenv("TASKSTREAM_API_KEY", raising=False)
    async with AsyncClient(secure.url, retry=FAST) as anonymous:
        with pytest.raises(Unauthorized) as info:
            await anonymous.submit("noop")
        assert info.value.status == 401 and "API key" in info.value.detail
        with pytest.raises(Unauthorized):
            [t async for t in anonymous.list_tasks()]
        t0 = time.monotonic()
        with pytest.raises(Unauthorized):
            [e async for e in anonymous.events(str(uuid.uuid4()))]  # final: no retry loop
        assert time.monotonic() - t0 < 2
    async with AsyncClient(secure.url, api_key="ts_not_a_real_key", retry=FAST) as wrong:
        with pytest.raises(Unauthorized):
            await wrong.get(str(uuid.uuid4()))

    monkeypatch.setenv("TASKSTREAM_API_KEY", alice)
    async with AsyncClient(secure.url, retry=FAST) as as_alice, \
            AsyncClient(secure.url, api_key=bob, retry=FAST) as as_bob:
        task = await as_alice.submit("demo", {"duration": 0.2, "steps": 2})
        events = [e async for e in as_alice.events(task)]
        assert events[-1].status == "completed"
        assert await as_alice.wait(task, timeout=10) == {"steps": 2, "duration": 0.2}
        with pytest.raises(NotFound):
            await as_bob.get(task)  # another tenant's task does not exist for bob
        with pytest.raises(NotFound):
            [e async for e in as_bob.events(task)]
        assert task.task_id not in [t.task_id async for t in as_bob.list_tasks()]

    # The CLI: the key from the environment or --api-key; without one, exit 4.
    cli_env = {k: v for k, v in os.environ.items() if k != "TASKSTREAM_API_KEY"}
    cli_env["TASKSTREAM_URL"] = secure.url

    async def cli(*args: str, key: str | None = None) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *COMMAND, *args, env={**cli_env, **({"TASKSTREAM_API_KEY": key} if key else {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    (code_env, out, _), (code_arg, _, _), (code_none, _, err) = await asyncio.gather(
        cli("submit", "noop", "--follow", key=alice),
        cli("--api-key", bob, "show", task.task_id),
        cli("tasks"),
    )
    assert code_env == 0 and " completed " in out.splitlines()[-1]
    assert code_arg == 4  # bob cannot see alice's task
    assert code_none == 4 and "HTTP 401 unauthorized" in err


async def test_rate_limit_is_waited_out(secure: WebServer, keys: dict[str, str]) -> None:
    key = keys["rate"]
    counting = Counting()
    async with AsyncClient(secure.url, api_key=key, retry=FAST, transport=counting) as ts:
        t0 = time.monotonic()
        tasks = await asyncio.gather(*[ts.submit("noop") for _ in range(7)])
        # 3 per second: some were told 429 + Retry-After, waited, and got in.
        assert len({t.task_id for t in tasks}) == 7
        assert 429 in counting.statuses and time.monotonic() - t0 >= 1
        assert counting.statuses.count(202) == 7

    async with AsyncClient(secure.url, api_key=key, retry=RetryPolicy(attempts=1)) as ts:
        with pytest.raises(RateLimited) as info:
            await asyncio.gather(*[ts.submit("noop") for _ in range(5)])
        assert info.value.status == 429 and info.value.retry_after is not None


async def test_stream_limit_beyond_patience_is_raised(secure: WebServer,
                                                      keys: dict[str, str]) -> None:
    key = keys["streams"]
    async with AsyncClient(secure.url, api_key=key,
                           retry=RetryPolicy(backoff=0.05, max_retry_after=1)) as ts:
        task = await ts.submit("demo", {"duration": 30, "steps": 30})
        first, second = ts.events(task), ts.events(task)
        try:
            assert (await anext(first)).seq == 1 and (await anext(second)).seq == 1
            with pytest.raises(RateLimited) as info:  # a third stream: 429, Retry-After 5
                [e async for e in ts.events(task)]
            assert info.value.retry_after is not None and info.value.retry_after > 1
        finally:
            await first.aclose()
            await second.aclose()
            await ts.cancel(task)
