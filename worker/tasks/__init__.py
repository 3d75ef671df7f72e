"""Task implementations, registered by the names in ``core.tasktypes.TASK_TYPES``."""

from collections.abc import Callable, Coroutine
from typing import Any

from taskstream.core.tasktypes import Params
from worker.context import TaskContext

TaskFn = Callable[[TaskContext, Any], Coroutine[Any, Any, Any]]

IMPLEMENTATIONS: dict[str, TaskFn] = {}


def task(name: str) -> Callable[[TaskFn], TaskFn]:
    def register(fn: TaskFn) -> TaskFn:
        IMPLEMENTATIONS[name] = fn
        return fn

    return register


def load_all() -> dict[str, TaskFn]:
    """Import every implementation module (they register themselves)."""
    from worker.tasks import demo, documents  # noqa: F401

    return IMPLEMENTATIONS


__all__ = ["IMPLEMENTATIONS", "Params", "TaskFn", "load_all", "task"]
