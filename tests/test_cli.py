"""The ``taskstream`` command, run as a subprocess against the real service: each command's
plain (not a terminal) and ``--json`` output, its exit code, Ctrl-C, and the live progress bar
on a real pseudo-terminal."""

import asyncio
import contextlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from taskstream.client import AsyncClient, Conflict, RetryPolicy, TaskCancelled
from taskstream.devservices.processes import WebServer, WorkerProc

EXE = Path(sys.executable).with_name("taskstream")
COMMAND = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "taskstream.client"]
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
WORDS = b"the quick brown fox jumps over the lazy dog while taskstream pushes progress\n"
MEASURE_RSS = ("import resource, sys; from taskstream.client.cli import main; "
               "rc = main(sys.argv[1:]); "
               "sys.stderr.write(f'maxrss_kb={resource.getrusage(resource.RUSAGE_SELF)"
               ".ru_maxrss}\\n'); sys.exit(rc)")
# Ctrl-C reaches a foreground job, whose SIGINT an interactive shell leaves at its default.
# A test run started in the background (`cmd &` without job control: some CI runners)
# ignores SIGINT and its children inherit that, so the Ctrl-C tests reset it in the child.
FOREGROUND = [sys.executable, "-c",
              "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "from taskstream.client.cli import main; sys.exit(main(sys.argv[1:]))"]


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture(scope="module")
def cli_env(web: WebServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TASKSTREAM_API_KEY", "FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR")}
    env["TASKSTREAM_URL"] = web.url
    return env


@pytest.fixture
async def ts(web: WebServer, worker: WorkerProc) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(web.url, retry=RetryPolicy(backoff=0.05)) as c:
        yield c


async def start(env: dict[str, str], *args: str,
                argv: list[str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(argv or COMMAND), *args, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def run(env: dict[str, str], *args: str, argv: list[str] | None = None) -> Run:
    proc = await start(env, *args, argv=argv)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def read_until(proc: asyncio.subprocess.Process, needle: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line, f"output ended before {needle!r}: {lines}"
        lines.append(line.rstrip("\n"))
        if needle in line:
            return lines


async def test_submit_prints_the_id_or_the_task(cli_env: dict[str, str],
                                                ts: AsyncClient) -> None:
    plain, as_json, options, unknown, bad = await asyncio.gather(
        run(cli_env, "submit", "noop"),
        run(cli_env, "submit", "noop", "-p", "events=2", "--json"),
        run(cli_env, "submit", "demo", "--params", '{"duration": 0, "steps": 2}',
            "-p", "steps=3", "--max-attempts", "2", "--json"),
        run(cli_env, "submit", "no-such-type"),
        run(cli_env, "submit", "demo", "-p", "nonsense"),
    )
    assert plain.code == 0 and UUID.match(plain.out.strip()) and plain.err == ""
    assert as_json.code == 0
    (task,) = as_json.objects
    assert task["type"] == "noop" and task["params"] == {"events": 2}
    assert task["status"] == "pending" and UUID.match(task["task_id"])
    assert options.objects[0]["params"]["steps"] == 3 and options.objects[0]["max_attempts"] == 2

    assert unknown.code == 4 and unknown.out == ""
    assert "unknown task type 'no-such-type'" in unknown.err and "HTTP 422" in unknown.err
    assert bad.code == 2 and "key=value" in bad.err


async def test_submit_with_priority_and_delay(cli_env: dict[str, str]) -> None:
    r = await run(cli_env, "submit", "noop", "--priority", "high", "--delay", "30", "--json")
    assert r.code == 0, r.err
    (task,) = r.objects
    assert task["priority"] == "high" and task["run_at"] and task["status"] == "pending"
    both = await run(cli_env, "submit", "noop", "--delay", "1",
                     "--run-at", "2030-01-01T00:00:00+00:00")
    assert both.code == 2 and "not allowed with" in both.err


async def test_submit_follow_plain_and_json(cli_env: dict[str, str]) -> None:
    r = await run(cli_env, "submit", "demo", "-p", "duration=0.3", "-p", "steps=3", "--follow")
    assert r.code == 0, r.err
    ids = {line.split()[0] for line in r.lines}
    assert len(ids) == 1 and UUID.match(ids.pop())
    assert [line.split()[2] for line in r.lines] == (
        ["created", "started"] + ["progress"] * 3 + ["completed"])
    assert r.lines[2].endswith("running    33.3%  step 1/3")
    assert r.lines[-1].endswith('completed   100%  result: {"steps": 3, "duration": 0.3}')

    r = await run(cli_env, "submit", "demo", "-p", "duration=0.3", "-p", "steps=3", "-f",
                  "--json")
    assert r.code == 0
    events = r.objects
    assert [e["seq"] for e in events] == list(range(1, 7))
    assert events[-1]["status"] == "completed" and events[-1]["result"]["steps"] == 3


async def test_follow_exit_code_says_how_the_task_ended(cli_env: dict[str, str],
                                                         ts: AsyncClient) -> None:
    r = await run(cli_env, "submit", "demo", "-p", "duration=0.2", "-p", "steps=2",
                  "-p", "fail_at_step=2", "--follow")
    assert r.code == 1
    assert r.lines[-1].split()[2:4] == ["failed", "failed"]
    assert "error: DemoFailure: failed at step 2 of 2" in r.lines[-1]

    task = await ts.submit("demo", {"duration": 30, "steps": 300})
    proc = await start(cli_env, "tail", task.task_id, "--json")
    seen = await read_until(proc, '"status":"running"')
    await ts.cancel(task)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 3
    last = json.loads(out.decode().splitlines()[-1])
    assert last["status"] == "cancelled" and json.loads(seen[0])["type"] == "created"


async def test_tail_replays_a_finished_task(cli_env: dict[str, str], ts: AsyncClient) -> None:
    task = await ts.submit("demo", {"duration": 0.2, "steps": 2})
    await ts.wait(task, timeout=10)
    r = await run(cli_env, "tail", task.task_id)
    assert r.code == 0
    assert [line.split()[1] for line in r.lines] == ["#1", "#2", "#3", "#4", "#5"]
    r = await run(cli_env, "tail", task.task_id, "--json")
    assert r.objects == [e.model_dump(mode="json") async for e in ts.history(task)]
    r = await run(cli_env, "tail", str(uuid.uuid4()))
    assert r.code == 4 and "not found" in r.err


async def test_tasks_and_show(cli_env: dict[str, str], ts: AsyncClient) -> None:
    ids = [(await ts.submit("noop")).task_id for _ in range(3)]
    for tid in ids:
        await ts.wait(tid, timeout=10)
    r = await run(cli_env, "tasks", "--type", "noop", "-n", "3")
    assert r.code == 0
    rows = [line.split("\t") for line in r.lines]
    assert [row[0] for row in rows] == list(reversed(ids))
    assert all(row[1:4] == ["noop", "completed", "100%"] for row in rows)
    r = await run(cli_env, "tasks", "--type", "noop", "--status", "completed,failed", "-n", "2",
                  "--json")
    assert [t["task_id"] for t in r.objects] == list(reversed(ids))[:2]
    r = await run(cli_env, "tasks", "--status", "exploded")
    assert r.code == 4 and "HTTP 422" in r.err

    r = await run(cli_env, "show", ids[0])
    assert r.code == 0
    fields = {k: v.strip() for k, _, v in (line.partition(" ") for line in r.lines)}
    assert fields["task_id"] == ids[0] and fields["status"] == "completed"
    assert fields["result"] == '{"events": 0}' and fields["attempts"] == "1"
    r = await run(cli_env, "show", ids[0], "--json")
    assert r.objects[0]["task_id"] == ids[0] and r.objects[0]["result"] == {"events": 0}
    r = await run(cli_env, "show", "not-a-task")
    assert r.code == 4 and "not found (HTTP 404 not_found)" in r.err


async def test_cancel_and_retry(cli_env: dict[str, str], ts: AsyncClient) -> None:
    task = await ts.submit("demo", {"duration": 30, "steps": 300})
    async for ev in ts.events(task):
        if ev.status == "running":
            break
    r = await run(cli_env, "cancel", task.task_id)
    assert r.code == 0
    assert r.out.strip() in (f"{task.task_id}  cancellation requested (running)",
                             f"{task.task_id}  cancelled")
    with pytest.raises(TaskCancelled):
        await ts.wait(task, timeout=10)
    r = await run(cli_env, "cancel", task.task_id, "--json")
    assert r.code == 0 and r.objects[0]["status"] == "cancelled"

    done = await ts.submit("noop")
    await ts.wait(done, timeout=10)
    r = await run(cli_env, "cancel", done.task_id)
    assert r.code == 4 and "HTTP 409 conflict" in r.err

    # Re-drive a task whose first attempt failed: followed, the new attempt completes.
    flaky = await ts.submit("demo", {"duration": 0.1, "steps": 2, "fail_at_step": 1,
                                     "fail_attempts": 1})
    r = await run(cli_env, "tail", flaky.task_id)
    assert r.code == 1
    r = await run(cli_env, "retry", flaky.task_id, "--follow", "--json")
    assert r.code == 0, r.err
    types = [e["type"] for e in r.objects]
    assert types[0] == "started" and types[-1] == "completed" and "failed" not in types
    r = await run(cli_env, "retry", flaky.task_id)
    assert r.code == 4 and "only failed or cancelled" in r.err
    # tail shows the whole history, through the first failure, to the final outcome
    r = await run(cli_env, "tail", flaky.task_id)
    assert r.code == 0
    assert [line.split()[2] for line in r.lines if "failed" in line or "redriven" in line] == [
        "failed", "redriven"]


async def test_upload_files(cli_env: dict[str, str], tmp_path: Path, worker: WorkerProc) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.md"
    a.write_bytes(WORDS * 10)
    b.write_bytes(b"# B\n\n" + WORDS * 5)
    # Several files are one batch: a line per file, then the batch.
    r = await run(cli_env, "upload", str(a), str(b))
    assert r.code == 0
    rows = [line.split("\t") for line in r.lines]
    assert [row[1:] for row in rows] == [["a.txt", str(len(WORDS) * 10)],
                                         ["b.md", str(len(WORDS) * 5 + 5)], ["batch", "2"]]
    r = await run(cli_env, "upload", str(a), str(b), "--follow")
    assert r.code == 0, r.err
    finals = [line for line in r.lines if " completed " in line]
    assert len(finals) == 3 and len({line.split()[0] for line in finals}) == 3
    assert all('"kind": "' in line for line in finals[:2])  # a line per finished file
    assert {finals[0].split()[2], finals[1].split()[2]} == {"a.txt", "b.md"}
    assert "batch completed" in finals[2] and "2/2 ended: 2 completed" in finals[2]
    r = await run(cli_env, "upload", str(a), "--json")
    assert r.objects[0]["filename"] == "a.txt" and r.objects[0]["status"] == "pending"
    r = await run(cli_env, "upload", str(tmp_path / "missing.pdf"))
    assert r.code == 2 and "cannot read" in r.err


async def test_upload_of_a_large_file_streams(cli_env: dict[str, str], tmp_path: Path,
                                              ts: AsyncClient) -> None:
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    small.write_bytes(WORDS)
    size = 50 * 1024 * 1024
    with big.open("wb") as fh:
        block = WORDS * (1024 * 1024 // len(WORDS))
        while fh.tell() < size:
            fh.write(block[: size - fh.tell()])
    measure = [sys.executable, "-c", MEASURE_RSS]
    rss: dict[str, int] = {}
    for f in (small, big):
        r = await run(cli_env, "upload", str(f), "--json", argv=measure)
        assert r.code == 0, r.err
        up = r.objects[0]
        assert up["size"] == f.stat().st_size
        with contextlib.suppress(Conflict):  # the small one may be done already
            await ts.cancel(up["task_id"])
        rss[f.name] = int(re.findall(r"maxrss_kb=(\d+)", r.err)[0]) * 1024
    # Reading the file whole would add 50 MB to the process; streaming adds a few chunks.
    assert rss["big.txt"] - rss["small.txt"] < 16 * 1024 * 1024, rss


async def test_types_usage_and_unreachable(cli_env: dict[str, str]) -> None:
    plain, as_json, nothing, unknown, helped, unreachable = await asyncio.gather(
        run(cli_env, "types"),
        run(cli_env, "types", "--json"),
        run(cli_env),
        run(cli_env, "explode"),
        run(cli_env, "--help"),
        run(cli_env, "--url", "http://127.0.0.1:9", "tasks"),  # nobody listens there
    )
    assert plain.code == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in plain.lines}
    assert rows["demo"][1] == "duration fail_at_step fail_attempts steps"
    assert {t["type"] for t in as_json.objects} >= {"demo", "noop", "document_process"}

    assert nothing.code == 2 and "usage:" in nothing.err
    assert unknown.code == 2
    assert helped.code == 0 and "exit codes:" in helped.out and "TASKSTREAM_URL" in helped.out
    assert unreachable.code == 5
    assert "cannot reach Taskstream at http://127.0.0.1:9" in unreachable.err


async def test_timeout_and_ctrl_c_stop_following(cli_env: dict[str, str],
                                                 ts: AsyncClient) -> None:
    task = await ts.submit("demo", {"duration": 30, "steps": 300})
    r = await run(cli_env, "tail", task.task_id, "--timeout", "0.5")
    assert r.code == 124 and "stopped following after 0.5s" in r.err
    assert (await ts.get(task)).status in ("pending", "running")

    # Ctrl-C stops following; the task carries on.
    proc = await start(cli_env, "tail", task.task_id, argv=FOREGROUND)
    await read_until(proc, " running ")
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 130
    assert f"still running: {task.task_id}" in err.decode()
    assert (await ts.get(task)).status == "running"

    # ... unless asked to cancel it.
    proc = await start(cli_env, "tail", task.task_id, "--cancel-on-interrupt",
                       argv=FOREGROUND)
    await read_until(proc, " running ")
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 130 and f"cancel requested: {task.task_id}" in err.decode()
    with pytest.raises(TaskCancelled):
        await ts.wait(task, timeout=10)


def test_terminal_gets_a_live_progress_bar(cli_env: dict[str, str], worker: WorkerProc) -> None:
    master, slave = pty.openpty()
    env = {**cli_env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen([*COMMAND, "submit", "demo", "-p", "duration=0.6", "-p", "steps=3",
                             "--follow"], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(30)
    assert proc.returncode == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in screen  # styled, redrawn in place
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert re.search(r"submitted demo task [0-9a-f-]{36} \(pending\)", plain)
    assert "━" in plain and "step 2/3" in plain and "100%" in plain
    assert re.search(r"✔ [0-9a-f-]{36} completed\s+result: \{\"steps\": 3", plain)


def test_terminal_draws_one_bar_for_a_batch_upload(cli_env: dict[str, str], worker: WorkerProc,
                                                    tmp_path: Path) -> None:
    files = []
    for i in range(4):
        f = tmp_path / f"doc{i}.md"
        f.write_bytes(b"# doc\n\n" + WORDS * (i + 2))
        files.append(str(f))
    master, slave = pty.openpty()
    env = {**cli_env, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen([*COMMAND, "upload", *files, "--follow"], stdin=slave,
                            stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(60)
    assert proc.returncode == 0
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert "4 files" in plain and "━" in plain and "100%" in plain
    assert "4 files" in plain.split("batch of 4 files")[-1]  # the bar's label
    for i in range(4):  # a line per finished file
        assert re.search(rf"✔ doc{i}\.md completed\s+result: ", plain), plain
    assert re.search(r"✔ batch [0-9a-f-]{36} completed\s+4/4 ended: 4 completed", plain)
