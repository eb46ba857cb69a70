"""The platform's clock: one setting moves every "now" the platform judges by to another calendar day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from mlloop import clock
from mlloop.config import get_settings
from mlloop.ops.demo import demo_days


@pytest.fixture
def shifted(monkeypatch: pytest.MonkeyPatch):
    """Pin the platform's today to 2026-04-15 by the setting the stack and the tests use."""

    def pin(day: date) -> None:
        monkeypatch.setenv("MLLOOP_CLOCK_SHIFT_DAYS", str(clock.shift_days_to(day)))
        get_settings.cache_clear()

    yield pin
    get_settings.cache_clear()


def test_unshifted_clock_is_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLLOOP_CLOCK_SHIFT_DAYS", raising=False)
    get_settings.cache_clear()
    before = datetime.now(UTC)
    assert before <= clock.now() <= datetime.now(UTC)
    get_settings.cache_clear()


def test_shift_moves_today_and_run_times_by_whole_days(shifted) -> None:
    shifted(date(2026, 4, 15))
    assert clock.today() == date(2026, 4, 15)
    wall = datetime.now(UTC).replace(hour=23, minute=59)
    moved = clock.platform_time(wall)
    assert moved - wall == timedelta(days=(date(2026, 4, 15) - datetime.now(UTC).date()).days)
    assert (moved.hour, moved.minute) == (23, 59)  # the time of day stays real


def test_shift_days_to_is_relative_to_the_wall_day() -> None:
    assert clock.shift_days_to(date(2026, 4, 15), wall_today=date(2026, 11, 30)) == -229
    assert clock.shift_days_to(date(2026, 11, 30), wall_today=date(2026, 11, 30)) == 0


def test_demo_days_follow_the_platform_clock(shifted) -> None:
    shifted(date(2026, 4, 15))
    assert demo_days() == demo_days(date(2026, 4, 15))
    assert demo_days()[-1][0] == "2026-04-01"
