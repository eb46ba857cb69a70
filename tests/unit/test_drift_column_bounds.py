"""Each feature column judged against its own block-to-block spread in the reference (``ColumnBounds``).

A reference whose days have their own levels (weather, say) makes Evidently's fixed 0.1 flag every
column on every window; the column bounds read each column's distance against the spread that column
shows between the reference's own disjoint window-sized blocks, so a window within that spread is quiet
and one several day-to-day standard deviations away fires.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from scipy.stats import t as t_dist

from mlloop.monitoring.decision import MonitorEvidence, decide, load_monitor_config
from mlloop.monitoring.drift import (
    MIN_BLOCKS,
    ColumnBounds,
    calibrate_column_bounds,
    check_drift,
    drift_verdicts,
    judge_window,
)

FALSE_ALARM = 0.05
DAY_ROWS = 1_000
COLUMNS = ["temp", "wind", "noise"]
START = datetime(2026, 6, 1, tzinfo=UTC)


def days_with_levels(levels: np.ndarray, seed: int) -> pd.DataFrame:
    """Return one frame of len(levels) days: temp and wind at each day's level, noise without one.

    ``levels`` holds (temp level, wind level) per day, in within-day standard deviations.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for i, (temp, wind) in enumerate(levels):
        frames.append(
            pd.DataFrame(
                {
                    "event_time": START + timedelta(days=i) + pd.to_timedelta(np.arange(DAY_ROWS), "s"),
                    "temp": rng.normal(temp, 1.0, DAY_ROWS),
                    "wind": rng.gamma(2.0, 1.0 + 0.3 * abs(wind), DAY_ROWS),
                    "noise": rng.normal(0.0, 1.0, DAY_ROWS),
                    "origin": rng.choice(["EWR", "JFK", "LGA"], DAY_ROWS),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def judged(reference: pd.DataFrame, window: pd.DataFrame, numeric: list[str], categorical: list[str]):
    """Return the window's columns judged against their own spread over the reference's blocks."""
    bounds = calibrate_column_bounds(
        reference, len(window), numeric=numeric, categorical=categorical, time_column="event_time"
    )
    result = drift_verdicts(reference, window, numeric=numeric, categorical=categorical)
    return (
        bounds,
        result,
        judge_window(bounds, result, FALSE_ALARM, top=[], reference=reference, current=window),
    )


def test_a_window_within_the_days_own_spread_is_quiet_and_one_far_beyond_it_fires() -> None:
    rng = np.random.default_rng(11)
    levels = rng.normal(0.0, 1.0, (8, 2))  # each reference day has its own level, SD 1 day to day
    reference = days_with_levels(levels, seed=1)
    within = days_with_levels(np.array([[0.8, -0.6]]), seed=2)  # within a day-to-day SD of the mean
    far = days_with_levels(np.array([[levels[:, 0].mean() - 6 * levels[:, 0].std(ddof=1), 0.0]]), seed=3)

    bounds, result, quiet = judged(reference, within, ["temp", "wind", "noise"], ["origin"])

    assert bounds.blocks == 8 and not bounds.fallback
    # Evidently's fixed threshold flags the level-moving column; its own spread does not.
    assert result.drifted("temp") and quiet.drifted == []
    _, _, fired = judged(reference, far, ["temp", "wind", "noise"], ["origin"])
    assert fired.drifted == ["temp"], fired.columns
    temp = next(j for j in fired.columns if j.column == "temp")
    assert temp.score > temp.bound and temp.score >= temp.margin == pytest.approx(0.1)


def test_windows_like_the_reference_days_fire_at_most_at_the_family_rate() -> None:
    # The family of four columns fires when any column is beyond its bound at 0.05/4 (Bonferroni).
    windows = alarms = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        levels = rng.normal(0.0, 1.0, (10, 2))
        reference = days_with_levels(levels[:8], seed=100 + seed)
        for i in (8, 9):
            window = days_with_levels(levels[i : i + 1], seed=1000 + 10 * seed + i)
            _, _, verdict = judged(reference, window, ["temp", "wind", "noise"], ["origin"])
            windows += 1
            alarms += bool(verdict.drifted)
    print(f"{alarms} of {windows} new days like the reference days fired")
    assert alarms <= binom.ppf(0.99, windows, FALSE_ALARM)


def test_the_bound_is_students_prediction_bound_on_the_square_root_scale() -> None:
    reference = days_with_levels(np.random.default_rng(5).normal(0.0, 1.0, (6, 2)), seed=6)

    bounds = calibrate_column_bounds(
        reference, DAY_ROWS, numeric=COLUMNS, categorical=["origin"], time_column="event_time"
    )

    roots = np.sqrt(bounds.nulls["temp"])
    rate = FALSE_ALARM / 4
    k = len(roots)
    expected = (roots.mean() + t_dist.ppf(1 - rate, k - 1) * roots.std(ddof=1) * math.sqrt(1 + 1 / k)) ** 2
    assert k == 6 and bounds.bound("temp", rate) == pytest.approx(expected)
    scores = {"temp": expected * 1.01, "wind": 0.0, "noise": 0.0, "origin": 0.0}
    assert [j.column for j in bounds.judge(scores, FALSE_ALARM) if j.beyond] == ["temp"]
    assert "6 disjoint time-ordered blocks" in bounds.describe(FALSE_ALARM, 4)
    assert "0.05/4 per column (Bonferroni" in bounds.describe(FALSE_ALARM, 4)
    assert ColumnBounds.from_dict(bounds.to_dict()) == bounds  # stored and read back by the monitor


def test_fewer_than_three_blocks_fall_back_and_say_why() -> None:
    reference = days_with_levels(np.zeros((2, 2)), seed=7)

    bounds = calibrate_column_bounds(
        reference, DAY_ROWS, numeric=COLUMNS, categorical=[], time_column="event_time"
    )

    assert bounds.blocks < MIN_BLOCKS and bounds.nulls == {}
    assert "holds 2 disjoint blocks of 1,000 rows, the bound needs 3" in bounds.fallback
    assert "own-spread column bounds not used" in bounds.describe(FALSE_ALARM, 3)
    with pytest.raises(ValueError, match="ranked-split share threshold"):
        bounds.judge({"temp": 1.0}, FALSE_ALARM)
    small = calibrate_column_bounds(reference.iloc[:900], 100, numeric=COLUMNS, categorical=[])
    assert "run p-value tests" in small.fallback  # 1,000 values or fewer: K-S, not a distance


def test_a_sketched_score_near_its_bound_is_recomputed_on_the_full_columns() -> None:
    levels = np.random.default_rng(8).normal(0.0, 1.0, (4, 2))
    reference = days_with_levels(levels, seed=9)
    window = days_with_levels(np.array([[0.3, 0.2]]), seed=10)
    bounds = calibrate_column_bounds(
        reference, len(window), numeric=COLUMNS, categorical=["origin"], time_column="event_time"
    )
    sketched = check_drift(reference, window, numeric=COLUMNS, categorical=["origin"], sample_rows=1_000)
    exact = drift_verdicts(reference, window, numeric=COLUMNS, categorical=["origin"])
    # Move each sketched score onto its bound: the judgement must recompute it on the full columns.
    rate = FALSE_ALARM / 4
    on_bound = type(sketched)(
        **sketched.to_dict()
        | {
            "columns": [
                type(c)(**c.__dict__ | {"score": bounds.bound(c.column, rate), "error_bound": 1.0})
                for c in sketched.columns
            ]
        }
    )

    verdict = judge_window(bounds, on_bound, FALSE_ALARM, top=[], reference=reference, current=window)

    for judgement, full in zip(verdict.columns, exact.columns, strict=True):
        assert judgement.score == pytest.approx(full.score, rel=1e-9)


def test_the_share_rules_fire_on_any_column_beyond_its_own_bound_and_say_so() -> None:
    config = load_monitor_config()
    columns = {"temp": (3.77, 2.9, 0.1), "dewp": (0.5, 2.5, 0.1), "carrier": (0.037, 0.03, 0.1)}
    evidence = MonitorEvidence(
        drift_share=1 / 3,
        drifted_columns=["temp"],
        top_features=["temp", "carrier"],
        drift_threshold=0.0,
        top_drift_share=0.5,
        top_drift_threshold=0.0,
        column_bounds=columns,
        top_column_bounds={"temp": (3.77, 2.7, 0.1), "carrier": (0.037, 0.028, 0.1)},
    )

    decision = decide(evidence, config)

    assert [r.rule for r in decision.rules if r.fired] == ["drift_share", "top_feature_drift"]
    share = decision.rules[0]
    assert "1 of 3 feature columns beyond their own block-to-block bound" in share.detail
    assert "(each at 0.05/3, Bonferroni): temp 3.77 > 2.9" in share.detail
    # carrier is beyond its bound but under Evidently's 0.1: quiet, and the nearest quiet column.
    assert "nearest quiet: carrier 0.037 (bound 0.03, Evidently 0.1)" in share.detail
    assert share.figures["columns"]["temp"] == [3.77, 2.9, 0.1]
    quiet = decide(
        MonitorEvidence(
            drift_share=0.0,
            drifted_columns=[],
            top_features=[],
            drift_threshold=0.0,
            column_bounds={"temp": (0.5, 2.9, 0.1)},
        ),
        config,
    )
    assert not quiet.rules[0].fired and "0 of 1 feature columns beyond" in quiet.rules[0].detail
