"""The control channel's one codec, and the pending path's guard."""

import pytest

from taskstream.core import control
from taskstream.core.events import NewEvent
from taskstream.core.pending import append_pending
from taskstream.core.settings import Settings
from taskstream.core.states import EventType


def test_cancel_round_trips_and_garbage_is_ignored() -> None:
    assert control.decode_cancel(control.encode_cancel("abc")) == "abc"
    for raw in (b"", b"not json", b"[]", b'{"cancel": 5}', b'{"other": "x"}', "\xff"):
        assert control.decode_cancel(raw) is None


async def test_only_events_that_make_a_task_pending_take_the_pending_path() -> None:
    event = NewEvent(task_id="t", owner="o", type=EventType.COMPLETED)
    with pytest.raises(ValueError, match="does not make a task pending"):
        await append_pending(None, None, Settings(), event, options=None)  # type: ignore[arg-type]
