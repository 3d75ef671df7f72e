"""The event contract: what a worker or the API appends, and what streams and history carry.

One JSON shape is used on the Redis channel, in ``GET /tasks/{id}/events`` and as the ``data:``
of every SSE message. Each event is also a snapshot of its task (status, progress, result,
error), so a browser's ``onmessage`` handler can read ``data.status`` / ``data.progress``
/ ``data.result`` from any message.
"""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

import orjson

from taskstream.core.states import EventType, allowed_from, is_terminal, target


@dataclass(slots=True)
class NewEvent:
    """An event to append. ``attempt`` fences writes from superseded attempts (None = API)."""

    task_id: str
    owner: str
    type: EventType
    attempt: int | None = None
    progress: float | None = None
    message: str | None = None
    data: Any = None
    result: Any = None
    error: str | None = None
    worker_id: str | None = None
    lease: float | None = None  # 'started': seconds until the lease must be renewed

    def to_sql(self) -> dict[str, Any]:
        by_attempt = self.attempt is not None
        frm = allowed_from(self.type, by_attempt=by_attempt)
        to = target(self.type)
        return {
            "task_id": self.task_id,
            "owner": self.owner,
            "type": self.type.value,
            # None: no condition (creation); an empty list refuses the write.
            "from": sorted(frm) if (frm or by_attempt) else None,
            "to": to.value if to else None,
            "attempt": self.attempt,
            "progress": self.progress,
            "message": self.message,
            "data": self.data,
            "result": self.result,
            "error": self.error,
            "worker_id": self.worker_id,
            "lease": self.lease,
        }


#: Plain strings (EventType is a StrEnum, so members compare equal to them): building a
#: tuple of enum members per call was a third of ``to_json``, once per published event.
COMPLETED: Final = EventType.COMPLETED.value
ERROR_TYPES: Final = frozenset({EventType.FAILED.value, EventType.CANCELLED.value})


def event_result(type: str, data: Any) -> Any:
    """The ``result`` an event carries on the wire: a completed event's data."""
    return data if type == COMPLETED else None


def event_error(type: str, message: str | None) -> str | None:
    """The ``error`` an event carries on the wire: a failed or cancelled event's message."""
    return message if type in ERROR_TYPES else None


_last_iso: tuple[datetime | None, str] = (None, "")


def _iso(at: datetime) -> str:
    """``at.isoformat()``, once per distinct time: a batch's events share their transaction's
    ``now()``, and formatting was a tenth of a worker's time per event."""
    global _last_iso
    last, text = _last_iso
    if last is None or at != last or at.tzinfo != last.tzinfo:
        text = at.isoformat()
        _last_iso = (at, text)
    return text


class IdField(StrEnum):
    """Which counter a stream's SSE ids (and resume cursor) follow."""

    SEQ = "seq"  # one task's stream: the task's event sequence
    TENANT_SEQ = "tenant_seq"  # a tenant's stream: the tenant's event sequence


@dataclass(slots=True)
class Event:
    """A persisted event, as every reader sees it."""

    task_id: str
    seq: int
    tenant_seq: int
    type: str
    status: str
    progress: float
    message: str | None
    data: Any
    attempt: int
    created_at: datetime
    owner: str = ""  # routing only; not part of the wire JSON
    raw: str = field(default="", repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return is_terminal(self.status)

    def to_json(self) -> dict[str, Any]:
        """The ``core.models.EventRead`` shape, built without pydantic (once per event, on
        the hot path); tests/test_models.py holds the two together."""
        return {
            "task_id": self.task_id,
            "seq": self.seq,
            "tenant_seq": self.tenant_seq,
            "type": self.type,
            "status": self.status,
            "progress": self.progress,
            "message": self.message,
            "data": self.data,
            "result": event_result(self.type, self.data),
            "error": event_error(self.type, self.message),
            "attempt": self.attempt,
            "created_at": _iso(self.created_at),
        }

    def position(self, id_field: "IdField") -> int:
        """Where this event stands in a task's stream or in its tenant's."""
        return self.seq if id_field == IdField.SEQ else self.tenant_seq

    def encode(self) -> str:
        if not self.raw:
            self.raw = orjson.dumps(self.to_json(), option=orjson.OPT_NON_STR_KEYS).decode()
        return self.raw

    @classmethod
    def decode(cls, raw: str | bytes, owner: str = "") -> "Event":
        d = orjson.loads(raw)
        return cls(
            task_id=d["task_id"],
            seq=int(d["seq"]),
            tenant_seq=int(d["tenant_seq"]),
            type=d["type"],
            status=d["status"],
            progress=float(d["progress"]),
            message=d["message"],
            data=d["data"],
            attempt=int(d["attempt"]),
            created_at=datetime.fromisoformat(d["created_at"]),
            owner=owner,
            raw=raw if isinstance(raw, str) else raw.decode(),
        )
