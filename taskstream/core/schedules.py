"""Cron math for schedules: checking an expression, the next slot, and what a due schedule fires.

A slot is one instant the expression names (five fields, or six with seconds last, as croniter
reads them), computed in the schedule's timezone and stored in UTC. When a worker finds a
schedule due, ``plan`` decides which slots fire now:

* slots at most ``grace`` seconds old fire, one task each (workers were up: none is skipped);
* older ones were missed (every worker was down): ``skip`` fires none of them, ``catch_up``
  fires one task for all of them (keyed by the last missed slot);
* ``next_run_at`` moves to the first slot after now.

No I/O here: the store runs this inside the transaction that claimed the schedule.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter

#: Slots one claim fires at most; a schedule further behind continues on the next claim.
MAX_SLOTS_PER_CLAIM = 100


class Misfire(StrEnum):
    """What happens to slots missed while no worker ran."""

    SKIP = "skip"
    CATCH_UP = "catch_up"


class BadSchedule(ValueError):
    """A cron expression or timezone that cannot work (the reason is the message)."""


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def zone(timezone: str) -> ZoneInfo:
    # Only the database's zone names: ZoneInfo would also open other files under its roots
    # (a directory such as 'America', 'zone.tab').
    try:
        if timezone not in _zone_names():
            raise ZoneInfoNotFoundError(timezone)
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadSchedule(f"unknown timezone {timezone!r} (an IANA name such as "
                          "'UTC' or 'Europe/Paris')") from None


def check(cron: str, timezone: str = "UTC") -> None:
    """Raise BadSchedule naming what is wrong with ``cron`` or ``timezone``."""
    zone(timezone)
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise BadSchedule(f"cron {cron!r}: expected 5 fields (minute hour day month weekday) "
                          "or 6 (with seconds last)")
    if not croniter.is_valid(cron):
        raise BadSchedule(f"cron {cron!r} is not a valid cron expression")
    try:
        next_after(cron, timezone, datetime.now(UTC))
    except Exception:  # croniter gives up on expressions that never match (Feb 30)
        raise BadSchedule(f"cron {cron!r} never fires") from None


def next_after(cron: str, timezone: str, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (UTC)."""
    it = croniter(cron, after.astimezone(zone(timezone)))
    nxt: datetime = it.get_next(datetime)
    return nxt.astimezone(UTC)


def last_at_or_before(cron: str, timezone: str, at: datetime) -> datetime:
    """The last slot at or before ``at`` (UTC)."""
    it = croniter(cron, at.astimezone(zone(timezone)))
    prev: datetime = it.get_prev(datetime)
    prev = prev.astimezone(UTC)
    nxt = next_after(cron, timezone, prev)
    return nxt if nxt <= at else prev


@dataclass(frozen=True, slots=True)
class Plan:
    """What a due schedule does now: one task per slot in ``fire``; then ``next_run_at``."""

    fire: list[datetime]
    next_run_at: datetime
    #: Missed slots (beyond the grace) that this plan skipped or folded into one task.
    missed: bool = False


def plan(cron: str, timezone: str, misfire: Misfire, due: datetime, now: datetime,
         grace: float) -> Plan:
    """The slots a schedule owing ``due`` fires at ``now`` (see the module docstring)."""
    fire: list[datetime] = []
    horizon = now - timedelta(seconds=grace)
    missed = due <= horizon
    if missed:
        if misfire == Misfire.CATCH_UP:
            fire.append(last_at_or_before(cron, timezone, horizon))
        slot = next_after(cron, timezone, horizon)
    else:
        slot = due
    while slot <= now and len(fire) < MAX_SLOTS_PER_CLAIM:
        fire.append(slot)
        slot = next_after(cron, timezone, slot)
    return Plan(fire=fire, next_run_at=slot, missed=missed)


def slot_key(schedule_id: str, slot: datetime) -> str:
    """The idempotency key of the task a slot fires: one task per (schedule, slot)."""
    return f"schedule:{schedule_id}:{slot.astimezone(UTC).isoformat()}"
