"""Finding the task types a deployment runs: the built-in ones, the modules named in
``TASKSTREAM_TASKS`` (comma-separated, e.g. ``myapp.tasks,otherpkg.jobs``) and the modules
that installed packages name in the ``taskstream.tasks`` entry-point group:

    [project.entry-points."taskstream.tasks"]
    myapp = "myapp.tasks"

Both processes load the same modules: the web process for the declarations (it validates
parameters and publishes schemas), the workers for the coroutines too. That is why a task
module imports its heavy libraries inside its coroutines.
"""

import importlib
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from taskstream.declaration import REGISTRY, TaskDef

ENTRY_POINT_GROUP = "taskstream.tasks"
BUILTIN_MODULE = "taskstream.builtin"


class TaskModuleError(ImportError):
    """A named task module could not be imported (a missing dependency, or a declaration
    that raises ``DeclarationError``); says which module and why."""


def task_modules(names: str | Sequence[str]) -> list[str]:
    """``"a.tasks, b.jobs"`` (the environment's form) or a list, as module names."""
    items = names.split(",") if isinstance(names, str) else list(names)
    return [n.strip() for n in items if n.strip()]


def load_tasks(modules: str | Sequence[str] = (), *, builtin: bool = True,
               use_entry_points: bool = True) -> dict[str, TaskDef[Any, Any]]:
    """Import the task modules; returns every declared type by name."""
    names = ([BUILTIN_MODULE] if builtin else []) + task_modules(modules)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # whatever the module raised, say which module it was
            raise TaskModuleError(f"cannot import task module {name!r}: {exc}") from exc
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as exc:
                raise TaskModuleError(
                    f"cannot import task module {ep.value!r} (entry point {ep.name!r} of "
                    f"{ENTRY_POINT_GROUP}): {exc}") from exc
    return dict(REGISTRY)
