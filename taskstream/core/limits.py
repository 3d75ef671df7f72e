"""Concurrency limits, the part both processes share: the key a task is counted under.

A task type declared with ``key=`` and ``key_limit=`` runs at most ``key_limit`` tasks per
key value at once. The web process computes the key at submission (the task's params and
tenant are at hand, and the key function is user code best run once) and stores it in the
task's options, where migration 070 counts it among the running tasks of its type.
"""

from enum import StrEnum
from typing import Any, Final

from taskstream.declaration import TaskDef

#: The task option holding its concurrency key (070_concurrency_limits.sql reads it too).
CONCURRENCY_KEY: Final = "concurrency_key"


class LimitReason(StrEnum):
    """Why a start was refused (ts_start_limited's words; a 'waiting' event's reason)."""

    LIMIT = "limit"  # the type runs as many as its limit
    KEY_LIMIT = "key_limit"  # the task's key runs as many as its key_limit


class ConcurrencyKeyError(ValueError):
    """The type's key function failed for these params."""


def concurrency_key(spec: TaskDef[Any, Any], params: dict[str, Any], tenant: str
                    ) -> str | None:
    """The key of a task of ``spec`` with these (validated) params, or None."""
    if spec.key is None:
        return None
    try:
        key = spec.concurrency_key(spec.params.model_validate(params), tenant)
    except Exception as exc:  # user code: any failure is a bad submission
        raise ConcurrencyKeyError(f"concurrency key of {spec.name!r}: {type(exc).__name__}: {exc}"
                        ) from exc
    return None if key is None else str(key)


def with_concurrency_key(spec: TaskDef[Any, Any], params: dict[str, Any], tenant: str,
                         options: dict[str, Any]) -> dict[str, Any]:
    """``options`` plus the task's concurrency key, if its type has a key function."""
    key = concurrency_key(spec, params, tenant)
    return options if key is None else {**options, CONCURRENCY_KEY: key}


def is_limited(spec: TaskDef[Any, Any]) -> bool:
    """Whether starting a task of this type must check a limit (else: the batched path)."""
    return spec.limit is not None or spec.key_limit is not None
