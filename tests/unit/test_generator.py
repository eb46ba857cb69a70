"""Tests of the synthetic card-transaction generator: determinism, contract, realism, scenarios, CLI."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlloop.data.generator import (
    ALLOWED_CHANNELS,
    ALLOWED_COUNTRIES,
    ALLOWED_CURRENCIES,
    ALLOWED_DEVICES,
    DRIFT_SCENARIOS,
    FAULT_SCENARIOS,
    MERCHANT_CATEGORIES,
    SCENARIOS,
    GeneratedDay,
    generate_day,
    main,
)
from mlloop.usecase import load_use_case

DAY = dt.date(2026, 11, 1)
NEXT_DAY = dt.date(2026, 11, 2)
SEED = 42
ROWS = 5_000
UTC = dt.UTC

KIND_CHECKS = {
    "string": pd.api.types.is_string_dtype,
    "datetime": pd.api.types.is_datetime64_any_dtype,
    "float": pd.api.types.is_float_dtype,
    "integer": pd.api.types.is_integer_dtype,
    "boolean": pd.api.types.is_bool_dtype,
}


def _day(scenario: str = "none", *, day: dt.date = DAY, rows: int = ROWS, seed: int = SEED) -> GeneratedDay:
    return generate_day(day, rows=rows, seed=seed, scenario=scenario)


def _luhn_valid(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _model_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Features a simple model can build from raw columns (no knowledge of the hidden pattern)."""
    usual = frame["amount_sum_24h"] / frame["tx_count_24h"].clip(lower=1)
    features = pd.DataFrame(
        {
            "log_amount": np.log(frame["amount"]),
            "amount_vs_usual": np.log(frame["amount"] / usual.where(usual > 0)).fillna(0.0),
            "log_tx_1h": np.log1p(frame["tx_count_1h"]),
            "tx_24h": frame["tx_count_24h"],
            "log_distance": np.log1p(frame["distance_from_home_km"]),
            "customer_age": frame["customer_age"],
            "new_account": (frame["account_age_days"] < 30).astype(int),
            "young_account": (frame["account_age_days"] < 180).astype(int),
            "night": (frame["event_time"].dt.hour < 6).astype(int),
        }
    )
    for category in MERCHANT_CATEGORIES:
        features[f"cat_{category}"] = (frame["merchant_category"] == category).astype(int)
    for channel in ALLOWED_CHANNELS:
        features[f"channel_{channel}"] = (frame["channel"] == channel).astype(int)
    return features


def _assert_valid(generated: GeneratedDay) -> None:
    """Assert a batch satisfies the raw data contract (what drift scenarios must keep)."""
    frame = generated.transactions
    use_case = load_use_case("card_fraud")
    assert list(frame.columns) == use_case.columns
    for column, kind in use_case.schema_.items():
        assert KIND_CHECKS[kind](frame[column]), f"{column} has dtype {frame[column].dtype}, want {kind}"
    assert str(frame["event_time"].dt.tz) == "UTC"
    assert not frame.isna().any().any()
    assert frame["transaction_id"].is_unique
    assert (frame["amount"] > 0).all()
    assert frame["customer_age"].between(18, 100).all()
    assert (frame["account_age_days"] >= 0).all()
    assert (frame["tx_count_1h"] >= 0).all()
    assert (frame["tx_count_1h"] <= frame["tx_count_24h"]).all()
    assert (frame["amount_sum_24h"] >= 0).all()
    assert ((frame["amount_sum_24h"] > 0) == (frame["tx_count_24h"] > 0)).all()
    assert (frame["distance_from_home_km"] >= 0).all()
    assert set(frame["currency"]) <= set(ALLOWED_CURRENCIES)
    assert set(frame["country"]) <= set(ALLOWED_COUNTRIES)
    assert set(frame["channel"]) <= set(ALLOWED_CHANNELS)
    assert set(frame["device"]) <= set(ALLOWED_DEVICES)
    assert frame["card_number"].str.fullmatch(r"\d{16}").all()
    start = pd.Timestamp(generated.day.isoformat(), tz="UTC")
    assert frame["event_time"].between(start, start + pd.Timedelta(days=1), inclusive="left").all()
    assert list(generated.labels["transaction_id"]) == list(frame["transaction_id"])


# --- determinism -------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["none", "concept", "fault_nulls", "fault_malformed"])
def test_same_inputs_give_byte_identical_files(scenario: str) -> None:
    first, second = _day(scenario), _day(scenario)
    assert first.to_file_bytes() == second.to_file_bytes()
    assert first.labels_file_bytes() == second.labels_file_bytes()
    pd.testing.assert_frame_equal(first.transactions, second.transactions)


def test_other_day_or_seed_gives_other_data() -> None:
    base = _day().to_file_bytes()
    assert _day(day=NEXT_DAY).to_file_bytes() != base
    assert _day(seed=SEED + 1).to_file_bytes() != base


# --- contract and realism of a clean day -------------------------------------------------------


def test_clean_day_matches_the_declared_schema_in_order() -> None:
    generated = _day()
    _assert_valid(generated)
    assert generated.labels.columns.tolist() == ["transaction_id", "is_fraud", "label_time"]
    assert generated.labels["is_fraud"].dtype == np.int8
    assert set(generated.labels["is_fraud"].unique()) <= {0, 1}
    assert str(generated.labels["label_time"].dt.tz) == "UTC"


def test_parquet_round_trip_keeps_columns_and_dtypes() -> None:
    generated = _day()
    read = pd.read_parquet(io.BytesIO(generated.to_file_bytes()))
    pd.testing.assert_frame_equal(read, generated.transactions)


def test_card_numbers_are_luhn_valid_and_one_per_customer() -> None:
    frame = _day().transactions
    assert all(_luhn_valid(number) for number in frame["card_number"])
    assert (frame.groupby("customer_id")["card_number"].nunique() == 1).all()
    assert (frame.groupby("card_number")["customer_id"].nunique() == 1).all()


def test_fields_are_consistent_and_follow_a_daily_cycle() -> None:
    frame = _day(rows=20_000).transactions
    assert frame["event_time"].is_monotonic_increasing
    hours = frame["event_time"].dt.hour
    assert (hours.between(1, 4)).mean() < 0.05 < (hours.between(17, 20)).mean()
    card_present = frame["channel"] == "card_present"
    assert (frame.loc[card_present, "device"] == "pos_terminal").all()
    assert (frame.loc[frame["channel"] == "atm", "device"] == "atm_terminal").all()
    assert frame.loc[frame["channel"] == "mobile", "device"].isin(["mobile_app", "mobile_web"]).all()
    home_currency = frame["country"].map({"CH": "CHF", "GB": "GBP", "US": "USD"}).fillna("EUR")
    assert (frame["currency"] == home_currency).mean() > 0.9
    assert frame.groupby("merchant_id")["merchant_category"].nunique().max() == 1
    medians = frame.groupby("merchant_category")["amount"].median()
    assert medians["jewelry"] > medians["grocery"] > medians["digital_goods"]


def test_customers_are_stable_across_days() -> None:
    first, second = _day(rows=20_000).transactions, _day(rows=20_000, day=NEXT_DAY).transactions
    columns = ["customer_id", "card_number", "customer_age", "account_age_days"]
    joined = (
        first[columns]
        .drop_duplicates("customer_id")
        .merge(second[columns].drop_duplicates("customer_id"), on="customer_id", suffixes=("_1", "_2"))
    )
    assert len(joined) > 100, "expected returning customers on consecutive days"
    assert (joined["card_number_1"] == joined["card_number_2"]).all()
    assert (joined["account_age_days_2"] - joined["account_age_days_1"] == 1).all()
    assert (joined["customer_age_2"] - joined["customer_age_1"]).between(0, 1).all()


def test_transaction_ids_are_unique_across_days() -> None:
    ids = pd.concat(
        [_day().transactions["transaction_id"], _day(day=NEXT_DAY).transactions["transaction_id"]]
    )
    assert ids.is_unique


# --- fraud pattern -----------------------------------------------------------------------------


def test_fraud_rate_is_low_on_none_and_clearly_higher_on_prior() -> None:
    none_rate = _day(rows=50_000).fraud_rate
    prior_rate = _day("prior", rows=50_000).fraud_rate
    assert 0.008 <= none_rate <= 0.025
    assert prior_rate > 2.5 * none_rate


def test_fraud_shows_higher_velocity_and_larger_amounts() -> None:
    generated = _day(rows=50_000)
    frame, fraud = generated.transactions, generated.labels["is_fraud"] == 1
    assert frame.loc[fraud, "tx_count_1h"].mean() > 1.5 * frame.loc[~fraud, "tx_count_1h"].mean()
    assert frame.loc[fraud, "amount"].median() > 1.5 * frame.loc[~fraud, "amount"].median()
    online = frame["channel"].isin(["online", "mobile"])
    assert online[fraud].mean() > online[~fraud].mean()


def test_pattern_is_learnable_and_concept_drift_breaks_it() -> None:
    train, test = _day(rows=100_000), _day(rows=100_000, day=NEXT_DAY)
    concept = _day("concept", rows=100_000, day=NEXT_DAY)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000))
    model.fit(_model_features(train.transactions), train.labels["is_fraud"])
    auc = roc_auc_score(
        test.labels["is_fraud"], model.predict_proba(_model_features(test.transactions))[:, 1]
    )
    concept_auc = roc_auc_score(
        concept.labels["is_fraud"], model.predict_proba(_model_features(concept.transactions))[:, 1]
    )
    assert auc > 0.8
    assert auc - concept_auc > 0.1
    assert 0.008 <= concept.fraud_rate <= 0.03, "concept drift should move the pattern, not the rate"


def _learned_pr_auc(scenario: str, start: dt.date, train_days: int) -> float:
    """PR-AUC on the next day of an XGBoost model trained by mlloop's trainer on ``train_days`` days."""
    from sklearn.metrics import average_precision_score

    from mlloop.features import build_use_case_features, feature_columns, model_matrix
    from mlloop.training.fit import TrainConfig, train_xgboost

    use_case = load_use_case("card_fraud")
    days = [_day(scenario, day=start + dt.timedelta(days=i), rows=20_000) for i in range(train_days + 1)]
    frame = pd.concat([d.transactions for d in days], ignore_index=True)
    labels = pd.concat([d.labels for d in days], ignore_index=True)["is_fraud"].to_numpy()
    x = model_matrix(
        build_use_case_features(frame, use_case), use_case.features, feature_columns(use_case.features)
    )
    test = (frame["event_time"].dt.date == days[-1].day).to_numpy()
    cut = int((~test).sum() * 0.85)  # time-ordered: train, then validation for early stopping
    model = train_xgboost(x[:cut], labels[:cut], x[cut:][~test[cut:]], labels[cut:][~test[cut:]],
                          TrainConfig(snapshot="unused"), "cpu")  # fmt: skip
    return float(average_precision_score(labels[test], model.predict_proba(x[test])[:, 1]))


def test_concept_pattern_is_as_learnable_as_the_base_one() -> None:
    """A concept event must test recovery, not a harder world: as many days teach it as well."""
    start = dt.date(2026, 9, 1)
    base, concept = (_learned_pr_auc(s, start, train_days=4) for s in ("none", "concept"))
    assert base > 0.3
    assert concept >= base - 0.04, f"concept {concept:.3f} vs base {base:.3f}"


# --- drift scenarios ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", DRIFT_SCENARIOS)
def test_drift_scenarios_deliver_valid_data(scenario: str) -> None:
    _assert_valid(_day(scenario))


def test_covariate_amount_inflates_amounts_only() -> None:
    base, drift = _day(), _day("covariate_amount")
    ratio = drift.transactions["amount"].mean() / base.transactions["amount"].mean()
    assert 1.4 < ratio < 1.8
    assert drift.fraud_rate == base.fraud_rate


def test_covariate_new_categories_adds_unseen_categories() -> None:
    categories = _day("covariate_new_categories").transactions["merchant_category"]
    new = ~categories.isin(MERCHANT_CATEGORIES)
    assert 0.1 < new.mean() < 0.3
    assert categories[new].nunique() >= 2
    assert _day().transactions["merchant_category"].isin(MERCHANT_CATEGORIES).all()


def test_covariate_channel_shifts_to_online_and_mobile() -> None:
    remote = ["online", "mobile"]
    before = _day().transactions["channel"].isin(remote).mean()
    after = _day("covariate_channel").transactions["channel"].isin(remote).mean()
    assert after > before + 0.2


# --- fault scenarios ---------------------------------------------------------------------------


def test_fault_nulls_puts_nulls_in_amount_and_merchant_id() -> None:
    frame = _day("fault_nulls").transactions
    assert 0.02 < frame["amount"].isna().mean() < 0.1
    assert 0.02 < frame["merchant_id"].isna().mean() < 0.1


def test_fault_wrong_types_delivers_amount_as_text() -> None:
    frame = _day("fault_wrong_types").transactions
    assert not pd.api.types.is_numeric_dtype(frame["amount"])
    assert frame["amount"].str.fullmatch(r"\d+\.\d{2} (CHF|EUR|GBP|USD)").all()
    read = pd.read_parquet(io.BytesIO(_day("fault_wrong_types").to_file_bytes()))
    assert not pd.api.types.is_numeric_dtype(read["amount"])


def test_fault_out_of_range_has_negative_amounts_and_impossible_ages() -> None:
    frame = _day("fault_out_of_range").transactions
    assert (frame["amount"] < 0).sum() > 0
    assert (frame["customer_age"] == 150).sum() > 0


def test_fault_renamed_and_missing_columns() -> None:
    renamed = _day("fault_renamed_column").transactions.columns.tolist()
    assert "mcc" in renamed and "merchant_category" not in renamed
    missing = _day("fault_missing_column").transactions.columns.tolist()
    assert "country" not in missing and len(missing) == len(load_use_case("card_fraud").columns) - 1


def test_fault_duplicate_ids_repeats_existing_ids() -> None:
    generated = _day("fault_duplicate_ids")
    ids = generated.transactions["transaction_id"]
    assert ids.duplicated().sum() > 0.01 * len(ids)
    assert set(ids) <= set(generated.labels["transaction_id"])


def test_fault_empty_has_zero_rows_with_all_columns() -> None:
    generated = _day("fault_empty")
    assert len(generated.transactions) == 0 and len(generated.labels) == 0
    read = pd.read_parquet(io.BytesIO(generated.to_file_bytes()))
    assert read.columns.tolist() == load_use_case("card_fraud").columns
    assert pd.api.types.is_datetime64_any_dtype(read["event_time"])


def test_fault_malformed_bytes_are_not_readable_parquet() -> None:
    generated = _day("fault_malformed")
    _assert_valid(generated)  # the frame is clean; only the delivered file is broken
    with pytest.raises(pa.ArrowInvalid, match="Parquet magic bytes"):
        pd.read_parquet(io.BytesIO(generated.to_file_bytes()))


def test_every_fault_breaks_a_clean_delivery() -> None:
    clean = _day().to_file_bytes()
    for scenario in FAULT_SCENARIOS:
        assert _day(scenario).to_file_bytes() != clean, scenario


def test_scenarios_are_all_described() -> None:
    assert set(SCENARIOS) == set(DRIFT_SCENARIOS) | set(FAULT_SCENARIOS)
    assert all(SCENARIOS[name] for name in SCENARIOS)


# --- labels ------------------------------------------------------------------------------------


def test_labels_arrive_after_a_delay() -> None:
    generated = _day(rows=20_000)
    delay = generated.labels["label_time"] - generated.transactions["event_time"]
    days = delay.dt.total_seconds() / 86_400
    assert (delay > pd.Timedelta(0)).all()
    assert days.between(1, 10).mean() > 0.8
    assert days.max() <= 120
    fraud = generated.labels["is_fraud"] == 1
    assert days[~fraud].max() <= 45
    assert days[fraud].median() > days[~fraud].median()


# --- inputs, speed, CLI ------------------------------------------------------------------------


def test_bad_inputs_name_the_fix() -> None:
    with pytest.raises(ValueError, match="fault_nulls"):
        generate_day(DAY, rows=10, seed=SEED, scenario="nope")
    with pytest.raises(ValueError, match="rows"):
        generate_day(DAY, rows=-1, seed=SEED)
    with pytest.raises(ValueError, match="seed"):
        generate_day(DAY, rows=10, seed=-1)
    assert len(generate_day(DAY, rows=0, seed=SEED).transactions) == 0


def test_generation_is_vectorised_fast() -> None:
    started = time.perf_counter()
    _day(rows=200_000).to_file_bytes()
    assert time.perf_counter() - started < 10


def test_cli_writes_day_partitions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--start", "2026-11-01", "--days", "3", "--rows", "2000", "--seed", "42"]
    argv += ["--scenario", "2026-11-02=covariate_amount", "--scenario", "2026-11-03=fault_malformed"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert "3 day(s)" in capsys.readouterr().out
    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
        assert (tmp_path / "transactions" / f"date={day}" / "part-0.parquet").is_file()
        files = sorted((tmp_path / "labels" / "transactions").glob(f"date=*/transactions-{day}.parquet"))
        labels = pd.concat([pd.read_parquet(f) for f in files])
        assert labels.columns.tolist() == ["transaction_id", "is_fraud", "label_time"] and len(labels) == 2000
        # each file under the day its labels became known
        for file in files:
            assert {f"date={t.date()}" for t in pd.read_parquet(file)["label_time"]} == {file.parent.name}
    first = pd.read_parquet(tmp_path / "transactions" / "date=2026-11-01" / "part-0.parquet")
    assert first.columns.tolist() == load_use_case("card_fraud").columns
    drifted = (tmp_path / "transactions" / "date=2026-11-02" / "part-0.parquet").read_bytes()
    assert drifted == generate_day(NEXT_DAY, rows=2000, seed=42, scenario="covariate_amount").to_file_bytes()
    with pytest.raises(pa.ArrowInvalid, match="Parquet magic bytes"):
        pd.read_parquet(tmp_path / "transactions" / "date=2026-11-03" / "part-0.parquet")
    assert not [p for p in tmp_path.rglob(".*")], "temporary files must not be left behind"


def test_cli_rejects_unknown_scenario_and_dates_outside_the_range(tmp_path: Path) -> None:
    base = ["--start", "2026-11-01", "--days", "2", "--out", str(tmp_path)]
    with pytest.raises(SystemExit):
        main([*base, "--scenario", "2026-11-01=nope"])
    with pytest.raises(SystemExit):
        main([*base, "--scenario", "2026-12-01=prior"])


def test_module_runs_as_a_script(tmp_path: Path) -> None:
    argv = ["--start", "2026-11-01", "--rows", "100", "--out", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "mlloop.data.generator", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "wrote 1 day(s)" in result.stdout
    assert "fraud_rate" in result.stderr
    assert (tmp_path / "transactions" / "date=2026-11-01" / "part-0.parquet").is_file()


@pytest.mark.parametrize("day", [dt.date(2026, 11, d) for d in range(18, 26)])
def test_clean_days_at_production_size_keep_the_contract(day: dt.date) -> None:
    """Rare boundary values (e.g. an 18-year-old rounding to 17) only show at full daily volume."""
    _assert_valid(_day(day=day, rows=20_000))
