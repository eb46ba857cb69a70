"""Drift thresholds from reference-vs-reference splits: clean windows quiet, covariate drift caught."""

from __future__ import annotations

import json
from datetime import date, timedelta
from functools import cache

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from scipy.stats import t as t_dist

from mlloop.data.generator import generate_day
from mlloop.features import build_use_case_features, feature_columns
from mlloop.monitoring.drift import (
    DRIFT_SHARE,
    DriftCalibration,
    calibrate_drift,
    check_drift,
    drift_verdicts,
)
from mlloop.monitoring.window import drift_window
from mlloop.usecase import load_use_case

USE_CASE = load_use_case("card_fraud")
CATEGORICAL = list(USE_CASE.features.categorical)
NUMERIC = [c for c in feature_columns(USE_CASE.features) if c not in CATEGORICAL]
TIME = USE_CASE.time_column
WARM_UP_DAYS = 7  # the longest history window: reference days start with full history, as a snapshot's do
REFERENCE_DAYS = 4  # train_<use case>'s default window
CLEAN_DAYS = 8
ROWS = 5_000
ANCHORS = ((date(2026, 3, 2), 42), (date(2025, 7, 14), 7), (date(2027, 1, 4), 1234))  # (first day, seed)
FALSE_ALARM = 0.05


@cache
def world(
    start: date, seed: int, rows: int, monitored: tuple[str, ...], reference_days: int = REFERENCE_DAYS
) -> tuple[pd.DataFrame, tuple[pd.DataFrame, ...]]:
    """Return the reference days' features and each monitored day's, history built over all earlier days."""
    plan = ["none"] * (WARM_UP_DAYS + reference_days) + list(monitored)
    days = [
        generate_day(start + timedelta(days=i), rows=rows, seed=seed, scenario=scenario).transactions
        for i, scenario in enumerate(plan)
    ]
    features = build_use_case_features(pd.concat(days, ignore_index=True), USE_CASE)
    day = features[TIME].dt.date.to_numpy()
    first = start + timedelta(days=WARM_UP_DAYS)
    reference = features[(day >= first) & (day < first + timedelta(days=reference_days))]
    checked = tuple(
        features[day == first + timedelta(days=reference_days + i)].reset_index(drop=True)
        for i in range(len(monitored))
    )
    return reference.reset_index(drop=True), checked


def rule_scores(frame: pd.DataFrame, reference: pd.DataFrame) -> np.ndarray:
    """Return a fixed scoring rule's scores: a logistic of three features standardised on the reference."""
    columns = ["log1p_amount", "distance_from_home_km", "tx_count_1h"]
    z = sum((frame[c] - reference[c].mean()) / reference[c].std() for c in columns)
    return 1.0 / (1.0 + np.exp(-z.to_numpy(dtype=np.float64)))


def share_calibration(reference: pd.DataFrame, rows: int) -> DriftCalibration:
    """Return the drifted-share threshold for a window of ``rows`` rows."""
    return calibrate_drift(
        reference, rows, numeric=NUMERIC, categorical=CATEGORICAL, time_column=TIME, false_alarm=FALSE_ALARM
    )


def score_calibration(scores: np.ndarray, rows: int) -> DriftCalibration:
    """Return the score-drift threshold for a window of ``rows`` scores."""
    frame = pd.DataFrame({"score": scores})
    return calibrate_drift(
        frame, rows, numeric=["score"], categorical=[], statistic="score", false_alarm=FALSE_ALARM
    )


def drift_share(reference: pd.DataFrame, window: pd.DataFrame) -> float:
    """Return the window's share of drifted columns (``check_drift``'s verdicts, without its report)."""
    return drift_verdicts(reference, window, numeric=NUMERIC, categorical=CATEGORICAL).drift_share


def score_drift(reference_scores: np.ndarray, scores: np.ndarray) -> float:
    """Return the score column's drift score, as the monitor's prediction-drift check computes it."""
    result = drift_verdicts(
        pd.DataFrame({"score": reference_scores}),
        pd.DataFrame({"score": scores}),
        numeric=["score"],
        categorical=[],
    )
    return result.columns[0].score


@cache
def monitored(
    start: date, seed: int
) -> tuple[pd.DataFrame, tuple[pd.DataFrame, ...], DriftCalibration, DriftCalibration]:
    """Return one anchor's reference, its clean days then a covariate_amount day, and both calibrations."""
    reference, days = world(start, seed, ROWS, ("none",) * CLEAN_DAYS + ("covariate_amount",))
    scores = rule_scores(reference, reference)
    return reference, days, share_calibration(reference, ROWS), score_calibration(scores, ROWS)


def test_clean_windows_fire_at_about_the_false_alarm_rate() -> None:
    windows = share_alarms = score_alarms = 0
    for start, seed in ANCHORS:
        reference, days, shares, scores = monitored(start, seed)
        reference_scores = rule_scores(reference, reference)
        for day in days[:CLEAN_DAYS]:
            windows += 1
            share_alarms += shares.fires(drift_share(reference, day))
            score_alarms += scores.fires(score_drift(reference_scores, rule_scores(day, reference)))

    # Not tuned: the most alarms a process firing at the target rate would give in 99 runs of 100.
    allowed = int(binom.ppf(0.99, windows, FALSE_ALARM))
    print(f"clean windows {windows}: drift-share alarms {share_alarms}, score-drift alarms {score_alarms}")
    assert share_alarms <= allowed and score_alarms <= allowed, (share_alarms, score_alarms, allowed)


@pytest.mark.parametrize(("start", "seed"), ANCHORS)
def test_a_covariate_drift_window_is_detected(start: date, seed: int) -> None:
    reference, days, shares, scores = monitored(start, seed)
    day = days[CLEAN_DAYS]

    result = check_drift(reference, day, numeric=NUMERIC, categorical=CATEGORICAL)  # what the monitor runs

    assert shares.fires(result.drift_share), (result.drifted_names, shares.describe())
    assert {"amount", "log1p_amount"} <= set(result.drifted_names)
    assert scores.fires(score_drift(rule_scores(reference, reference), rule_scores(day, reference)))


def test_small_days_are_widened_then_judged_against_a_threshold_for_the_widened_window() -> None:
    # ~1k rows a day: the use case declares a longer training window (14 days, 14k rows) than card_fraud's 4,
    # so that a reference-vs-reference split can hold out a pseudo-window as large as the widened window.
    reference_days, windows, alarms, caught = 14, 0, 0, 0
    for start, seed in ANCHORS:
        reference, clean = world(start, seed, 1_000, ("none",) * 9, reference_days)
        _, drifted = world(start, seed, 1_000, ("covariate_amount",) * 3, reference_days)
        first = start + timedelta(days=WARM_UP_DAYS + reference_days)
        day_rows = {first + timedelta(days=i): len(day) for i, day in enumerate(clean)}
        ends = [first + timedelta(days=i) for i in (2, 5, 8)]
        one_day = [drift_window(day_rows, end_day=end, days=1, min_rows=1, max_days=7) for end in ends]
        sized = [drift_window(day_rows, end_day=end, days=1, min_rows=3_000, max_days=7) for end in ends]
        assert all(w.rows < 3_000 for w in one_day)
        assert all(w.ready and w.widened and len(w.days) == 3 for w in sized), [w.describe() for w in sized]
        calibration = share_calibration(reference, sized[0].rows)
        assert (
            calibration.rows_split == sized[0].rows
        )  # no cap: the reference holds pseudo-windows this large
        for window in sized:
            days = [clean[(d - first).days] for d in window.days]
            windows += 1
            alarms += calibration.fires(drift_share(reference, pd.concat(days, ignore_index=True)))
        caught += calibration.fires(drift_share(reference, pd.concat(drifted, ignore_index=True)))

    print(
        f"~1k rows/day, 3-day windows: {alarms} alarms in {windows} clean ones, {caught} of 3 drifts caught"
    )
    assert alarms <= int(binom.ppf(0.99, windows, FALSE_ALARM))
    assert caught == len(ANCHORS)


def test_time_ordered_splits_carry_day_to_day_variation_that_random_splits_leave_out() -> None:
    alarms = {"time": 0, "random": 0}
    for seed in range(3):
        rng = np.random.default_rng(seed)
        levels = rng.normal(0.0, 0.2, 40)  # each day's own level, as a real source has
        days = [pd.DataFrame({"x": rng.normal(level, 1.0, 1_000)}) for level in levels]
        reference = pd.concat(days[:20], ignore_index=True)  # 20 days, in time order

        calibration = calibrate_drift(reference, 1_000, numeric=["x"], categorical=[], statistic="x")
        scores = [
            drift_verdicts(reference, d, numeric=["x"], categorical=[]).columns[0].score for d in days[20:]
        ]

        assert calibration.thresholds["time"] > calibration.thresholds["random"]
        for kind in alarms:
            alarms[kind] += sum(score > calibration.thresholds[kind] for score in scores)

    print(f"60 new days with their own level: alarms {alarms['time']} by time, {alarms['random']} by rows")
    assert alarms["time"] < alarms["random"]


def test_a_short_reference_bounds_a_score_by_its_disjoint_blocks() -> None:
    # Four reference days, each with its own level: the overlapping time splits see only four days, so
    # their 95th percentile understates the tail; the disjoint blocks' prediction bound does not.
    alarms = {"time": 0, "random": 0, "blocks": 0}
    new_days = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        levels = rng.normal(0.0, 0.2, 14)
        days = [pd.DataFrame({"x": rng.normal(level, 1.0, 1_000)}) for level in levels]
        reference = pd.concat(days[:4], ignore_index=True)

        calibration = calibrate_drift(reference, 1_000, numeric=["x"], categorical=[], statistic="x")

        assert len(calibration.nulls["blocks"]) == 4
        assert calibration.threshold == max(calibration.thresholds.values())
        for day in days[4:]:
            score = drift_verdicts(reference, day, numeric=["x"], categorical=[]).columns[0].score
            new_days += 1
            for kind, threshold in calibration.thresholds.items():
                alarms[kind] += score > threshold

    print(f"{new_days} new days against four reference days: alarms {alarms}")
    assert alarms["time"] > binom.ppf(0.99, new_days, FALSE_ALARM)  # measured 53 of 200
    assert alarms["blocks"] <= binom.ppf(0.99, new_days, FALSE_ALARM)  # measured 5 of 200


def test_the_block_bound_is_students_prediction_bound_on_the_log_scale() -> None:
    frame = pd.DataFrame({"x": np.random.default_rng(3).normal(size=5_000)})

    calibration = calibrate_drift(frame, 1_000, numeric=["x"], categorical=[], statistic="x")
    share = calibrate_drift(frame, 1_000, numeric=["x"], categorical=[])
    too_short = calibrate_drift(frame.iloc[:2_500], 1_000, numeric=["x"], categorical=[], statistic="x")

    logs = np.log(calibration.nulls["blocks"])
    expected = np.exp(logs.mean() + t_dist.ppf(0.95, 4) * logs.std(ddof=1) * np.sqrt(1 + 1 / 5))
    assert calibration.thresholds["blocks"] == pytest.approx(expected)
    assert "prediction bound of 5 disjoint time-ordered blocks" in calibration.describe()
    assert "blocks" not in share.nulls  # a share of columns keeps the ranked splits
    assert "blocks" not in too_short.nulls  # two blocks: too few for the bound


def test_the_threshold_is_the_rank_that_bounds_false_alarms_for_each_kind_of_split() -> None:
    frame = pd.DataFrame({"x": np.random.default_rng(1).normal(size=4_000)})

    calibration = calibrate_drift(frame, 500, numeric=["x"], categorical=[], statistic="x", splits=50)
    again = calibrate_drift(frame, 500, numeric=["x"], categorical=[], statistic="x", splits=50)

    assert calibration.rank == 49  # ceil(0.95 * 51)
    assert calibration.false_alarm_bound == pytest.approx(2 / 51) and calibration.false_alarm_bound <= 0.05
    for kind in ("time", "random"):
        assert calibration.thresholds[kind] == sorted(calibration.nulls[kind])[48]
    assert calibration.threshold == max(calibration.thresholds.values())  # the more conservative
    assert calibration.thresholds[calibration.set_by] == calibration.threshold
    assert calibration.methods == {"x": "wasserstein"} and calibration.higher_is_drift
    assert calibration.fires(np.nextafter(calibration.threshold, 1))
    assert not calibration.fires(calibration.threshold)
    assert again.nulls == calibration.nulls  # seeded: the same reference gives the same threshold
    record = json.loads(json.dumps(calibration.to_dict()))
    assert (record["splits"], record["disjoint_blocks"], record["note"]) == (50, 8, calibration.describe())
    assert (
        "the more conservative of the 49th least drift-like of 50 reference-vs-reference splits of 500 rows"
        in (record["note"])
    )
    assert "by time-ordered blocks (8 disjoint)" in record["note"] and "and by random rows" in record["note"]


def test_a_p_value_statistic_fires_below_its_threshold() -> None:
    scores = pd.DataFrame({"score": np.random.default_rng(2).beta(1, 20, 800)})  # <= 1000 rows: K-S p-values

    calibration = calibrate_drift(
        scores, 200, numeric=["score"], categorical=[], statistic="score", splits=19
    )

    assert calibration.methods == {"score": "ks"} and not calibration.higher_is_drift
    assert "blocks" not in calibration.nulls  # a p-value keeps the ranked splits
    assert calibration.threshold == min(min(null) for null in calibration.nulls.values())
    assert calibration.false_alarm_bound == pytest.approx(0.05)
    assert calibration.fires(calibration.threshold / 2) and not calibration.fires(calibration.threshold)
    assert "fires below" in calibration.describe()


def test_bad_calibration_arguments_name_the_fix() -> None:
    frame = pd.DataFrame({"x": np.arange(100.0), "t": np.arange(100)})

    def calibrate(**kwargs: object) -> DriftCalibration:
        arguments = {"numeric": ["x"], "categorical": [], "statistic": DRIFT_SHARE} | kwargs
        return calibrate_drift(arguments.pop("reference", frame), arguments.pop("rows", 10), **arguments)

    with pytest.raises(ValueError, match=r"10 splits cannot bound false alarms at 0.05.*splits >= 19"):
        calibrate(splits=10)
    with pytest.raises(ValueError, match=r"false_alarm=1.5; pass a rate between 0 and 1"):
        calibrate(false_alarm=1.5)
    with pytest.raises(ValueError, match=r"window_rows=0; pass the monitored window's row count"):
        calibrate(rows=0)
    with pytest.raises(ValueError, match=r"statistic 'score' is neither 'drift_share' nor a declared column"):
        calibrate(statistic="score")
    with pytest.raises(ValueError, match=r"time_column 'when' is not a column of the reference"):
        calibrate(time_column="when")
    with pytest.raises(ValueError, match=r"splits_by='weekly'; pass 'both', 'time' or 'random'"):
        calibrate(splits_by="weekly")
    with pytest.raises(ValueError, match=r"the reference has 1 row; splitting it needs at least 2"):
        calibrate(reference=frame.iloc[:1])


def test_calibration_splits_score_columns_as_evidently_does() -> None:
    """The splits' sorted-once Wasserstein and counted Jensen-Shannon equal Evidently's tests on the same
    rows, missing values too."""
    from mlloop.monitoring.drift import _splits, _SplitTests

    reference, _ = world(date(2026, 3, 2), 42, 1_500, ())
    frame = reference[[*NUMERIC, *CATEGORICAL]].copy()
    frame.loc[frame.index[::7], NUMERIC[0]] = np.nan
    frame.loc[frame.index[::11], NUMERIC[1]] = np.inf
    frame.loc[frame.index[::13], CATEGORICAL[0]] = None
    methods = {"wasserstein": 0, "jensenshannon": 0}
    tests = _SplitTests(
        frame,
        NUMERIC,
        dict.fromkeys(NUMERIC, "wasserstein") | dict.fromkeys(CATEGORICAL, "jensenshannon"),
        [*NUMERIC, *CATEGORICAL],
    )
    assert set(tests.sorted) == set(NUMERIC)  # the fast path is taken for every numeric column
    assert set(tests.codes) == set(CATEGORICAL)  # ... and for every categorical one
    for kind in ("time", "random"):
        for block, rest in list(_splits(np.arange(len(frame)), 1_000, 5, kind, 3)):
            fast = tests.verdicts(block, rest)
            slow = drift_verdicts(
                frame.iloc[rest],
                frame.iloc[block],
                numeric=NUMERIC,
                categorical=CATEGORICAL,
                methods={c.column: c.method for c in fast},
            ).columns
            for mine, theirs in zip(fast, slow, strict=True):
                methods[mine.method] += 1
                assert (mine.column, mine.method, mine.drifted) == (
                    theirs.column,
                    theirs.method,
                    theirs.drifted,
                )
                assert mine.score == pytest.approx(theirs.score, rel=1e-9, abs=1e-12)
    assert min(methods.values()) > 0
