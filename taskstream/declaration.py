"""Declaring a task type: ``@task`` on a coroutine that takes a context and a parameter model.

    from taskstream import Params, PermanentError, TaskContext, task

    class SummarizeParams(Params):
        text: str

    @task(max_attempts=3, timeout=600, limit=4)
    async def summarize(ctx: TaskContext, params: SummarizeParams) -> dict[str, str]:
        await ctx.progress(50, "halfway")
        return {"summary": params.text[:100]}

The declaration (name, parameter model, policy) is what the web process needs: it validates
submissions against the model and publishes its JSON schema. So a task module must be cheap
to import: import heavy libraries (PDF parsers, models) inside the coroutine, not at the top.
The workers call the coroutine. Everything here is plain pydantic and the standard library.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from taskstream.context import TaskContext


class Params(BaseModel):
    """Base of every parameter model: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class PermanentError(Exception):
    """Raised by task code for failures a retry cannot fix (bad input, a corrupt file)."""


class StepOrderError(PermanentError):
    """``ctx.step``: a step name used twice in one run, or steps asked for in another order
    than the run's record (the task's code changed under a resumed run). No retry."""


class WaitTimeout(PermanentError):
    """``ctx.wait_for(..., on_timeout="fail")``: no signal came before the timeout."""


class Priority(StrEnum):
    """A high task starts before every normal or low one waiting; low waits for the rest."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


P = TypeVar("P", bound=Params)
R = TypeVar("R")
#: Computes a concurrency key from a task's params and its tenant (e.g. an API account).
KeyFn = Callable[[Any, str], str]


@dataclass(frozen=True, slots=True)
class TaskDef(Generic[P, R]):
    """One declared task type: what ``@task`` returns. Submit it with the client
    (``await ts.submit(summarize, SummarizeParams(...))``); the workers run ``fn``."""

    name: str
    params: type[P]
    fn: Callable[[TaskContext, P], Awaitable[R]] = field(repr=False, compare=False)
    description: str = ""
    max_attempts: int = 1
    #: First retry delay in seconds (doubling, with jitter); None: the deployment's setting.
    backoff: float | None = None
    timeout: float | None = None  # hard: the task is cancelled
    soft_timeout: float | None = None  # soft: SoftTimeLimitExceeded at the next report
    retry_timeouts: bool = True
    priority: Priority = Priority.NORMAL
    #: At most this many of this type run at once, across all workers.
    limit: int | None = None
    #: At most ``key_limit`` run at once per value of ``key(params, tenant)``.
    key: KeyFn | None = field(default=None, compare=False)
    key_limit: int | None = None
    #: A cron expression: the task runs on this schedule with ``cron_params``.
    cron: str | None = None
    cron_params: dict[str, Any] = field(default_factory=dict)

    def concurrency_key(self, params: P, tenant: str) -> str | None:
        return self.key(params, tenant) if self.key is not None else None

    def schema(self) -> dict[str, Any]:
        """The catalogue entry (``GET /task-types``)."""
        return {
            "type": self.name,
            "description": self.description,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "soft_timeout": self.soft_timeout,
            "priority": self.priority.value,
            "limit": self.limit,
            "key_limit": self.key_limit,
            "cron": self.cron,
            "params_schema": self.params.model_json_schema(),
        }

    def schema_hash(self) -> str:
        """Identifies this version of the parameter model: a web process and the workers
        compare it to find out that they disagree about a type."""
        raw = json.dumps(self.params.model_json_schema(), sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


class DeclarationError(TypeError):
    """A ``@task`` declaration that cannot work (caught at import, not at run time)."""


#: Every declared task type by name, filled in as task modules are imported.
REGISTRY: dict[str, TaskDef[Any, Any]] = {}


def task(name: str | None = None, *, description: str | None = None, max_attempts: int = 1,
         backoff: float | None = None, timeout: float | None = None,
         soft_timeout: float | None = None, retry_timeouts: bool = True,
         priority: Priority | str = Priority.NORMAL, limit: int | None = None,
         key: KeyFn | None = None, key_limit: int | None = None, cron: str | None = None,
         cron_params: dict[str, Any] | None = None,
         ) -> Callable[[Callable[[TaskContext, P], Awaitable[R]]], TaskDef[P, R]]:
    """Declare a task type. The name defaults to the function's; the parameter model is the
    annotation of its second argument (a ``Params`` subclass)."""

    def declare(fn: Callable[[TaskContext, P], Awaitable[R]]) -> TaskDef[P, R]:
        if not inspect.iscoroutinefunction(fn):
            raise DeclarationError(f"{fn.__qualname__}: a task must be an async function")
        spec = TaskDef(
            name=name or fn.__name__, params=_params_model(fn), fn=fn,
            description=description if description is not None else _first_line(fn),
            max_attempts=max_attempts, backoff=backoff, timeout=timeout,
            soft_timeout=soft_timeout, retry_timeouts=retry_timeouts,
            priority=Priority(priority), limit=limit, key=key, key_limit=key_limit,
            cron=cron, cron_params=cron_params or {},
        )
        _check(spec)
        known = REGISTRY.get(spec.name)
        if known is not None and known.fn is not fn and _where(known.fn) != _where(fn):
            raise DeclarationError(f"task type {spec.name!r} declared twice: "
                                   f"{_where(known.fn)} and {_where(fn)}")
        REGISTRY[spec.name] = spec
        return spec

    return declare


def _params_model(fn: Callable[..., Any]) -> Any:
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 2:
        raise DeclarationError(f"{fn.__qualname__}: a task takes (ctx, params)")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # an annotation that cannot be resolved
        raise DeclarationError(f"{fn.__qualname__}: {exc}") from exc
    model = hints.get(params[1].name)
    if not (isinstance(model, type) and issubclass(model, Params)):
        raise DeclarationError(
            f"{fn.__qualname__}: annotate the second argument with a taskstream.Params model")
    return model


def _check(spec: TaskDef[Any, Any]) -> None:
    if not spec.name or len(spec.name) > 100 or not spec.name.replace("_", "").replace(
            ".", "").replace("-", "").isalnum():
        raise DeclarationError(f"task name {spec.name!r}: letters, digits, '_', '-', '.'")
    if spec.max_attempts < 1:
        raise DeclarationError(f"{spec.name}: max_attempts must be at least 1")
    for what, value in (("limit", spec.limit), ("key_limit", spec.key_limit)):
        if value is not None and value < 1:
            raise DeclarationError(f"{spec.name}: {what} must be at least 1")
    if (spec.key is None) != (spec.key_limit is None):
        raise DeclarationError(f"{spec.name}: key and key_limit go together")


def _first_line(fn: Callable[..., Any]) -> str:
    return (inspect.getdoc(fn) or "").split("\n", 1)[0]


def _where(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"
