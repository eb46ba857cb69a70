"""Resolve per-run values from Params and the run's data interval (no wall-clock reads)."""

from __future__ import annotations

from datetime import date, datetime, timedelta


def resolve_day(
    param_day: str | None, data_interval_start: datetime | None, run_after: datetime | None
) -> date:
    """Return the run's day: the ``day`` Param, else the interval start, else the day before run_after.

    Raises:
        ValueError: when ``param_day`` is not an ISO date (YYYY-MM-DD).
    """
    if param_day:
        try:
            return date.fromisoformat(str(param_day))
        except ValueError as exc:
            raise ValueError(
                f"Param day={param_day!r} is not a date; use YYYY-MM-DD, e.g. 2026-11-20"
            ) from exc
    if data_interval_start is not None:
        return data_interval_start.date()
    if run_after is not None:
        return (run_after - timedelta(days=1)).date()
    raise ValueError("No day to work on: set the 'day' Param (YYYY-MM-DD) when triggering manually.")
