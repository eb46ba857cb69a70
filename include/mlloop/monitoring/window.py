"""Which days a drift check covers: enough rows for the test, and none of the champion's own training days.

A drift test on a day of a few hundred rows judges sampling noise; ``drift_window`` takes the days asked
for (the newest validated days up to the end day) and widens back one validated day at a time until the
window holds ``min_rows`` rows. It never reaches into the champion's training days (checking data against
a reference that holds it says nothing) unless asked to, and never beyond ``max_days``; when the rows are
not there it says so ("waiting: 1,012 rows, needs 2,000") instead of checking. Pure: the caller passes
the validated days with their row counts; columns left out of the check stay the use case's
``drift_exclude``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Literal

Stop = Literal["enough_rows", "max_days", "champion_days", "first_day"]


@dataclass(frozen=True)
class DriftWindow:
    """The days a drift check covers, or the days counted so far and why it waits."""

    days: tuple[date, ...]  # oldest first
    rows: int
    min_rows: int
    asked_days: int
    max_days: int
    stopped_by: Stop  # enough_rows, or what kept the window from widening further
    champion_last_day: date | None  # the champion's last training day, when the window kept after it

    @property
    def ready(self) -> bool:
        """Return whether the window holds enough rows to be checked."""
        return self.stopped_by == "enough_rows"

    @property
    def widened(self) -> bool:
        """Return whether the window took more days than asked for."""
        return len(self.days) > self.asked_days

    def describe(self) -> str:
        """Return one line for the monitor's record: the days and rows, or what the check waits for."""
        span = f"{self.days[0].isoformat()}..{self.days[-1].isoformat()}" if self.days else "no day"
        counted = f"{self.rows:,} rows in {len(self.days)} validated day(s) ({span})"
        if self.ready:
            widened = f", widened from {self.asked_days} day(s) asked" if self.widened else ""
            return f"{counted}, min_rows {self.min_rows:,}{widened}"
        reason = {
            "max_days": f"the window reached max_days={self.max_days}",
            "champion_days": f"the champion's training days end on {self.champion_last_day}",
            "first_day": "there is no earlier validated day",
        }[self.stopped_by]
        return f"waiting: {counted}, needs {self.min_rows:,} (min_rows); cannot widen: {reason}"

    def to_dict(self) -> dict[str, Any]:
        """Return the window as plain JSON-ready types, with its one-line description."""
        data = asdict(self) | {"ready": self.ready, "widened": self.widened, "note": self.describe()}
        data["days"] = [d.isoformat() for d in self.days]
        data["champion_last_day"] = self.champion_last_day.isoformat() if self.champion_last_day else None
        return data


def drift_window(
    day_rows: Mapping[date, int],
    *,
    end_day: date,
    days: int,
    min_rows: int,
    max_days: int,
    champion_days: Collection[date] = (),
    include_champion_days: bool = False,
) -> DriftWindow:
    """Return the validated days up to ``end_day`` a drift check covers, widened back until ``min_rows``.

    Args:
        day_rows: every validated day known, with its row count.
        end_day: the newest day the window may hold.
        days: validated days asked for (the newest ones up to ``end_day``).
        min_rows: rows the check needs; fewer after widening gives a waiting window.
        max_days: the most validated days the window may span.
        champion_days: the champion's training days; the window holds only days after the last of them.
        include_champion_days: lift that limit (a backfill that checks the champion's own days).

    Raises:
        ValueError: naming the bad argument or day and the fix.
    """
    _check_arguments(day_rows, days=days, min_rows=min_rows, max_days=max_days)
    boundary = None if include_champion_days or not champion_days else max(champion_days)
    up_to_end = sorted(d for d in day_rows if d <= end_day)
    eligible = [d for d in up_to_end if boundary is None or d > boundary]
    chosen = eligible[-days:]
    rows = sum(day_rows[d] for d in chosen)
    earlier = len(eligible) - len(chosen)
    while rows < min_rows and len(chosen) < max_days and earlier > 0:
        earlier -= 1
        chosen.insert(0, eligible[earlier])
        rows += day_rows[eligible[earlier]]
    if rows >= min_rows:
        stopped: Stop = "enough_rows"
    elif len(chosen) >= max_days:
        stopped = "max_days"
    elif boundary is not None and len(eligible) < len(up_to_end):
        stopped = "champion_days"
    else:
        stopped = "first_day"
    return DriftWindow(
        days=tuple(chosen),
        rows=rows,
        min_rows=min_rows,
        asked_days=days,
        max_days=max_days,
        stopped_by=stopped,
        champion_last_day=boundary,
    )


def _check_arguments(day_rows: Mapping[date, int], *, days: int, min_rows: int, max_days: int) -> None:
    """Raise a ValueError naming the argument and the fix when a window cannot be sized from them."""
    for name, value in (("days", days), ("min_rows", min_rows), ("max_days", max_days)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"drift_window: {name}={value!r}; pass a positive whole number.")
    if max_days < days:
        raise ValueError(
            f"drift_window: max_days={max_days} is below the {days} day(s) asked for; raise max_days "
            "(the monitor's drift_max_days) or ask for fewer days."
        )
    negative = sorted(d.isoformat() for d, rows in day_rows.items() if rows < 0)
    if negative:
        raise ValueError(
            f"drift_window: days {negative} have a negative row count; pass each validated day's rows."
        )
