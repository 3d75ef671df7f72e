"""The task-declaration API: ``@task``, the registry, discovery, the catalogue a web process
publishes, what happens when web and workers disagree about a type, and typed submit."""

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import BaseModel

from taskstream import Params, Priority, TaskContext, task
from taskstream.core import store
from taskstream.declaration import REGISTRY, DeclarationError
from taskstream.devservices.processes import TEST_TIMINGS, WebServer, WorkerProc
from taskstream.discovery import TaskModuleError, load_tasks
from tests.cluster import Cluster, drop_cluster, start_cluster
from tests.conftest import eventually, wait_terminal

ROOT = Path(__file__).resolve().parent.parent


class NumParams(Params):
    n: int = 0


@pytest.fixture
def registry() -> Iterator[None]:
    """Declarations made by a test vanish after it."""
    saved = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)


# --- declaring ------------------------------------------------------------------------


def test_name_defaults_to_the_function_and_lands_in_the_registry(registry: None) -> None:
    @task(max_attempts=3, priority="high", limit=2)
    async def tt_square(ctx: TaskContext, params: NumParams) -> int:
        """Square a number.

        More text that is not the description."""
        return params.n ** 2

    assert tt_square.name == "tt_square" and REGISTRY["tt_square"] is tt_square
    assert tt_square.params is NumParams and tt_square.description == "Square a number."
    assert tt_square.priority is Priority.HIGH
    entry = tt_square.schema()
    assert entry["type"] == "tt_square" and entry["max_attempts"] == 3 and entry["limit"] == 2
    assert entry["params_schema"]["properties"]["n"]["type"] == "integer"

    @task("tt.named", description="Given.")
    async def anything(ctx: TaskContext, params: NumParams) -> None: ...

    assert anything.name == "tt.named" and anything.description == "Given."


def test_a_task_must_be_async(registry: None) -> None:
    with pytest.raises(DeclarationError, match="async function"):
        task()(lambda ctx, params: None)  # type: ignore[arg-type,return-value]

    def sync(ctx: TaskContext, params: NumParams) -> None: ...

    with pytest.raises(DeclarationError, match="sync: a task must be an async function"):
        task()(sync)  # type: ignore[arg-type]


def test_params_must_be_one_annotated_params_model(registry: None) -> None:
    async def no_params(ctx: TaskContext) -> None: ...

    async def unannotated(ctx, params):  # type: ignore[no-untyped-def]
        ...

    class Plain(BaseModel):
        n: int

    async def plain_model(ctx: TaskContext, params: Plain) -> None: ...

    async def scalar(ctx: TaskContext, params: int) -> None: ...

    with pytest.raises(DeclarationError, match=r"no_params: a task takes \(ctx, params\)"):
        task()(no_params)  # type: ignore[arg-type]
    for fn in (unannotated, plain_model, scalar):
        with pytest.raises(DeclarationError, match=r"taskstream\.Params model"):
            task()(fn)  # type: ignore[arg-type]
    assert not {"no_params", "unannotated", "plain_model", "scalar"} & set(REGISTRY)


def test_policy_is_checked_at_declaration(registry: None) -> None:
    async def tt_policy(ctx: TaskContext, params: NumParams) -> None: ...

    with pytest.raises(DeclarationError, match="key and key_limit go together"):
        task(key=lambda p, tenant: tenant)(tt_policy)
    with pytest.raises(DeclarationError, match="key and key_limit go together"):
        task(key_limit=2)(tt_policy)
    with pytest.raises(DeclarationError, match="max_attempts must be at least 1"):
        task(max_attempts=0)(tt_policy)
    with pytest.raises(DeclarationError, match="task name"):
        task("has space")(tt_policy)
    spec = task(key=lambda p, tenant: f"{tenant}:{p.n}", key_limit=1)(tt_policy)
    assert spec.concurrency_key(NumParams(n=7), "acme") == "acme:7"


def test_one_name_two_functions_is_an_error(registry: None) -> None:
    @task("tt_twice")
    async def first(ctx: TaskContext, params: NumParams) -> None: ...

    async def second(ctx: TaskContext, params: NumParams) -> None: ...

    with pytest.raises(DeclarationError, match=r"'tt_twice' declared twice.*first.*second"):
        task("tt_twice")(second)


# --- discovery ------------------------------------------------------------------------


def test_discovery_errors_name_the_module(registry: None, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tt_needs_missing.py").write_text("import tt_not_installed_anywhere\n")
    (tmp_path / "tt_bad_declaration.py").write_text(textwrap.dedent("""
        from taskstream import task

        @task()
        def tt_sync(ctx, params):
            pass
    """))
    with pytest.raises(TaskModuleError, match=r"'tests\.no_such_module'"):
        load_tasks("tests.no_such_module", builtin=False, use_entry_points=False)
    with pytest.raises(TaskModuleError, match=r"'tt_needs_missing'.*tt_not_installed_anywhere"):
        load_tasks("tt_needs_missing", builtin=False, use_entry_points=False)
    with pytest.raises(TaskModuleError, match=r"'tt_bad_declaration'.*async function"):
        load_tasks(" tt_bad_declaration ,", builtin=False, use_entry_points=False)


def test_discovery_loads_builtins_and_named_modules(registry: None) -> None:
    found = load_tasks("tests.task_api_extra, ", use_entry_points=False)
    assert {"demo", "noop", "document_process", "tt_extra"} <= set(found)


# --- web and workers that disagree ----------------------------------------------------

V2_WEB = {"TASKSTREAM_TASKS": "tests.task_api_types,tests.task_api_extra",
          "TT_ECHO_VERSION": "2"}
V1 = {"TASKSTREAM_TASKS": "tests.task_api_types", "TT_ECHO_VERSION": "1"}


async def live_workers(database_url: str) -> int:
    """Workers seen within the test lease (TEST_TIMINGS), as the web process counts them."""
    conn = await asyncpg.connect(database_url)
    try:
        workers, _ = await store.live_worker_types(
            conn, float(TEST_TIMINGS["TASKSTREAM_LEASE_SECONDS"]))
        return workers
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def mixed(backing: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
                ) -> AsyncIterator[tuple[Cluster, WebServer]]:
    """A deployment whose workers run v1 of tt_echo and lack tt_extra, with two web
    processes: one deployed with them (``cluster.web``), one newer (returned)."""
    logs = tmp_path_factory.mktemp("mixed")
    cluster = await start_cluster(*backing, logs, workers=0, **V1)
    newer = WebServer({**cluster.env, **V2_WEB}, logs / "web-v2.log")
    try:
        await asyncio.to_thread(newer.start)
        cluster.add_worker()
        await eventually(lambda: live_workers(cluster.database_url))
        yield cluster, newer
    finally:
        newer.stop()
        await drop_cluster(backing[0], cluster)


async def test_task_types_lists_the_declared_types(mixed: tuple[Cluster, WebServer]) -> None:
    _, newer = mixed
    async with httpx.AsyncClient(base_url=newer.url) as c:
        types = {t["type"]: t for t in (await c.get("/task-types")).json()}
    assert {"demo", "noop", "document_process", "tt_echo", "tt_extra"} <= set(types)
    assert types["tt_echo"]["description"] == "Return the text."
    assert "shout" in types["tt_echo"]["params_schema"]["properties"]


async def test_a_type_no_live_worker_loads_is_refused(mixed: tuple[Cluster, WebServer]) -> None:
    _, newer = mixed
    async with httpx.AsyncClient(base_url=newer.url) as c:
        r = await c.post("/tasks", json={"type": "tt_extra", "params": {}})
        assert r.status_code == 422, r.text
        assert "no running worker knows task type 'tt_extra'" in r.json()["detail"]
        assert "tt_echo" in r.json()["detail"]  # names what they do load
        assert (await c.post("/tasks", json={"type": "noop", "params": {}})).status_code == 202


async def test_another_schema_version_is_refused(mixed: tuple[Cluster, WebServer]) -> None:
    cluster, newer = mixed
    body = {"type": "tt_echo", "params": {"text": "hi"}}
    async with httpx.AsyncClient(base_url=newer.url) as c:
        r = await c.post("/tasks", json=body)
        assert r.status_code == 422, r.text
        assert "another version of 'tt_echo'" in r.json()["detail"]
    async with httpx.AsyncClient(base_url=cluster.web.url) as c:  # deployed with the workers
        r = await c.post("/tasks", json=body)
        assert r.status_code == 202, r.text
        done = await wait_terminal(c, r.json()["task_id"])
        assert done["status"] == "completed" and done["result"] == {"text": "hi"}


@pytest.fixture(scope="module")
async def no_workers(backing: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
                     ) -> AsyncIterator[Cluster]:
    """A web process that knows tt_extra, and no worker (yet)."""
    cluster = await start_cluster(*backing, tmp_path_factory.mktemp("noworkers"), workers=0,
                                  TASKSTREAM_TASKS="tests.task_api_extra")
    yield cluster
    await drop_cluster(backing[0], cluster)


async def submit_while_no_worker(cluster: Cluster, c: httpx.AsyncClient) -> str:
    await eventually(lambda: _none_live(cluster))
    r = await c.post("/tasks", json={"type": "tt_extra", "params": {"n": 2}})
    assert r.status_code == 202, r.text  # nobody to ask: accepted, it waits
    task_id: str = r.json()["task_id"]
    return task_id


async def _none_live(cluster: Cluster) -> bool:
    return await live_workers(cluster.database_url) == 0


async def test_worker_fails_a_job_of_a_type_it_does_not_load(no_workers: Cluster) -> None:
    async with httpx.AsyncClient(base_url=no_workers.web.url) as c:
        task_id = await submit_while_no_worker(no_workers, c)
        worker = WorkerProc({**no_workers.env, "TASKSTREAM_TASKS": "",
                             "TASKSTREAM_UNKNOWN_TYPE_GRACE": "600"},
                            no_workers.logs / "worker-runs.log")
        worker.start()
        try:
            done = await wait_terminal(c, task_id)
        finally:
            worker.stop()
        assert done["status"] == "failed" and done["failure_reason"] == "unknown_task_type"
        assert "unknown task type 'tt_extra'" in done["error"]


async def test_pending_task_of_a_type_no_worker_loads_fails_after_the_grace(
        no_workers: Cluster) -> None:
    async with httpx.AsyncClient(base_url=no_workers.web.url) as c:
        task_id = await submit_while_no_worker(no_workers, c)
        # This worker reads another queue and never re-enqueues, so only its sweeper's
        # unknown-type check can end the task.
        worker = WorkerProc({**no_workers.env, "TASKSTREAM_TASKS": "",
                             "TASKSTREAM_NAMESPACE": f"other{uuid.uuid4().hex[:6]}",
                             "TASKSTREAM_PENDING_STALE_SECONDS": "600",
                             "TASKSTREAM_UNKNOWN_TYPE_GRACE": "1.5"},
                            no_workers.logs / "worker-sweeps.log")
        worker.start()
        try:
            done = await wait_terminal(c, task_id)
        finally:
            worker.stop()
        assert done["status"] == "failed" and done["failure_reason"] == "unknown_task_type"
        assert "no running worker loads task type 'tt_extra'" in done["error"]
        events = (await c.get(f"/tasks/{task_id}/events")).json()["items"]
        assert [e["type"] for e in events] == ["created", "failed"]


# --- typed submit ---------------------------------------------------------------------

TYPED = '''
from taskstream import AsyncClient, Params, TaskContext, task


class FetchParams(Params):
    url: str


class WrongParams(Params):
    path: str


@task()
async def fetch(ctx: TaskContext, params: FetchParams) -> dict[str, int]:
    return {"status": 200}


async def main(ts: AsyncClient) -> None:
    await ts.submit(fetch, FetchParams(url="https://example.org"))
    await ts.submit("fetch", {"url": "https://example.org"})
'''


def test_submit_is_type_checked_against_the_declared_params(tmp_path: Path) -> None:
    (tmp_path / "typed_ok.py").write_text(TYPED)
    (tmp_path / "typed_wrong.py").write_text(
        TYPED + '    await ts.submit(fetch, WrongParams(path="/x"))\n')
    mypy = Path(sys.executable).parent / "mypy"
    out = subprocess.run(
        [str(mypy), "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"),
         "typed_ok.py", "typed_wrong.py"],
        cwd=tmp_path, env={**os.environ, "MYPYPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout + out.stderr  # typed_ok.py passes
    wrong_line = TYPED.count("\n") + 1
    assert lines[0].startswith(f"typed_wrong.py:{wrong_line}: error:"), lines
    assert '"submit"' in lines[0], lines
