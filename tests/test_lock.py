"""The lock files agree with pyproject.toml: every declared dependency is pinned (with hashes)
to a version its specifier allows, nothing is pinned for a dependency no longer declared, and
the deploy lock and the dev lock pin the same versions. ``scripts/lock.sh`` re-pins."""

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
#: lock file -> the pyproject extras it holds beside the base dependencies
LOCKS = {"requirements.txt": ("server",),
         "requirements-dev.txt": ("server", "dev", "local", "otel")}
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)")


def _declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    env = {**default_environment(), "extra": ""}
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def _pins(lock: str) -> tuple[dict[str, Version], set[str], set[str]]:
    """(name -> pinned version, names pinned with hashes, names pinned for the project)."""
    pins: dict[str, Version] = {}
    hashed: set[str] = set()
    direct: set[str] = set()
    current = ""
    for line in (ROOT / lock).read_text().splitlines():
        m = _PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            pins[current] = Version(m.group(2))
        elif "--hash=sha256:" in line and current:
            hashed.add(current)
        elif re.search(r"#\s+(via\s+)?taskstream \(pyproject\.toml\)", line) and current:
            direct.add(current)
    return pins, hashed, direct


def test_each_lock_pins_what_pyproject_declares() -> None:
    for lock, extras in LOCKS.items():
        pins, hashed, direct = _pins(lock)
        declared = {canonicalize_name(r.name): r for r in _declared(extras)}
        problems = []
        for name, req in declared.items():
            if name not in pins:
                problems.append(f"{name}: declared ({req}) but not pinned")
            elif not req.specifier.contains(pins[name], prereleases=True):
                problems.append(f"{name}: pinned {pins[name]}, pyproject wants {req}")
        problems += [f"{n}: pinned for the project but no longer declared"
                     for n in sorted(direct - set(declared))]
        problems += [f"{n}: pinned without a hash" for n in sorted(set(pins) - hashed)]
        assert not problems, f"{lock} disagrees with pyproject.toml (run scripts/lock.sh):\n" \
            + "\n".join(problems)


def test_deploy_and_dev_locks_pin_the_same_versions() -> None:
    deploy, _, _ = _pins("requirements.txt")
    dev, _, _ = _pins("requirements-dev.txt")
    differ = {n: (v, dev[n]) for n, v in deploy.items() if n in dev and dev[n] != v}
    assert not differ, f"requirements.txt and requirements-dev.txt differ: {differ}"
    assert set(deploy) <= set(dev)


def test_python_version_file_fits_the_project() -> None:
    wanted = (ROOT / ".python-version").read_text().strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floor = Requirement(f"python{project['requires-python']}").specifier
    assert floor.contains(wanted + ".0"), (wanted, str(floor))
