"""Task ids: UUIDs, parsed strictly so a malformed id is a 404, not a database error."""

import uuid


def new_task_id() -> str:
    return str(uuid.uuid4())


def parse_task_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def parse_event_cursor(value: str | None) -> int | None:
    """A Last-Event-ID is a short decimal sequence number; anything else is ignored (None)."""
    if value is None:
        return None
    if not value or len(value) > 19 or not value.isascii() or not value.isdigit():
        return None
    return int(value)
