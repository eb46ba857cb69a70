"""The platform's clock: wall time, or wall time shifted by whole days (demos, tests, replays).

Every judgement that depends on "now" (which labels are known, where a default training window ends, the
guard's cooldown, the demo's days) reads it here or through ``platform_time`` of a run's wall-clock time,
so one setting, ``MLLOOP_CLOCK_SHIFT_DAYS``, moves the whole platform to another calendar day and the same
commit gives the same result on any date. The shift is whole days, so the time of day and the order of
events stay real, and a run that crosses midnight stays consistent.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from mlloop.config import get_settings


def shift() -> timedelta:
    """Return the configured shift of the platform's clock from wall time."""
    return timedelta(days=get_settings().clock_shift_days)


def platform_time(wall: datetime) -> datetime:
    """Return a wall-clock instant (e.g. a run's ``run_after``) on the platform's clock."""
    return wall + shift()


def now() -> datetime:
    """Return the platform's current time (UTC)."""
    return platform_time(datetime.now(UTC))


def today() -> date:
    """Return the platform's current UTC day."""
    return now().date()


def shift_days_to(day: date, wall_today: date | None = None) -> int:
    """Return the ``MLLOOP_CLOCK_SHIFT_DAYS`` that makes ``day`` the platform's today."""
    return (day - (wall_today or datetime.now(UTC).date())).days
