"""Feature building: point-in-time history, determinism, categoricals, speed, and the feature contract."""

from __future__ import annotations

import time
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mlloop.config import REPO_ROOT
from mlloop.data.generator import generate_day
from mlloop.features import (
    UNKNOWN_CATEGORY,
    FeatureSpec,
    HistorySpec,
    build_features,
    build_use_case_features,
    feature_columns,
)
from mlloop.usecase import load_use_case
from mlloop.validation import validate_frame
from mlloop.validation.suite import read_suite_json

USE_CASE = load_use_case("card_fraud")
DAY = date(2026, 11, 20)

# A use case that is not fraud: generic names prove nothing is welded to the card_fraud columns.
TOY_SPEC = FeatureSpec(
    version="toy-1",
    numeric=["value"],
    log1p=["value"],
    calendar=["hour_of_day", "day_of_week"],
    categorical={"colour": ["red", "blue"]},
    history=HistorySpec(entity_column="user", value_column="value", windows=["1h", "1d"], prefix="user"),
)


def _toy_frame() -> pd.DataFrame:
    rows = [  # deliberately not in time order
        ("a4", "2026-01-05 11:30", "u1", 7.0, "red"),
        ("b1", "2026-01-05 10:45", "u2", 100.0, "blue"),
        ("a1", "2026-01-05 10:00", "u1", 10.0, "red"),
        ("a5", "2026-01-06 11:30", "u1", 40.0, None),
        ("a3", "2026-01-05 10:30", "u1", 5.0, "green"),
        ("a2", "2026-01-05 10:30", "u1", 20.0, "blue"),
    ]
    frame = pd.DataFrame(rows, columns=["id", "ts", "user", "value", "colour"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.set_index(pd.Index([10, 11, 12, 13, 14, 15]))


def _toy_features(frame: pd.DataFrame) -> pd.DataFrame:
    return build_features(frame, TOY_SPEC, key_column="id", time_column="ts")


def _generated(
    days: int, rows: int, *, customers: int | None = None, scenario: str = "none", start: date = DAY
) -> pd.DataFrame:
    """Generated validated-like days (card number tokenised away); optionally a small customer pool."""
    frames = [
        generate_day(start + timedelta(days=i), rows=rows, seed=42, scenario=scenario).transactions
        for i in range(days)
    ]
    frame = pd.concat(frames, ignore_index=True).rename(columns={"card_number": "card_number_token"})
    if customers:  # dense history: many transactions per customer
        rng = np.random.default_rng(7)
        frame["customer_id"] = np.array(
            [f"C{i}" for i in rng.integers(0, customers, len(frame))], dtype=object
        )
    return frame


def test_hand_computed_example() -> None:
    frame = _toy_frame()
    out = _toy_features(frame).set_index("id")
    assert list(out.columns) == ["ts", *feature_columns(TOY_SPEC)]
    assert feature_columns(TOY_SPEC) == [
        "value",
        "log1p_value",
        "hour_of_day",
        "day_of_week",
        "user_count_1h",
        "user_value_sum_1h",
        "user_count_1d",
        "user_value_sum_1d",
        "user_seconds_since_previous",
        "user_value_vs_mean_1d",
        "colour",
    ]
    day_s = 86_400.0
    expected = {  # id: (count_1h, sum_1h, count_1d, sum_1d, seconds_since_previous, value_vs_mean)
        "a1": (0, 0.0, 0, 0.0, day_s, np.nan),  # first event: nothing before
        "a2": (1, 10.0, 1, 10.0, 1800.0, 2.0),  # a1 only; a3 at the same instant is not "before"
        "a3": (1, 10.0, 1, 10.0, 1800.0, 0.5),
        "a4": (2, 25.0, 3, 35.0, 3600.0, 7.0 / (35.0 / 3)),  # 1h = [10:30, 11:30): a2, a3 at the boundary
        "a5": (0, 0.0, 1, 7.0, day_s, 40.0 / 7.0),  # 1d = [01-05 11:30, 01-06 11:30): a4 at the boundary
        "b1": (0, 0.0, 0, 0.0, day_s, np.nan),  # another user's events never count
    }
    history = out[
        [
            "user_count_1h",
            "user_value_sum_1h",
            "user_count_1d",
            "user_value_sum_1d",
            "user_seconds_since_previous",
            "user_value_vs_mean_1d",
        ]
    ]
    for key, values in expected.items():
        np.testing.assert_allclose(history.loc[key].to_numpy(dtype=float), values, rtol=1e-12, err_msg=key)
    assert out["user_count_1h"].dtype == np.int64
    assert out.loc["a1", "hour_of_day"] == 10 and out.loc["a5", "hour_of_day"] == 11
    assert out.loc["a1", "day_of_week"] == 0 and out.loc["a5", "day_of_week"] == 1  # Monday, Tuesday (UTC)
    assert out.loc["a1", "log1p_value"] == pytest.approx(np.log1p(10.0))
    assert out.loc["a3", "colour"] == UNKNOWN_CATEGORY  # unseen value: mapped, not an error
    assert pd.isna(out.loc["a5", "colour"])  # a null stays null
    assert list(out["colour"].cat.categories) == ["red", "blue", UNKNOWN_CATEGORY]


def test_output_keeps_row_order_index_and_target() -> None:
    frame = _toy_frame().assign(label=[0, 1, 0, 0, 1, 0])
    out = build_features(frame, TOY_SPEC, key_column="id", time_column="ts", target_column="label")
    assert out.index.equals(frame.index)
    assert out["id"].tolist() == frame["id"].tolist()
    assert list(out.columns[:3]) == ["id", "ts", "label"]
    without_target = build_features(frame.drop(columns="label"), TOY_SPEC, key_column="id", time_column="ts")
    assert "label" not in without_target.columns


def test_history_ignores_later_and_altered_events() -> None:
    frame = _generated(days=2, rows=1500, customers=150)
    base = build_use_case_features(frame, USE_CASE).set_index("transaction_id")
    history = USE_CASE.features.history.columns()

    cut = frame["event_time"].quantile(0.6)
    upto = frame.loc[frame["event_time"] <= cut, "transaction_id"]

    # Events added after the cut for the same customers: rows up to the cut are unchanged, bit for bit.
    later = frame.sample(600, random_state=1).copy()
    offsets = np.random.default_rng(2).integers(1, 2 * 86_400, len(later))
    later["event_time"] = cut + pd.to_timedelta(offsets, unit="s")
    later["transaction_id"] = [f"LATE-{i}" for i in range(len(later))]
    later["amount"] = later["amount"] * 10
    grown = build_use_case_features(pd.concat([frame, later], ignore_index=True), USE_CASE)
    pd.testing.assert_frame_equal(
        grown.set_index("transaction_id").loc[upto], base.loc[upto], check_exact=True
    )

    # An event at the very same instant as the latest row (same customer) is not "before" it either.
    last = frame.loc[[frame["event_time"].idxmax()]].assign(transaction_id="TWIN", amount=999.0)
    twinned = build_use_case_features(pd.concat([frame, last], ignore_index=True), USE_CASE)
    pd.testing.assert_frame_equal(twinned.set_index("transaction_id").loc[base.index], base, check_exact=True)

    # Events after the cut altered (amounts tripled, times moved later): rows up to the cut are unchanged.
    altered = frame.copy()
    after = altered["event_time"] > cut
    altered.loc[after, "amount"] *= 3
    altered.loc[after, "event_time"] += pd.Timedelta(minutes=17)
    changed = build_use_case_features(altered, USE_CASE).set_index("transaction_id")
    pd.testing.assert_frame_equal(changed.loc[upto], base.loc[upto], check_exact=True)
    assert not changed.loc[frame.loc[after, "transaction_id"], history].equals(
        base.loc[frame.loc[after, "transaction_id"], history]
    )


def test_history_matches_a_brute_force_definition() -> None:
    frame = _generated(days=3, rows=800, customers=60)
    frame["event_time"] = frame["event_time"].dt.floor("min")  # many ties
    out = build_use_case_features(frame, USE_CASE)
    spec = USE_CASE.features.history
    for i in np.random.default_rng(3).choice(len(frame), 60, replace=False):
        row = frame.iloc[i]
        mine = frame[(frame["customer_id"] == row["customer_id"]) & (frame["event_time"] < row["event_time"])]
        for window in spec.windows:
            inside = mine[mine["event_time"] >= row["event_time"] - pd.Timedelta(window)]
            assert out.iloc[i][spec.count_column(window)] == len(inside)
            assert out.iloc[i][spec.sum_column(window)] == pytest.approx(inside["amount"].sum(), abs=1e-6)
        gap = (row["event_time"] - mine["event_time"].max()).total_seconds() if len(mine) else 7 * 86_400
        assert out.iloc[i][spec.since_previous_column] == min(gap, 7 * 86_400)


def test_features_are_deterministic_and_independent_of_row_order() -> None:
    frame = _generated(days=2, rows=1000, customers=100)
    first = build_use_case_features(frame, USE_CASE)
    pd.testing.assert_frame_equal(first, build_use_case_features(frame, USE_CASE), check_exact=True)
    shuffled = frame.sample(frac=1.0, random_state=5)
    again = (
        build_use_case_features(shuffled, USE_CASE).set_index("transaction_id").loc[frame["transaction_id"]]
    )
    pd.testing.assert_frame_equal(again.reset_index(), first.reset_index(drop=True), check_exact=True)


def test_unknown_categories_and_single_rows_are_served() -> None:
    frame = _generated(days=1, rows=2000, scenario="covariate_new_categories")
    out = build_use_case_features(frame, USE_CASE)
    assert (out["merchant_category"] == UNKNOWN_CATEGORY).sum() > 0
    assert out["merchant_category"].notna().all()
    one = build_use_case_features(frame.iloc[[5]], USE_CASE)  # serving: one request, no history at hand
    assert one["merchant_category"].dtype == out["merchant_category"].dtype  # same vocabulary, same codes
    assert one["customer_count_7d"].iloc[0] == 0


def test_bad_input_is_named() -> None:
    frame = _toy_frame()
    with pytest.raises(ValueError, match=r"lacks columns \['colour'\]"):
        _toy_features(frame.drop(columns="colour"))
    with pytest.raises(ValueError, match="timezone-aware"):
        _toy_features(frame.assign(ts=frame["ts"].dt.tz_localize(None)))
    with pytest.raises(ValueError, match="'value' has dtype object, not numeric"):
        _toy_features(frame.assign(value=frame["value"].astype(str)))


def test_spec_rejects_bad_declarations() -> None:
    with pytest.raises(ValidationError, match="not of the form"):
        HistorySpec(entity_column="u", value_column="v", windows=["1 hour"])
    with pytest.raises(ValidationError, match="repeat a length"):
        HistorySpec(entity_column="u", value_column="v", windows=["24h", "1d"])
    with pytest.raises(ValidationError, match="occur twice"):
        FeatureSpec(version="1", numeric=["hour_of_day"], calendar=["hour_of_day"])
    with pytest.raises(ValidationError, match="reserved"):
        FeatureSpec(version="1", categorical={"c": ["a", UNKNOWN_CATEGORY]})


def test_use_case_features_must_use_declared_non_pii_columns(tmp_path) -> None:
    text = (REPO_ROOT / "include/mlloop/usecases/card_fraud.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("log1p: [amount]", "log1p: [amount_eur]"))
    with pytest.raises(ValueError, match=r"bad\.yaml is invalid: .*amount_eur"):
        load_use_case(str(bad))
    bad.write_text(text.replace("log1p: [amount]", "log1p: [card_number]"))
    with pytest.raises(ValueError, match=r"bad\.yaml is invalid: .*PII"):
        load_use_case(str(bad))


def test_spec_version_and_fingerprint() -> None:
    spec = USE_CASE.features
    assert spec.version == "2"
    assert spec.fingerprint() == FeatureSpec.model_validate(spec.model_dump(mode="json")).fingerprint()
    assert spec.model_copy(update={"log1p": []}).fingerprint() != spec.fingerprint()


def test_suite_schema_matches_the_spec() -> None:
    suite = read_suite_json(USE_CASE.suites["features"])
    schema = next(
        e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_ordered_list"
    )
    expected = [USE_CASE.key_column, USE_CASE.time_column, *feature_columns(USE_CASE.features)]
    assert schema["kwargs"]["column_list"] == expected
    assert suite["meta"]["feature_spec_version"] == USE_CASE.features.version


def test_feature_suite_passes_clean_features_and_fails_broken_ones() -> None:
    frame = pd.concat(
        [
            _generated(days=2, rows=600),
            _generated(days=1, rows=600, scenario="covariate_new_categories", start=DAY + timedelta(days=2)),
        ],
        ignore_index=True,
    )
    features = build_use_case_features(frame, USE_CASE)
    report = validate_frame(features, USE_CASE.suites["features"])
    assert report.success, report.summary()

    broken = features.copy()
    broken.loc[broken.index[:3], "customer_count_1h"] = -1
    broken.loc[broken.index[3], "customer_count_1h"] = 50  # more in 1h than in 24h
    broken["hour_of_day"] = broken["hour_of_day"] + 1  # 24 appears
    broken["channel"] = broken["channel"].astype(str)  # not built by build_features
    broken.loc[broken.index[0], "customer_seconds_since_previous"] = np.nan
    report = validate_frame(broken, USE_CASE.suites["features"])
    assert not report.success
    failed = {(f.expectation, f.column) for f in report.failures}
    assert failed == {
        ("expect_column_values_to_be_between", "customer_count_1h"),
        ("expect_column_values_to_be_between", "hour_of_day"),
        ("expect_column_values_to_be_of_type", "channel"),
        ("expect_column_values_to_not_be_null", "customer_seconds_since_previous"),
        ("expect_column_pair_values_a_to_be_greater_than_b", None),  # customer_count_24h >= customer_count_1h
    }


def test_speed_200k_rows() -> None:
    frame = _generated(days=2, rows=100_000)
    started = time.perf_counter()
    out = build_use_case_features(frame, USE_CASE)
    elapsed = time.perf_counter() - started
    assert len(out) == 200_000
    assert elapsed < 15, f"build_features took {elapsed:.1f}s on 200k rows"


def test_history_context_equals_prepending_the_events() -> None:
    """What the scoring service does: earlier events passed as context count exactly as earlier rows."""
    frame = _generated(2, 3000, customers=200)
    earlier, later = frame.iloc[:5000], frame.iloc[5000:5050]
    whole = build_use_case_features(pd.concat([earlier, later]), USE_CASE).iloc[5000:]
    history = USE_CASE.features.history
    context = earlier[[history.entity_column, USE_CASE.time_column, history.value_column]]
    served = build_features(
        later, USE_CASE.features, key_column="transaction_id", time_column="event_time", context=context
    )
    pd.testing.assert_frame_equal(served, whole[served.columns])


def test_small_and_large_frames_map_categories_and_calendar_the_same() -> None:
    """Small frames take the dict lookup (scoring requests), large ones pandas: same codes, same hours."""
    from mlloop.features.build import _SMALL_FRAME, categorical_column

    values = pd.Series(["red", "blue", None, "green", np.nan, "red"] * 100, dtype=object)
    large = categorical_column(values, ["red", "blue"])
    small = pd.concat(
        [categorical_column(values.iloc[i : i + 50], ["red", "blue"]) for i in range(0, 600, 50)]
    )
    assert len(values) > _SMALL_FRAME
    assert small.cat.codes.tolist() == large.cat.codes.tolist()
    assert small.dtype == large.dtype and list(small.cat.categories) == ["red", "blue", UNKNOWN_CATEGORY]

    times = pd.Series(pd.to_datetime(np.arange(0, 40 * 86_400, 3_917) * 10**9 - 5 * 86_400 * 10**9, utc=True))
    frame = pd.DataFrame({"id": range(len(times)), "ts": times, "user": "u", "value": 1.0, "colour": "red"})
    built = _toy_features(frame)
    assert built["hour_of_day"].tolist() == times.dt.hour.tolist()
    assert built["day_of_week"].tolist() == times.dt.dayofweek.tolist()


def test_short_prefix_sums_have_the_bits_of_pandas_groupby_cumsum() -> None:
    """The loop used for few events (scoring requests) repeats pandas' compensated sums exactly."""
    from mlloop.features.build import _entity_cumsum

    rng = np.random.default_rng(3)
    naive_differs = False
    for _ in range(200):
        n = int(rng.integers(1, 300))
        codes = np.sort(rng.integers(0, 5, n))
        values = rng.lognormal(3, 2.5, n) * rng.choice([1e-3, 1.0, 1e4], n)
        ours = _entity_cumsum(codes, values)
        pandas = pd.Series(values).groupby(codes, sort=False).cumsum().to_numpy()
        assert ours.view(np.int64).tolist() == pandas.view(np.int64).tolist()
        naive = pd.Series(values).groupby(codes, sort=False).transform(lambda s: np.cumsum(s.to_numpy()))
        naive_differs |= not np.array_equal(naive.to_numpy(), pandas)
    assert naive_differs, "the data never told compensated from plain sums apart; the check proves nothing"


def test_feature_arrays_on_plain_arrays_equal_build_features() -> None:
    """The scoring service's route (numpy arrays, context as events) gives build_features' frame."""
    from mlloop.features import HistoryEvents, feature_arrays, feature_frame

    frame = _generated(2, 3000, customers=200)
    earlier, later = frame.iloc[:5000], frame.iloc[5000:5040]
    spec, history = USE_CASE.features, USE_CASE.features.history
    expected = build_use_case_features(pd.concat([earlier, later]), USE_CASE).iloc[5000:]
    inputs = {
        c: later[c].to_numpy(dtype=np.float64)
        if c in {*spec.numeric, *spec.log1p, history.value_column}
        else later[c].to_numpy(dtype=object)
        for c in spec.input_columns()
    }
    times = pd.DatetimeIndex(later["event_time"]).as_unit("ns").asi8
    context = HistoryEvents(
        entities=earlier[history.entity_column].to_numpy(dtype=object),
        times_ns=pd.DatetimeIndex(earlier["event_time"]).as_unit("ns").asi8,
        values=earlier[history.value_column].to_numpy(dtype=np.float64),
    )
    arrays = feature_arrays(spec, inputs, times, history=history, context=context)
    assert list(arrays) == feature_columns(spec)
    served = feature_frame(arrays, spec).set_axis(later.index)
    pd.testing.assert_frame_equal(served, expected[feature_columns(spec)])
