"""The task-type catalogue: names, parameter models and policies.

The web process validates submissions against these models and publishes their JSON schemas
at ``GET /task-types`` without importing any task implementation (those live in
``worker/tasks`` with their heavy dependencies, such as PDF parsing).
"""

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class PermanentError(Exception):
    """Raised by task code for failures a retry cannot fix (bad input, a corrupt file)."""


class Params(BaseModel):
    """Base of every parameter model: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class DemoParams(Params):
    """Work for ``duration`` seconds, split into ``steps`` reported progress steps."""

    duration: float = Field(5.0, ge=0, le=3600, description="Total seconds of work.")
    steps: int = Field(10, ge=1, le=1000, description="Progress events to report.")
    fail_at_step: int | None = Field(
        None, ge=1, description="Raise an error at this step (to see a failure end to end)."
    )
    fail_attempts: int = Field(
        1_000_000, ge=0, description="With fail_at_step: only the first N attempts fail."
    )


class NoopParams(Params):
    """Does nothing but report ``events`` progress events as fast as it can (benchmarks)."""

    events: int = Field(0, ge=0, le=100_000)


class DocumentParams(Params):
    """Parse an uploaded PDF, text or Markdown file, chunk it, embed and store the chunks."""

    upload_id: uuid.UUID
    chunk_size: int = Field(1000, ge=100, le=20_000, description="Characters per chunk.")
    chunk_overlap: int = Field(100, ge=0, le=5_000)


@dataclass(frozen=True, slots=True)
class TaskType:
    name: str
    params: type[Params]
    description: str
    max_attempts: int = 1
    timeout: float | None = None  # hard: the task is cancelled
    soft_timeout: float | None = None  # soft: SoftTimeLimitExceeded at the next report
    retry_timeouts: bool = True

    def schema(self) -> dict[str, Any]:
        return {
            "type": self.name,
            "description": self.description,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "soft_timeout": self.soft_timeout,
            "params_schema": self.params.model_json_schema(),
        }


TASK_TYPES: dict[str, TaskType] = {
    t.name: t
    for t in (
        TaskType("demo", DemoParams, "Sleep through N seconds in reported steps.",
                 max_attempts=1),
        TaskType("noop", NoopParams, "No work; optionally a burst of progress events."),
        TaskType(
            "document_process",
            DocumentParams,
            "Parse a PDF/text/Markdown upload, chunk, embed and store it.",
            max_attempts=3,
            timeout=1800,
            soft_timeout=1700,
        ),
    )
}


class UnknownTaskType(LookupError):
    pass


def validate_params(task_type: str, params: dict[str, Any]) -> Params:
    """Raises UnknownTaskType or pydantic.ValidationError naming the problem."""
    spec = TASK_TYPES.get(task_type)
    if spec is None:
        raise UnknownTaskType(task_type)
    return spec.params.model_validate(params)


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


__all__ = [
    "TASK_TYPES",
    "PermanentError",
    "TaskOptions",
    "TaskType",
    "UnknownTaskType",
    "ValidationError",
    "validate_params",
]
