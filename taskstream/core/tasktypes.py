"""The task types this process knows, loaded once at start-up from the declarations
(``taskstream.discovery``), and the per-submission options.

The web process validates submissions against the declared parameter models and publishes
their schemas at ``GET /task-types``; the workers run the declared coroutines. Neither
imports a task module's heavy dependencies: those are imported inside the coroutines.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from taskstream.core.settings import Settings
from taskstream.declaration import Params, TaskDef
from taskstream.discovery import load_tasks


class UnknownTaskType(LookupError):
    pass


class Catalogue:
    """Declared task types by name."""

    def __init__(self, types: dict[str, TaskDef[Any, Any]]) -> None:
        self._types = dict(types)

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
        return {name: spec.schema_hash() for name, spec in self._types.items()}

    def validate(self, name: str, params: dict[str, Any]) -> Params:
        """Raises UnknownTaskType or pydantic.ValidationError naming the problem."""
        model: Params = self[name].params.model_validate(params)
        return model


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

    def options(self) -> dict[str, Any]:
        """The overrides given, as stored with the task."""
        return self.model_dump(include=set(TaskOptions.model_fields), exclude_none=True)


__all__ = ["Catalogue", "TaskOptions", "UnknownTaskType", "ValidationError"]
