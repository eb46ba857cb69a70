"""The raw-transactions data contract: the GX suite JSON, validate_frame on generated days, the report."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlloop.data import generator
from mlloop.data.scenarios import DRIFT_SCENARIOS
from mlloop.usecase import load_use_case
from mlloop.validation import (
    EXPECTATIONS_DIR,
    ExpectationFailure,
    ValidationReport,
    available_suites,
    load_suite,
    validate_frame,
)
from mlloop.validation import suite as suite_module

SUITE = "transactions_raw"
DAY = dt.date(2026, 1, 5)
ROWS = 3000
SEED = 7
USE_CASE = load_use_case("card_fraud")

# scenario -> (expectation, column) pairs that must be among the failures, and a text each details has.
FAULTS: dict[str, list[tuple[str, str | None, str]]] = {
    "fault_nulls": [
        ("expect_column_values_to_not_be_null", "amount", "amount: "),
        ("expect_column_values_to_not_be_null", "merchant_id", "are null"),
    ],
    "fault_wrong_types": [
        ("expect_column_values_to_be_in_type_list", "amount", "are not of type float64"),
    ],
    "fault_out_of_range": [
        ("expect_column_values_to_be_between", "amount", "are outside > 0 and <= 1000000"),
        ("expect_column_values_to_be_between", "customer_age", "are outside >= 18 and <= 100"),
    ],
    "fault_renamed_column": [
        (
            "expect_table_columns_to_match_ordered_list",
            None,
            "missing ['merchant_category']; unexpected ['mcc']",
        ),
        ("expect_column_values_to_not_be_null", "merchant_category", "merchant_category: column is missing"),
    ],
    "fault_missing_column": [
        ("expect_table_columns_to_match_ordered_list", None, "columns: missing ['country']"),
        ("expect_column_values_to_be_in_set", "country", "country: column is missing"),
        ("expect_column_values_to_not_be_null", "country", "country: column is missing"),
    ],
    "fault_duplicate_ids": [
        ("expect_column_values_to_be_unique", "transaction_id", "are duplicated"),
    ],
    "fault_empty": [
        ("expect_table_row_count_to_be_between", None, "table: 0 rows, expected >= 1"),
    ],
}


def delivered(scenario: str, rows: int = ROWS) -> pd.DataFrame:
    """Return a generated day as ingestion reads it: Parquet bytes read back with pandas."""
    day = generator.generate_day(DAY, rows=rows, seed=SEED, scenario=scenario)
    return pd.read_parquet(io.BytesIO(day.to_file_bytes()))


@pytest.fixture(scope="module")
def suite_json() -> dict[str, Any]:
    """Return the suite document as stored in the repository."""
    return json.loads((EXPECTATIONS_DIR / f"{SUITE}.json").read_text())


@pytest.fixture(scope="module")
def clean_frame() -> pd.DataFrame:
    """Return a clean generated day (small)."""
    return delivered("none")


@pytest.fixture(scope="module")
def clean_report(clean_frame: pd.DataFrame) -> ValidationReport:
    """Return the validation report of the clean day (GX imported once for the module)."""
    return validate_frame(clean_frame, SUITE)


@pytest.fixture(scope="module")
def fault_reports() -> dict[str, ValidationReport]:
    """Return the validation report of every fault scenario GX handles (not fault_malformed)."""
    return {scenario: validate_frame(delivered(scenario), SUITE) for scenario in FAULTS}


def _by_type(suite_json: dict[str, Any], kind: str) -> dict[str | None, dict[str, Any]]:
    """Return the kwargs of the suite's expectations of one type, keyed by column."""
    return {e["kwargs"].get("column"): e["kwargs"] for e in suite_json["expectations"] if e["type"] == kind}


# --- the suite document ------------------------------------------------------------------------------


def test_suite_json_loads_as_gx_suite_with_the_contract(suite_json: dict[str, Any]) -> None:
    suite = load_suite(SUITE)
    assert suite.name == SUITE
    assert len(suite.expectations) == len(suite_json["expectations"])
    counts = Counter(e["type"] for e in suite_json["expectations"])
    columns = USE_CASE.columns
    assert counts == {
        "expect_table_columns_to_match_ordered_list": 1,
        "expect_table_row_count_to_be_between": 1,
        "expect_column_values_to_be_in_type_list": len(columns) - 1,
        "expect_column_values_to_be_of_type": 1,  # event_time: tz-aware Timestamp
        "expect_column_values_to_not_be_null": len(columns),
        "expect_column_values_to_be_between": 7,
        "expect_column_values_to_be_in_set": 4,
        "expect_column_values_to_be_unique": 1,
        "expect_column_values_to_match_regex": 1,
    }
    assert _by_type(suite_json, "expect_table_columns_to_match_ordered_list")[None]["column_list"] == columns
    assert _by_type(suite_json, "expect_table_row_count_to_be_between")[None] == {
        "min_value": 1,
        "max_value": 10_000_000,
    }
    typed = set(_by_type(suite_json, "expect_column_values_to_be_in_type_list"))
    assert typed | set(_by_type(suite_json, "expect_column_values_to_be_of_type")) == set(columns)
    assert set(_by_type(suite_json, "expect_column_values_to_not_be_null")) == set(columns)
    assert set(_by_type(suite_json, "expect_column_values_to_be_unique")) == {USE_CASE.key_column}
    assert (
        _by_type(suite_json, "expect_column_values_to_match_regex")["card_number"]["regex"] == "^[0-9]{16}$"
    )


def test_suite_types_follow_the_use_case_schema(suite_json: dict[str, Any]) -> None:
    accepted = {"string": "str", "float": "float64", "integer": "int64"}
    type_lists = _by_type(suite_json, "expect_column_values_to_be_in_type_list")
    for column, kind in USE_CASE.schema_.items():
        if kind == "datetime":
            assert _by_type(suite_json, "expect_column_values_to_be_of_type")[column]["type_"] == "Timestamp"
        else:
            assert accepted[kind] in type_lists[column]["type_list"], column


def test_suite_ranges(suite_json: dict[str, Any]) -> None:
    ranges = _by_type(suite_json, "expect_column_values_to_be_between")
    assert ranges["amount"] == {
        "column": "amount",
        "min_value": 0,
        "max_value": 1_000_000,
        "strict_min": True,
    }
    assert (ranges["customer_age"]["min_value"], ranges["customer_age"]["max_value"]) == (18, 100)
    assert (ranges["account_age_days"]["min_value"], ranges["account_age_days"]["max_value"]) == (0, 40_000)
    for column in ("tx_count_1h", "tx_count_24h", "amount_sum_24h", "distance_from_home_km"):
        assert ranges[column]["min_value"] == 0
        assert ranges[column].get("max_value") is None


def test_allowed_sets_equal_the_generator_constants(suite_json: dict[str, Any]) -> None:
    sets = {
        column: set(kwargs["value_set"])
        for column, kwargs in _by_type(suite_json, "expect_column_values_to_be_in_set").items()
    }
    assert sets == {
        "currency": set(generator.ALLOWED_CURRENCIES),
        "channel": set(generator.ALLOWED_CHANNELS),
        "device": set(generator.ALLOWED_DEVICES),
        "country": set(generator.ALLOWED_COUNTRIES),
    }
    assert "merchant_category" not in sets  # new categories are drift, not a data fault


def test_suite_declares_the_use_case_pii_columns(suite_json: dict[str, Any]) -> None:
    assert suite_json["meta"]["pii_columns"] == USE_CASE.pii_columns
    assert USE_CASE.suites["raw"] == SUITE
    assert SUITE in available_suites()


def test_missing_suite_names_the_path_and_the_available_suites() -> None:
    with pytest.raises(FileNotFoundError) as raised:
        load_suite("no_such_suite")
    message = str(raised.value)
    assert str(EXPECTATIONS_DIR / "no_such_suite.json") in message
    assert SUITE in message
    with pytest.raises(FileNotFoundError, match="no_such_suite"):
        validate_frame(pd.DataFrame({"a": [1]}), "no_such_suite")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "expect_column_values_to_be_purple"}, "GX accepted 48 of 49 expectations"),
        ({"kwargs": {"min_value": "one", "max_value": 10}}, "has an expectation GX rejects"),
    ],
)
def test_broken_suite_file_is_refused_naming_the_file(
    change: dict[str, Any],
    message: str,
    suite_json: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    document = copy.deepcopy(suite_json)
    document["expectations"][1].update(change)  # the row-count expectation
    (tmp_path / f"{SUITE}.json").write_text(json.dumps(document))
    monkeypatch.setattr(suite_module, "EXPECTATIONS_DIR", tmp_path)
    with pytest.raises(ValueError, match=message) as raised:
        load_suite(SUITE)
    assert str(tmp_path / f"{SUITE}.json") in str(raised.value)


# --- validate_frame ----------------------------------------------------------------------------------


def test_clean_day_passes(clean_report: ValidationReport, suite_json: dict[str, Any]) -> None:
    assert clean_report.success, clean_report.summary()
    assert clean_report.failures == []
    assert clean_report.row_count == ROWS
    assert clean_report.evaluated == len(suite_json["expectations"])


def test_a_week_of_clean_demo_days_passes() -> None:
    """The demo's clean days (use-case rows and seed) must never be quarantined."""
    source = USE_CASE.source
    for offset in range(7):
        day = DAY + dt.timedelta(days=offset)
        frame = generator.generate_day(day, rows=source.rows_per_day, seed=source.seed).transactions
        report = validate_frame(frame, SUITE)
        assert report.success, f"clean generated day {day} fails the contract:\n{report.summary()}"


def test_validation_leaves_the_frame_as_it_was(clean_frame: pd.DataFrame) -> None:
    before = clean_frame.copy()
    validate_frame(clean_frame, SUITE)
    pd.testing.assert_frame_equal(clean_frame, before)


def test_text_columns_already_in_string_dtype_pass(clean_frame: pd.DataFrame) -> None:
    text = [name for name in clean_frame.columns if clean_frame[name].dtype == object]
    frame = clean_frame.astype(dict.fromkeys(text, "string[pyarrow]"))
    assert validate_frame(frame, SUITE).success


def test_result_is_the_gx_suite_result_as_json(
    clean_report: ValidationReport, suite_json: dict[str, Any]
) -> None:
    result = json.loads(json.dumps(clean_report.result))
    assert result["suite_name"] == SUITE
    assert result["success"] is True
    assert result["statistics"]["evaluated_expectations"] == len(suite_json["expectations"])
    assert result["statistics"]["successful_expectations"] == len(suite_json["expectations"])
    # Results come back in suite order, one per expectation.
    assert [r["expectation_config"]["type"] for r in result["results"]] == [
        e["type"] for e in suite_json["expectations"]
    ]
    assert [r["expectation_config"]["kwargs"].get("column") for r in result["results"]] == [
        e["kwargs"].get("column") for e in suite_json["expectations"]
    ]


@pytest.mark.parametrize("scenario", sorted(FAULTS))
def test_each_fault_fails_with_the_right_expectation(
    scenario: str, fault_reports: dict[str, ValidationReport]
) -> None:
    report = fault_reports[scenario]
    assert not report.success
    failures = {(f.expectation, f.column): f for f in report.failures}
    for expectation, column, text in FAULTS[scenario]:
        assert (expectation, column) in failures, report.summary()
        assert text in failures[(expectation, column)].details, failures[(expectation, column)].details


def test_fault_details_count_rows_and_show_samples(fault_reports: dict[str, ValidationReport]) -> None:
    nulls = next(f for f in fault_reports["fault_nulls"].failures if f.column == "amount")
    assert nulls.unexpected_count is not None and 0 < nulls.unexpected_count < ROWS
    assert nulls.details == (
        f"amount: {nulls.unexpected_count} of {ROWS} rows ({nulls.unexpected_percent:.2f}%) are null"
    )
    wrong = next(
        f
        for f in fault_reports["fault_wrong_types"].failures
        if f.expectation == "expect_column_values_to_be_in_type_list"
    )
    assert wrong.unexpected_count == ROWS
    assert wrong.sample_values and all(
        isinstance(v, str) and v.endswith(("EUR", "USD", "GBP", "CHF")) for v in wrong.sample_values
    )
    ages = next(f for f in fault_reports["fault_out_of_range"].failures if f.column == "customer_age")
    assert set(ages.sample_values) == {150}


def test_missing_column_fails_only_its_own_expectations(fault_reports: dict[str, ValidationReport]) -> None:
    report = fault_reports["fault_missing_column"]
    failed_columns = {f.column for f in report.failures}
    assert failed_columns == {None, "country"}
    assert report.evaluated - report.passed == len(report.failures) == 4


def test_empty_frame_fails_on_row_count_only(fault_reports: dict[str, ValidationReport]) -> None:
    report = fault_reports["fault_empty"]
    assert [(f.expectation, f.details) for f in report.failures] == [
        ("expect_table_row_count_to_be_between", "table: 0 rows, expected >= 1 and <= 10000000")
    ]


@pytest.mark.parametrize("scenario", [s for s in DRIFT_SCENARIOS if s != "none"])
def test_drift_is_not_a_data_fault(scenario: str) -> None:
    report = validate_frame(delivered(scenario, rows=2000), SUITE)
    assert report.success, report.summary()


def test_text_column_with_a_non_string_value_is_checked_value_by_value(clean_frame: pd.DataFrame) -> None:
    frame = clean_frame.copy()
    frame["customer_id"] = frame["customer_id"].astype(object)
    frame.loc[3, "customer_id"] = 12345
    report = validate_frame(frame, SUITE)
    failure = next(f for f in report.failures if f.column == "customer_id")
    assert failure.expectation == "expect_column_values_to_be_in_type_list"
    assert failure.unexpected_count == 1
    assert failure.sample_values == [12345]
    assert failure.details.startswith("customer_id: 1 of 3000 non-null values (0.03%) are not of type str")


def test_event_time_must_be_timezone_aware(clean_frame: pd.DataFrame) -> None:
    micro = clean_frame.assign(event_time=clean_frame["event_time"].astype("datetime64[us, UTC]"))
    assert validate_frame(micro, SUITE).success
    naive = clean_frame.assign(event_time=clean_frame["event_time"].dt.tz_localize(None))
    failures = validate_frame(naive, SUITE).failures
    assert [(f.expectation, f.column) for f in failures] == [
        ("expect_column_values_to_be_of_type", "event_time")
    ]
    assert failures[0].details == "event_time: column type is 'datetime64', expected Timestamp"


def test_bad_card_numbers_are_reported_masked(clean_frame: pd.DataFrame) -> None:
    frame = clean_frame.copy()
    frame.loc[0, "card_number"] = "4111-1111-1111-1111"
    report = validate_frame(frame, SUITE)
    failure = next(f for f in report.failures if f.column == "card_number")
    assert failure.expectation == "expect_column_values_to_match_regex"
    assert failure.sample_values == ["***************1111"]
    assert "4111-1111" not in json.dumps(report.result)
    assert "4111-1111" not in report.summary()


# --- the report --------------------------------------------------------------------------------------


def test_summary_and_reason(fault_reports: dict[str, ValidationReport], suite_json: dict[str, Any]) -> None:
    report = fault_reports["fault_missing_column"]
    total = len(suite_json["expectations"])
    lines = report.summary().splitlines()
    assert lines[0] == (
        f"suite {SUITE}: {total} expectations, {total - 4} passed, 4 failed on {ROWS} rows (FAILED)"
    )
    assert len(lines) == 1 + 4
    assert any("country: column is missing" in line for line in lines[1:])
    reason = json.loads(json.dumps(report.to_reason()))
    assert reason["suite"] == SUITE
    assert reason["success"] is False
    assert (reason["evaluated"], reason["passed"], reason["failed"], reason["row_count"]) == (
        total,
        total - 4,
        4,
        ROWS,
    )
    assert {tuple(sorted(f)) for f in reason["failures"]} == {
        tuple(sorted(ExpectationFailure.__dataclass_fields__))
    }
    assert {f["column"] for f in reason["failures"]} == {None, "country"}
