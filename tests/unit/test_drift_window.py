"""Drift windows sized by rows: widened back day by day to min_rows, never into the champion's days."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from mlloop.monitoring.window import drift_window

START = date(2026, 3, 2)


def days_of(rows: list[int], start: date = START) -> dict[date, int]:
    """Return consecutive validated days from ``start`` with the given row counts."""
    return {start + timedelta(days=i): count for i, count in enumerate(rows)}


def test_asked_days_with_enough_rows_are_checked_as_they_are() -> None:
    available = days_of([20_000] * 6)

    window = drift_window(available, end_day=START + timedelta(days=5), days=1, min_rows=5_000, max_days=7)

    assert window.ready and not window.widened
    assert window.days == (START + timedelta(days=5),)
    assert window.rows == 20_000
    assert window.describe() == "20,000 rows in 1 validated day(s) (2026-03-07..2026-03-07), min_rows 5,000"


def test_small_days_widen_back_one_day_at_a_time_until_min_rows() -> None:
    available = days_of([1_000, 1_100, 900, 1_050, 980, 1_020])

    window = drift_window(available, end_day=START + timedelta(days=5), days=1, min_rows=3_000, max_days=7)

    assert window.ready and window.widened
    assert window.days == tuple(START + timedelta(days=i) for i in (3, 4, 5))
    assert window.rows == 1_050 + 980 + 1_020
    assert "widened from 1 day(s) asked" in window.describe()


def test_the_window_never_reaches_into_the_champions_training_days_unless_asked() -> None:
    available = days_of([1_000] * 8)
    champion = [START + timedelta(days=i) for i in range(4)]  # trained on the first four days
    end = START + timedelta(days=5)

    window = drift_window(available, end_day=end, days=1, min_rows=3_000, max_days=7, champion_days=champion)
    asked = drift_window(
        available,
        end_day=end,
        days=1,
        min_rows=3_000,
        max_days=7,
        champion_days=champion,
        include_champion_days=True,
    )

    assert not window.ready
    assert window.days == (START + timedelta(days=4), START + timedelta(days=5))
    assert window.describe() == (
        "waiting: 2,000 rows in 2 validated day(s) (2026-03-06..2026-03-07), needs 3,000 (min_rows); "
        "cannot widen: the champion's training days end on 2026-03-05"
    )
    assert asked.ready and asked.days[0] == START + timedelta(days=3)


def test_a_day_inside_the_champions_window_waits_for_days_after_it() -> None:
    available = days_of([20_000] * 4)

    window = drift_window(
        available,
        end_day=START + timedelta(days=3),
        days=1,
        min_rows=5_000,
        max_days=7,
        champion_days=available,
    )

    assert not window.ready and window.days == () and window.rows == 0
    assert window.stopped_by == "champion_days"
    assert "waiting: 0 rows in 0 validated day(s) (no day)" in window.describe()


def test_widening_stops_at_max_days_and_at_the_first_day() -> None:
    available = days_of([500] * 10)

    capped = drift_window(available, end_day=START + timedelta(days=9), days=2, min_rows=4_000, max_days=5)
    first = drift_window(available, end_day=START + timedelta(days=2), days=1, min_rows=4_000, max_days=7)

    assert (capped.ready, len(capped.days), capped.rows, capped.stopped_by) == (False, 5, 2_500, "max_days")
    assert "cannot widen: the window reached max_days=5" in capped.describe()
    assert (first.ready, len(first.days), first.stopped_by) == (False, 3, "first_day")
    assert "there is no earlier validated day" in first.describe()


def test_missing_days_are_skipped_and_later_days_ignored() -> None:
    available = days_of([1_000] * 10)
    for gap in (6, 7):  # quarantined: never validated
        del available[START + timedelta(days=gap)]

    window = drift_window(available, end_day=START + timedelta(days=8), days=1, min_rows=3_000, max_days=7)

    assert window.days == tuple(START + timedelta(days=i) for i in (4, 5, 8))


def test_the_window_record_is_plain_json() -> None:
    window = drift_window(
        days_of([1_000] * 3), end_day=START + timedelta(days=2), days=1, min_rows=2_000, max_days=3
    )

    data = json.loads(json.dumps(window.to_dict()))

    assert data["days"] == ["2026-03-03", "2026-03-04"] and data["ready"] and data["widened"]
    assert data["note"] == window.describe()


def test_bad_arguments_name_the_fix() -> None:
    available = days_of([1_000] * 3)
    end = START + timedelta(days=2)

    with pytest.raises(ValueError, match=r"min_rows=0; pass a positive whole number"):
        drift_window(available, end_day=end, days=1, min_rows=0, max_days=3)
    with pytest.raises(ValueError, match=r"max_days=2 is below the 3 day\(s\) asked for"):
        drift_window(available, end_day=end, days=3, min_rows=10, max_days=2)
    with pytest.raises(ValueError, match=r"days \['2026-03-02'\] have a negative row count"):
        drift_window({START: -1}, end_day=end, days=1, min_rows=10, max_days=3)
