"""What installing taskstream puts on a machine: one public name plus the card's ``service``
and ``worker`` folders, typed, and a client-only install that needs no server dependency."""

import email
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The server's distributions' modules; a client-only install has none of them.
SERVER_MODULES = ("fastapi", "starlette", "asyncpg", "arq", "redis", "sqlalchemy", "sqlmodel",
                  "uvicorn", "sse_starlette", "msgpack", "orjson", "pypdf")
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", ".data", "build", "dist", "*.egg-info",
                                    "__pycache__", ".*_cache", "results", ".venv-*")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the working tree (a build in place would leave build/
    behind, whose stale files end up in later wheels)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = shutil.copytree(ROOT, tmp / "src", ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (built,) = (tmp / "dist").glob("taskstream-*.whl")
    return built


def test_the_wheel_installs_only_our_names(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top == {"taskstream", "service", "worker"}
    assert "taskstream/py.typed" in names  # users' mypy checks submit() against our types
    assert any(n.startswith("taskstream/core/migrations/") and n.endswith(".sql")
               for n in names)
    assert not [n for n in names if "/tests/" in n or n.startswith(("bench/", "chaos/"))]


def test_the_base_install_is_the_client_and_the_declaration_api(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(meta_name))
    requires = meta.get_all("Requires-Dist") or []
    base = sorted(r.split(">")[0].split("=")[0].strip() for r in requires if "extra ==" not in r)
    assert base == ["httpx", "pydantic", "rich"]
    server = " ".join(r for r in requires if 'extra == "server"' in r)
    assert all(dist in server for dist in ("fastapi", "arq", "asyncpg", "uvicorn"))


BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys

    BLOCKED = {SERVER_MODULES!r}

    class NoServer(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is not installed (client-only install)")
            return None

    sys.meta_path.insert(0, NoServer())
""")

CLIENT_ONLY = BLOCKER + textwrap.dedent("""
    import taskstream
    import taskstream.builtin
    from taskstream import AsyncClient, Params, TaskContext, task
    from taskstream.client.cli import main

    class ResizeParams(Params):
        url: str

    @task(max_attempts=3, limit=4)
    async def resize(ctx: TaskContext, params: ResizeParams) -> dict[str, str]:
        return {"url": params.url}

    assert resize.schema()["params_schema"]["required"] == ["url"]
    assert "demo" in taskstream.declaration.REGISTRY
    AsyncClient("http://127.0.0.1:9")
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0, exc.code
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("client-only ok")
""")


def test_the_client_and_declarations_run_without_the_server_stack() -> None:
    out = subprocess.run([sys.executable, "-c", CLIENT_ONLY], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and out.stdout.rstrip().endswith("client-only ok")


def test_the_blocker_blocks() -> None:
    """The check above proves something only if the finder really stops those imports."""
    out = subprocess.run([sys.executable, "-c", BLOCKER + "import fastapi"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "fastapi is not installed" in out.stderr


def test_a_fresh_venv_with_the_base_install(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          str(wheel)], capture_output=True, text=True, timeout=300)
    if pip.returncode != 0 and "No matching distribution" in pip.stderr:
        pytest.skip(f"no package index reachable for the base dependencies: {pip.stderr[-300:]}")
    assert pip.returncode == 0, pip.stderr
    check = ("import importlib.util, taskstream; "
             "from taskstream.client.cli import main; "
             f"print([m for m in {SERVER_MODULES!r} if importlib.util.find_spec(m)])")
    out = subprocess.run([str(py), "-c", check], cwd=tmp_path, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # none of the server stack installed
    assert (venv / "bin" / "taskstream").exists()
