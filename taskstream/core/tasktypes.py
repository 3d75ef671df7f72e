"""The task types this process knows, loaded once at start-up from the declarations
(``taskstream.discovery``), and the per-submission options.

The web process validates submissions against the declared parameter models and publishes
their schemas at ``GET /task-types``; the workers run the declared coroutines. Neither
imports a task module's heavy dependencies: those are imported inside the coroutines.
"""

from datetime import UTC, datetime, timedelta
from typing import Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from taskstream.core.settings import Settings
from taskstream.declaration import Params, Priority, TaskDef
from taskstream.discovery import load_tasks


class UnknownTaskType(LookupError):
    pass


class Catalogue:
    """Declared task types by name."""

    def __init__(self, types: dict[str, TaskDef[Any, Any]]) -> None:
        self._types = dict(types)
        # Hashing a JSON schema costs far more than a submission's own work: once, here.
        self._versions = {name: spec.schema_hash() for name, spec in self._types.items()}

    @classmethod
    def load(cls, settings: Settings) -> "Catalogue":
        return cls(load_tasks(settings.tasks, builtin=settings.builtin_tasks))

    def get(self, name: str) -> TaskDef[Any, Any] | None:
        return self._types.get(name)

    def __getitem__(self, name: str) -> TaskDef[Any, Any]:
        spec = self._types.get(name)
        if spec is None:
            raise UnknownTaskType(name)
        return spec

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def names(self) -> list[str]:
        return sorted(self._types)

    def all(self) -> list[TaskDef[Any, Any]]:
        return [self._types[n] for n in self.names()]

    def versions(self) -> dict[str, str]:
        """Type name -> schema hash, as workers announce them."""
        return dict(self._versions)

    def version(self, name: str) -> str:
        """The schema hash of one type (raises UnknownTaskType)."""
        if name not in self._versions:
            raise UnknownTaskType(name)
        return self._versions[name]

    def validate(self, name: str, params: dict[str, Any]) -> Params:
        """Raises UnknownTaskType or pydantic.ValidationError naming the problem."""
        model: Params = self[name].params.model_validate(params)
        return model


#: The furthest a run can be put off (a delay longer than this is more likely a unit mistake).
MAX_DELAY_S = 366 * 24 * 3600


class TaskOptions(BaseModel):
    """Per-submission overrides of the type's policy."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int | None = Field(None, ge=1, le=50,
                                     description="Override the type's retry budget.")
    timeout: float | None = Field(None, gt=0, le=7 * 24 * 3600,
                                  description="Hard time limit in seconds (task cancelled).")
    soft_timeout: float | None = Field(
        None, gt=0, le=7 * 24 * 3600,
        description="Soft time limit: the task's code gets SoftTimeLimitExceeded.")
    priority: Priority | None = Field(
        None, description="Override the type's priority: high starts before every normal or "
        "low task waiting, low after them.")
    run_at: AwareDatetime | None = Field(
        None, description="Do not start before this time (ISO 8601 with a UTC offset); a past "
        "time runs now. Not with delay.")
    delay: float | None = Field(None, ge=0, le=MAX_DELAY_S,
                                description="Do not start before this many seconds from now.")

    @model_validator(mode="after")
    def _one_start_time(self) -> Self:
        if self.run_at is not None and self.delay is not None:
            raise ValueError("give run_at or delay, not both")
        if self.run_at is not None and \
                self.run_at > datetime.now(UTC) + timedelta(seconds=MAX_DELAY_S):
            raise ValueError("run_at is more than a year away")
        return self

    def options(self) -> dict[str, Any]:
        """The overrides given, as stored with the task."""
        return self.model_dump(include=set(TaskOptions.model_fields), exclude_none=True,
                               mode="json")


def scheduled(options: dict[str, Any], spec: TaskDef[Any, Any],
              now: datetime | None = None) -> dict[str, Any]:
    """The options as stored with a new task: its priority resolved (the submission's, else
    the type's) and a delay turned into ``run_at``, so that every later enqueue (retry,
    re-queue, the sweeper's) reads both from the task alone."""
    out = dict(options)
    out["priority"] = Priority(out.get("priority") or spec.priority).value
    delay = out.pop("delay", None)
    if delay:
        out["run_at"] = ((now or datetime.now(UTC)) + timedelta(seconds=delay)).isoformat()
    return out


__all__ = ["Catalogue", "TaskOptions", "UnknownTaskType", "ValidationError", "scheduled"]
