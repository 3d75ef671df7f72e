"""Declared = imported: every third-party module the product imports comes from a distribution
pyproject.toml declares as a dependency, and every declared dependency is used."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("core", "service", "worker", "client")
#: Declared but not imported by name: run from the Procfile's command line.
RUN_NOT_IMPORTED = {"uvicorn"}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normalize(re.split(r"[\s<>=!~;\[(]", d, maxsplit=1)[0])
            for d in project["dependencies"]}


def _imported_distributions() -> dict[str, set[str]]:
    """distribution -> files importing it, for every non-stdlib, non-product import."""
    dists = packages_distributions()
    out: dict[str, set[str]] = {}
    for pkg in PRODUCT:
        for py in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(py.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in PRODUCT:
                        continue
                    for dist in dists.get(top, [top]):
                        out.setdefault(_normalize(dist), set()).add(str(py.relative_to(ROOT)))
    return out


def test_every_import_is_declared_and_every_dependency_imported() -> None:
    declared = _declared()
    imported = _imported_distributions()
    undeclared = {d: sorted(f)[:3] for d, f in imported.items() if d not in declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    unused = declared - set(imported) - RUN_NOT_IMPORTED
    assert not unused, f"declared but never imported by the product: {sorted(unused)}"
