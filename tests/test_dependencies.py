"""Declared = imported: every third-party module the product imports comes from a distribution
pyproject.toml declares for that part of it, and every declared dependency is used.

* the public package (``taskstream``'s own modules and ``taskstream.client``, with the few
  modules of ``taskstream.core`` they share with the server, such as the status names): the
  base dependencies only, and nothing of ``service`` or ``worker`` — a client-only install
  runs it;
* the server (``taskstream.core``, ``service``, ``worker``, and ``taskstream.builtin``, whose
  declarations the web process imports at the top level, so those imports are base-only):
  base + the ``server`` extra;
* ``taskstream.devservices`` (dev tooling): base + ``server``, and ``embedded`` only inside
  functions (it is optional).
"""

import ast
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = {"taskstream", "service", "worker"}
#: Declared but not imported by name: run from the Procfile's command line, or loaded by
#: FastAPI by name when a route takes a form.
RUN_NOT_IMPORTED = {"uvicorn"}
#: Code of ours that the public package must not import.
SERVER_CODE = ("taskstream.devservices", "service", "worker")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(reqs: list[str]) -> set[str]:
    return {_normalize(re.split(r"[\s<>=!~;\[(]", d, maxsplit=1)[0]) for d in reqs}


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
BASE = _names(PROJECT["dependencies"])
EXTRAS = {k: _names(v) for k, v in PROJECT["optional-dependencies"].items()}


@dataclass(frozen=True)
class Import:
    file: str
    module: str
    top_level: bool  # at module level, not inside a function


def _imports(paths: list[Path]) -> list[Import]:
    out: list[Import] = []
    for py in paths:
        tree = ast.parse(py.read_text())
        nested = {id(n) for f in ast.walk(tree)
                  if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                  for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            out += [Import(str(py.relative_to(ROOT)), n, id(node) not in nested) for n in names]
    return out


def _files(*dirs: str, recursive: bool = True) -> list[Path]:
    return [p for d in dirs for p in ((ROOT / d).rglob("*.py") if recursive
                                      else (ROOT / d).glob("*.py"))]


def _with_shared(files: list[Path]) -> list[Path]:
    """``files`` and the modules of ``taskstream.core`` they import, transitively."""
    seen, todo = list(files), list(files)
    while todo:
        for imp in _imports([todo.pop()]):
            if imp.module.startswith("taskstream.core."):
                path = ROOT / (imp.module.replace(".", "/") + ".py")
                for found in (ROOT / "taskstream/core/__init__.py", path):
                    if found.exists() and found not in seen:
                        seen.append(found)
                        todo.append(found)
    return seen


PUBLIC = _with_shared(_files("taskstream", recursive=False) + _files("taskstream/client"))
BUILTIN = _files("taskstream/builtin")
SERVER = _files("taskstream/core", "service", "worker")
DEVSERVICES = _files("taskstream/devservices")


def _third_party(imports: list[Import]) -> dict[str, set[str]]:
    """distribution -> files importing it."""
    dists = packages_distributions()
    out: dict[str, set[str]] = {}
    for imp in imports:
        top = imp.module.split(".")[0]
        if top in sys.stdlib_module_names or top in OURS:
            continue
        for dist in dists.get(top, [top]):
            out.setdefault(_normalize(dist), set()).add(imp.file)
    return out


def _undeclared(imports: list[Import], allowed: set[str]) -> dict[str, list[str]]:
    return {d: sorted(f)[:3] for d, f in _third_party(imports).items() if d not in allowed}


def test_every_part_was_found() -> None:
    assert len(PUBLIC) >= 4 and BUILTIN and SERVER and DEVSERVICES
    assert {"httpx", "pydantic", "rich"} == BASE and {"server", "embedded"} <= set(EXTRAS)


def test_the_public_package_needs_only_the_base_install() -> None:
    imports = _imports(PUBLIC)
    assert not _undeclared(imports, BASE), "the client and declaration API import more than " \
        f"the base dependencies: {_undeclared(imports, BASE)}"
    server_code = sorted({(i.file, i.module) for i in imports
                          if i.module.startswith(SERVER_CODE)})
    assert not server_code, f"the public package imports the server's code: {server_code}"


def test_builtin_declarations_import_heavy_libraries_lazily() -> None:
    imports = _imports(BUILTIN)
    top = [i for i in imports if i.top_level]
    assert not _undeclared(top, BASE), f"at import time: {_undeclared(top, BASE)}"
    # the local model (optional extra; "llama-cpp" is its import name where it is not
    # installed, so no distribution maps it) only inside functions, as checked above, and
    # the MiniLM embedder's libraries (the optional `minilm` extra)
    local_llm = EXTRAS["local-llm"] | {"llama-cpp"}
    assert not _undeclared(imports, BASE | EXTRAS["server"] | local_llm | EXTRAS["minilm"])


#: Optional extras the server imports only inside functions (switched on by a setting):
#: top-level module -> extra. ``opentelemetry`` is a namespace package of many distributions.
LAZY_EXTRAS = {"opentelemetry": "otel"}


def test_the_server_uses_only_base_and_server_dependencies() -> None:
    imports = _imports(SERVER)
    optional = [i for i in imports if i.module.split(".")[0] in LAZY_EXTRAS]
    assert optional and set(LAZY_EXTRAS.values()) <= set(EXTRAS)
    eager = [(i.file, i.module) for i in optional if i.top_level]
    assert not eager, f"optional extras imported at module level: {eager}"
    undeclared = _undeclared([i for i in imports if i not in optional],
                             BASE | EXTRAS["server"])
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_devservices_use_the_embedded_extra_only_lazily() -> None:
    imports = _imports(DEVSERVICES)
    top = [i for i in imports if i.top_level]
    assert not _undeclared(top, BASE | EXTRAS["server"])
    assert not _undeclared(imports, BASE | EXTRAS["server"] | EXTRAS["embedded"])


def test_every_declared_dependency_is_used() -> None:
    unused_base = BASE - set(_third_party(_imports(PUBLIC)))
    assert not unused_base, f"base dependencies the public package never imports: {unused_base}"
    used = set(_third_party(_imports(PUBLIC + BUILTIN + SERVER)))
    unused = EXTRAS["server"] - used - RUN_NOT_IMPORTED
    assert not unused, f"server dependencies never imported: {sorted(unused)}"
