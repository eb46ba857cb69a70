"""Drift check: Evidently's verdicts per column on generated days, agreement with the plain peer, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

from mlloop.data.generator import generate_day
from mlloop.data.scenarios import DRIFT_SCENARIOS
from mlloop.features import build_use_case_features, feature_columns
from mlloop.monitoring import ReferenceProfile, check_drift, evidently_drift
from mlloop.monitoring.drift import drift_verdicts
from mlloop.monitoring.sketch import mid_quantile_positions, w1_to_sketch
from mlloop.usecase import load_use_case

USE_CASE = load_use_case("card_fraud")
CATEGORICAL = list(USE_CASE.features.categorical)
NUMERIC = [c for c in feature_columns(USE_CASE.features) if c not in CATEGORICAL]
REFERENCE_DAY = date(2026, 11, 16)  # a Monday; current days are Mondays too
CURRENT_DAY = REFERENCE_DAY + timedelta(days=7)
ROWS = 60_000
SAMPLE_ROWS = 20_000  # below ROWS, so the checks below run on quantile sketches
AMOUNT_COLUMNS = ["amount", "log1p_amount", "amount_sum_24h"]


@cache
def features(day: date, scenario: str = "none", rows: int = ROWS, seed: int = 42) -> pd.DataFrame:
    """Return the card_fraud features of one generated day (cached: frames are never modified)."""
    return build_use_case_features(
        generate_day(day, rows=rows, seed=seed, scenario=scenario).transactions, USE_CASE
    )


def check(current: pd.DataFrame, reference: pd.DataFrame | None = None, **kwargs: object) -> object:
    """Run check_drift of ``current`` against the clean reference day with the test's sample size."""
    reference = features(REFERENCE_DAY) if reference is None else reference
    kwargs.setdefault("sample_rows", SAMPLE_ROWS)
    return check_drift(reference, current, numeric=NUMERIC, categorical=CATEGORICAL, **kwargs)


def test_two_clean_days_do_not_drift() -> None:
    result = check(features(CURRENT_DAY, seed=7))  # another week, another customer population

    assert result.drifted_columns == 0, result.drifted_names
    assert result.drift_share == 0.0
    assert [c.column for c in result.columns] == NUMERIC + CATEGORICAL
    methods = {c.column: c.method for c in result.columns}
    assert methods["amount"] == "wasserstein"  # > 1000 rows, many values: Evidently's default
    assert methods["merchant_category"] == "jensenshannon"
    assert (result.rows_reference, result.rows_current) == (ROWS, ROWS)
    assert "sketches of 20000 rows" in result.method_note


def test_inflated_amounts_drift_the_amount_columns_only() -> None:
    result = check(features(CURRENT_DAY, "covariate_amount"))

    assert all(result.drifted(c) for c in AMOUNT_COLUMNS), result.drifted_names
    assert not any(result.drifted(c) for c in [*CATEGORICAL, "customer_age", "hour_of_day"])
    assert 0 < result.drift_share < 0.5


def test_new_merchant_categories_drift_merchant_category() -> None:
    result = check(features(CURRENT_DAY, "covariate_new_categories"))

    assert result.drifted("merchant_category")
    column = next(c for c in result.columns if c.column == "merchant_category")
    assert column.score > 0.2 and column.threshold == 0.1


def test_channel_shift_drifts_channel() -> None:
    result = check(features(CURRENT_DAY, "covariate_channel"))

    assert result.drifted("channel") and result.drifted("device")
    assert not result.drifted("merchant_category") and not result.drifted("amount")


@pytest.mark.parametrize("scenario", DRIFT_SCENARIOS)
def test_verdicts_agree_with_the_plain_evidently_preset(scenario: str) -> None:
    reference, current = features(REFERENCE_DAY, rows=30_000), features(CURRENT_DAY, scenario, rows=30_000)

    ours = check(current, reference, sample_rows=5_000)
    peer = evidently_drift(reference, current, numeric=NUMERIC, categorical=CATEGORICAL)

    assert [c.column for c in ours.columns] == [c.column for c in peer.columns]
    assert any(not c.exact for c in ours.columns)  # the sketches were used
    for mine, theirs in zip(ours.columns, peer.columns, strict=True):
        assert (mine.method, mine.threshold, mine.drifted) == (
            theirs.method,
            theirs.threshold,
            theirs.drifted,
        )
        assert abs(mine.score - theirs.score) <= mine.error_bound + 1e-12, mine
    assert ours.drift_share == peer.drift_share
    # Without a report: Evidently's stat tests on the full columns give the peer's verdicts and scores.
    assert (
        drift_verdicts(reference, current, numeric=NUMERIC, categorical=CATEGORICAL).columns == peer.columns
    )


def test_same_seed_same_result_and_verdicts_do_not_depend_on_the_seed() -> None:
    current = features(CURRENT_DAY, "covariate_amount")

    first, again, other = check(current, seed=3), check(current, seed=3), check(current, seed=4)

    assert first.columns == again.columns
    assert {k: v for k, v in first.to_dict().items() if k != "seconds"} == {
        k: v for k, v in again.to_dict().items() if k != "seconds"
    }
    assert [c.drifted for c in other.columns] == [c.drifted for c in first.columns]
    assert json.loads(json.dumps(first.to_dict()))["columns"][0]["column"] == "amount"  # JSON-ready


def test_a_reference_profile_is_reused_with_the_same_verdicts() -> None:
    reference, current = features(REFERENCE_DAY), features(CURRENT_DAY, "covariate_channel")
    profile = ReferenceProfile.build(
        reference, numeric=NUMERIC, categorical=CATEGORICAL, sample_rows=SAMPLE_ROWS
    )

    direct = check(current)
    reused = check_drift(profile, current, numeric=NUMERIC, categorical=CATEGORICAL)

    assert profile.sketched and len(profile.frame) == SAMPLE_ROWS
    assert reused.columns == direct.columns
    with pytest.raises(ValueError, match=r"rebuild it with ReferenceProfile\.build"):
        check_drift(profile, current, numeric=NUMERIC[:3], categorical=CATEGORICAL)


def test_writes_evidentlys_html_report(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "drift.html"  # a Path, in a folder that does not exist yet

    result = check(features(CURRENT_DAY, "covariate_channel"), html_path=path)

    assert result.report_path == str(path)
    html = path.read_text(encoding="utf-8")
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert "Value Drift for column channel" in html and "Value Drift for column amount" in html


def test_a_small_reference_uses_evidentlys_p_value_tests_on_the_full_frames() -> None:
    reference, current = features(REFERENCE_DAY).iloc[::100], features(CURRENT_DAY, "covariate_amount")

    ours = check(current, reference)
    peer = evidently_drift(reference, current, numeric=NUMERIC, categorical=CATEGORICAL)

    assert len(reference) <= 1000
    assert {c.method for c in ours.columns} <= {"ks", "chisquare", "z"}
    assert ours.columns == peer.columns  # same tests on the same data: identical
    assert (
        drift_verdicts(reference, current, numeric=NUMERIC, categorical=CATEGORICAL).columns == peer.columns
    )
    assert ours.drifted("amount")


def test_a_score_too_close_to_the_threshold_is_recomputed_on_the_full_columns() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(50.0, 10.0, 20_000)
    shift = 0.1 * float(np.std(values)) * (1 + 1e-4)  # full-data Wasserstein score just above 0.1
    reference = pd.DataFrame({"x": values, "colour": rng.choice(["red", "blue"], 20_000)})
    current = pd.DataFrame({"x": values + shift, "colour": rng.choice(["red", "blue"], 20_000)})

    ours = check_drift(reference, current, numeric=["x"], categorical=["colour"], sample_rows=2_000)
    peer = evidently_drift(reference, current, numeric=["x"], categorical=["colour"])

    assert ours.recomputed == ["x"] and "recomputed on the full columns" in ours.method_note
    assert ours.drifted("x") and peer.drifted("x")
    assert ours.columns[0].score == pytest.approx(peer.columns[0].score, rel=1e-9)
    assert ours.columns[0].exact and ours.columns[0].error_bound == 0.0


@pytest.mark.parametrize(("n", "m"), [(10, 3), (1000, 7), (1000, 999), (12_345, 1000), (100_003, 5000)])
def test_sketch_error_is_the_exact_wasserstein_distance(n: int, m: int) -> None:
    ordered = np.sort(np.random.default_rng(n).lognormal(3.0, 1.5, n))
    positions = mid_quantile_positions(n, m)

    assert w1_to_sketch(ordered, positions) == pytest.approx(
        wasserstein_distance(ordered, ordered[positions]), rel=1e-9
    )


def test_missing_column_is_named_with_the_fix() -> None:
    current = features(CURRENT_DAY).drop(columns=["channel"])

    with pytest.raises(
        ValueError, match=r"current frame lacks the declared columns \['channel'\].*build_features"
    ):
        check(current)


def test_wrongly_typed_column_is_named_with_the_fix() -> None:
    current = features(CURRENT_DAY).assign(amount=lambda f: f["amount"].map("{:.2f} EUR".format))

    with pytest.raises(
        ValueError, match=r"numeric column 'amount' of the current frame has dtype object.*to_numeric"
    ):
        check(current)


def test_empty_frames_and_empty_columns_are_refused() -> None:
    reference = features(REFERENCE_DAY)

    with pytest.raises(ValueError, match="the current frame has no rows"):
        check(reference.iloc[0:0])
    with pytest.raises(ValueError, match="the reference frame has no rows"):
        check(reference, reference.iloc[0:0])
    with pytest.raises(ValueError, match="numeric column 'amount' of the current frame has no finite values"):
        check(reference.assign(amount=np.nan))
    with pytest.raises(
        ValueError, match="categorical column 'channel' of the current frame is entirely missing"
    ):
        check(reference.assign(channel=None))


def test_bad_arguments_are_refused() -> None:
    frame = features(REFERENCE_DAY)

    with pytest.raises(ValueError, match=r"columns \['amount'\] are declared more than once"):
        check_drift(frame, frame, numeric=["amount"], categorical=["amount"])
    with pytest.raises(ValueError, match="no columns declared"):
        check_drift(frame, frame, numeric=[], categorical=[])
    with pytest.raises(ValueError, match="sample_rows=10 is too small"):
        check(frame, sample_rows=10)
    result = check(frame)
    with pytest.raises(KeyError, match="'no_such_column' was not checked"):
        result.drifted("no_such_column")
    with pytest.raises(ValueError, match=r"methods name \['x'\], which are not declared columns"):
        drift_verdicts(frame, frame, numeric=NUMERIC, categorical=CATEGORICAL, methods={"x": "ks"})


def test_importing_the_package_loads_neither_pandas_nor_evidently() -> None:
    code = (
        "import sys, mlloop.monitoring; "
        "assert 'evidently' not in sys.modules and 'pandas' not in sys.modules, sorted(sys.modules); "
        "import mlloop.monitoring.drift; assert 'evidently' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
