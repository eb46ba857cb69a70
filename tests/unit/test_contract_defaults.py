"""Contract defaults every use case gets: each rejects its bad delivery with a reason naming it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlloop.data.generator import generate_day
from mlloop.data.scenarios import ALL_SCENARIOS, DRIFT_SCENARIOS
from mlloop.ingestion.batches import BatchRejectedError, LandedBatch, land_batch, validate_landed_batch
from mlloop.storage import Storage
from mlloop.usecase import USECASE_DIR, SourceSpec, UseCase, UseCaseDeclarationError, load_use_case
from mlloop.validation import validate_delivery, validate_frame
from mlloop.validation.contract import (
    EVENT_TIME_IN_DAY,
    KEY_NOT_PUBLISHED,
    KEY_UNIQUE,
    MAX_STRING_LENGTH,
    VALUE_SET,
    contract_expectations,
    day_bounds,
)
from mlloop.validation.suite import read_suite_json

DAY = date(2026, 11, 20)
ROWS = 400
SEED = 7
LOST_WEATHER = (date(2013, 10, 26), date(2013, 12, 31))  # NOAA's feed is missing for over a tenth of flights


def card_fraud(inbox: Path, **contract: Any) -> UseCase:
    """card_fraud fed from ``inbox`` (files), with ``contract`` overrides, validated as a declaration."""
    document = load_use_case("card_fraud").model_dump(by_alias=True)
    document["source"] = SourceSpec(kind="files", uri=str(inbox)).model_dump()
    document["contract"] = contract
    return UseCase.model_validate(document)


def clean_day(day: date = DAY) -> pd.DataFrame:
    """A clean generated delivery of ``day``."""
    return generate_day(day, rows=ROWS, seed=SEED).transactions


def deliver(storage: Storage, use_case: UseCase, frame: pd.DataFrame, day: date = DAY) -> LandedBatch:
    """Put ``frame`` in the use case's inbox as the delivery of ``day`` and land it."""
    folder = Path(str(use_case.source.uri)) / use_case.dataset / f"date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "part-0.parquet", index=False)
    return land_batch(storage, use_case, day)


def rejection(storage: Storage, use_case: UseCase, frame: pd.DataFrame, day: date = DAY) -> dict[str, Any]:
    """Deliver ``frame``, expect it quarantined, and return its ``reason.json``."""
    batch = deliver(storage, use_case, frame, day)
    with pytest.raises(BatchRejectedError) as rejected:
        validate_landed_batch(storage, use_case, batch)
    assert storage.exists(f"quarantine/{use_case.dataset}/date={day}/{batch.batch_id}/batch.parquet")
    return storage.read_json(rejected.value.reason_uri)


def failure_of(reason: dict[str, Any], default: str) -> dict[str, Any]:
    """Return the one failure of ``reason`` that is contract default ``default``."""
    failures = [f for f in reason["failures"] if f["contract_default"] == default]
    assert len(failures) == 1, reason["failures"]
    return failures[0]


def publish(storage: Storage, frame: pd.DataFrame, day: date, name: str = "earlier") -> None:
    """Write ``frame`` as a validated partition of ``day`` (what an earlier ingest published)."""
    storage.write_frame(f"validated/transactions/date={day.isoformat()}/{name}.parquet", frame)


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(str(tmp_path / "root"))


@pytest.fixture
def use_case(tmp_path: Path) -> UseCase:
    return card_fraud(tmp_path / "inbox")


# --- the defaults as GX expectations ------------------------------------------------------------------


def test_a_clean_delivery_passes_and_its_report_carries_every_default(
    storage: Storage, use_case: UseCase
) -> None:
    publish(storage, clean_day(DAY - timedelta(days=1)), DAY - timedelta(days=1))
    validated = validate_landed_batch(storage, use_case, deliver(storage, use_case, clean_day()))
    result = storage.read_json(validated["report_uri"])
    assert result["success"] is True
    defaults = {
        (
            item["expectation_config"]["meta"].get("contract_default"),
            item["expectation_config"]["kwargs"]["column"],
        )
        for item in result["results"]
        if "contract_default" in (item["expectation_config"].get("meta") or {})
    }
    assert (EVENT_TIME_IN_DAY, "event_time") in defaults
    assert (MAX_STRING_LENGTH, "merchant_id") in defaults and (MAX_STRING_LENGTH, "card_number") in defaults
    assert (VALUE_SET, "merchant_category") in defaults
    mlloop = result["meta"]["mlloop"]
    published_check = mlloop["checks"][KEY_NOT_PUBLISHED]
    assert (published_check["days_read"], published_check["success"]) == (["2026-11-19"], True)
    # The hand-written suite already checks uniqueness and four value sets: no duplicate is added.
    assert (
        f"{KEY_UNIQUE}(transaction_id): expect_column_values_to_be_unique in the suite"
        in (mlloop["contract_defaults"]["covered_by_suite"])
    )
    assert sum(1 for item in result["results"] if item["expectation_config"]["type"].endswith("_unique")) == 1
    assert result["statistics"]["evaluated_expectations"] == len(result["results"]) + 1  # + the storage check


def test_the_day_bounds_are_the_declared_zone_s_calendar_day() -> None:
    assert day_bounds(DAY, "UTC") == (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC))
    start, end = day_bounds(date(2026, 11, 1), "America/New_York")  # clocks go back: a 25-hour day
    assert (start, end - start) == (datetime(2026, 11, 1, 4, tzinfo=UTC), timedelta(hours=25))


def test_an_event_40_days_outside_the_day_is_rejected(storage: Storage, use_case: UseCase) -> None:
    frame = clean_day()
    frame.loc[5, "event_time"] -= timedelta(days=40)
    failure = failure_of(rejection(storage, use_case, frame), EVENT_TIME_IN_DAY)
    assert (failure["expectation"], failure["column"], failure["unexpected_count"]) == (
        "expect_column_values_to_be_between",
        "event_time",
        1,
    )
    assert failure["kwargs"]["min_value"] == "2026-11-20T00:00:00+00:00"
    assert (
        "2026-10-" in failure["details"] and f"[contract default {EVENT_TIME_IN_DAY}]" in failure["details"]
    )


def test_the_partition_day_follows_contract_timezone(tmp_path: Path, storage: Storage) -> None:
    zurich = card_fraud(tmp_path / "inbox", timezone="Europe/Zurich")
    frame = (
        clean_day()
    )  # the UTC day: its first hour is 20 November, 01:00-02:00 in Zurich, its last 21 November
    reason = rejection(storage, zurich, frame)
    failure = failure_of(reason, EVENT_TIME_IN_DAY)
    assert failure["kwargs"]["min_value"] == "2026-11-19T23:00:00+00:00"
    assert failure["unexpected_count"] == int((frame["event_time"] >= "2026-11-20T23:00:00Z").sum()) > 0
    in_zurich_day = frame.assign(event_time=frame["event_time"] - timedelta(hours=1))
    assert validate_delivery(storage, zurich, DAY, in_zurich_day).success


def test_a_key_duplicated_within_the_delivery_is_rejected_by_the_default(
    tmp_path: Path, storage: Storage, use_case: UseCase, mlloop_env
) -> None:
    frame = clean_day()
    frame.loc[9, "transaction_id"] = frame.loc[8, "transaction_id"]
    # card_fraud's suite checks uniqueness itself: its hand-written expectation rejects, with no duplicate.
    reason = rejection(storage, use_case, frame)
    assert [f["expectation"] for f in reason["failures"]] == ["expect_column_values_to_be_unique"]
    assert reason["failures"][0]["contract_default"] is None
    # A suite without it: the default does the same.
    suites = tmp_path / "suites"
    suites.mkdir()
    document = read_suite_json("transactions_raw")
    document["expectations"] = [e for e in document["expectations"] if not e["type"].endswith("_unique")]
    for name in ("transactions_raw", "transactions_features"):
        (suites / f"{name}.json").write_text(
            json.dumps(document if name == "transactions_raw" else read_suite_json(name))
        )
    mlloop_env(expectations_dir=suites)
    frame.loc[11, "transaction_id"] = frame.loc[10, "transaction_id"]  # another batch id
    failure = failure_of(rejection(storage, use_case, frame), KEY_UNIQUE)
    assert (failure["expectation"], failure["column"], failure["unexpected_count"]) == (
        "expect_column_values_to_be_unique",
        "transaction_id",
        4,
    )


def test_a_1mb_string_is_rejected_and_kept_out_of_the_reason(storage: Storage, use_case: UseCase) -> None:
    frame = clean_day()
    frame.loc[3, "merchant_id"] = "M" * 1_000_000
    batch = deliver(storage, use_case, frame)
    with pytest.raises(
        BatchRejectedError, match=r"merchant_id: 1 of 400 .*contract default max_string_length"
    ):
        validate_landed_batch(storage, use_case, batch)
    reason_uri = f"quarantine/transactions/date={DAY}/{batch.batch_id}/reason.json"
    failure = failure_of(storage.read_json(reason_uri), MAX_STRING_LENGTH)
    assert (failure["expectation"], failure["column"]) == (
        "expect_column_value_lengths_to_be_between",
        "merchant_id",
    )
    assert failure["kwargs"]["max_value"] == 1000
    assert failure["sample_values"] == ["M" * 200 + "... (1,000,000 characters)"]
    assert len(storage.read_bytes(reason_uri)) < 20_000
    report = f"reports/validation/transactions/date={DAY}/{batch.batch_id}.json"
    assert len(storage.read_bytes(report)) < 200_000


def test_a_column_s_own_length_bound_overrides_the_default(tmp_path: Path, storage: Storage) -> None:
    strict = card_fraud(tmp_path / "inbox", max_string_length={"merchant_id": 8})  # M + 7 digits
    frame = clean_day()
    frame.loc[0, "merchant_id"] = "M123456789"
    failure = failure_of(rejection(storage, strict, frame), MAX_STRING_LENGTH)
    assert (failure["column"], failure["kwargs"]["max_value"], failure["unexpected_count"]) == (
        "merchant_id",
        8,
        1,
    )


def test_a_new_category_is_reported_by_default_and_rejected_under_reject(
    tmp_path: Path, storage: Storage, use_case: UseCase, caplog: pytest.LogCaptureFixture
) -> None:
    frame = clean_day()
    frame.loc[[4, 6, 8], "merchant_category"] = "crypto_exchange"
    with caplog.at_level("WARNING", logger="mlloop.validation.contract"):
        report = validate_delivery(storage, use_case, DAY, frame)
    assert report.success
    [reported] = report.reported
    assert (reported.column, reported.contract_default, reported.unexpected_count) == (
        "merchant_category",
        VALUE_SET,
        3,
    )
    assert "new values (rows): {'crypto_exchange': 3}" in reported.details
    assert "reported, passes" in report.summary() and "crypto_exchange" in caplog.text
    assert report.to_reason()["reported"][0]["column"] == "merchant_category"
    assert report.result["meta"]["mlloop"]["reported_values"]["merchant_category"]["new_values"] == {
        "crypto_exchange": 3
    }

    strict = card_fraud(tmp_path / "inbox", value_sets={"merchant_category": {"policy": "reject"}})
    failure = failure_of(rejection(storage, strict, frame), VALUE_SET)
    assert (failure["expectation"], failure["column"], failure["unexpected_count"]) == (
        "expect_column_values_to_be_in_set",
        "merchant_category",
        3,
    )
    assert "crypto_exchange" in failure["details"]


def test_categorical_policy_reject_applies_to_every_declared_vocabulary(tmp_path: Path) -> None:
    strict = card_fraud(tmp_path / "inbox", categorical_policy="reject")
    expectations = contract_expectations(strict, DAY, read_suite_json("transactions_raw")).expectations
    [merchant] = [e for e in expectations if e["meta"]["contract_default"] == VALUE_SET]
    assert merchant["kwargs"]["column"] == "merchant_category" and "mostly" not in merchant["kwargs"]


# --- the storage check: keys already published for another day ---------------------------------------


def test_a_key_published_on_another_day_within_the_lookback_is_rejected(
    storage: Storage, use_case: UseCase
) -> None:
    earlier = clean_day(DAY - timedelta(days=3))
    publish(storage, earlier, DAY - timedelta(days=3))
    frame = clean_day()
    frame.loc[[1, 2], "transaction_id"] = earlier.loc[[10, 20], "transaction_id"].to_numpy()
    reason = rejection(storage, use_case, frame)
    failure = failure_of(reason, KEY_NOT_PUBLISHED)
    assert (failure["expectation"], failure["column"], failure["unexpected_count"]) == (
        KEY_NOT_PUBLISHED,
        "transaction_id",
        2,
    )
    assert sorted(failure["sample_values"]) == sorted(earlier.loc[[10, 20], "transaction_id"])
    assert "2 of 400 rows have a key already published for another day" in failure["details"]
    assert "published on 2026-11-17" in failure["details"]
    assert reason["success"] is False and reason["failed"] == 1


def test_keys_published_beyond_the_lookback_or_on_the_same_day_are_not_flagged(
    tmp_path: Path, storage: Storage, use_case: UseCase
) -> None:
    long_ago, three_days = DAY - timedelta(days=31), DAY - timedelta(days=3)
    old, recent = clean_day(long_ago), clean_day(three_days)
    publish(storage, old, long_ago)
    publish(storage, recent, three_days)
    frame = clean_day()
    publish(storage, frame, DAY, name="a-previous-delivery-of-the-day")
    frame.loc[1, "transaction_id"] = old.loc[1, "transaction_id"]
    report = validate_delivery(storage, use_case, DAY, frame)  # default lookback: 30 days
    assert report.success, report.summary()
    assert report.result["meta"]["mlloop"]["checks"][KEY_NOT_PUBLISHED]["days_read"] == ["2026-11-17"]
    frame.loc[2, "transaction_id"] = recent.loc[2, "transaction_id"]
    short = card_fraud(tmp_path / "inbox", key_lookback_days=2)
    assert validate_delivery(storage, short, DAY, frame).success
    assert not validate_delivery(storage, use_case, DAY, frame).success


def test_a_backfilled_day_is_checked_against_the_days_published_after_it(
    storage: Storage, use_case: UseCase
) -> None:
    later = clean_day(DAY + timedelta(days=2))
    publish(storage, later, DAY + timedelta(days=2))
    frame = clean_day()
    frame.loc[0, "transaction_id"] = later.loc[0, "transaction_id"]
    failure = next(
        f for f in validate_delivery(storage, use_case, DAY, frame).failures if f.column == "transaction_id"
    )
    assert failure.contract_default == KEY_NOT_PUBLISHED and "published on 2026-11-22" in failure.details


def test_a_pii_key_is_compared_as_its_published_token(tmp_path: Path, storage: Storage, mlloop_env) -> None:
    from mlloop.ingestion.pii import tokenise_frame

    pii_key = "contract-test-pii-key-0123456789"
    mlloop_env(pii_key=pii_key)
    document = card_fraud(tmp_path / "inbox").model_dump(by_alias=True)
    document["pii_columns"] = ["card_number", "transaction_id"]
    use_case = UseCase.model_validate(document)
    earlier = clean_day(DAY - timedelta(days=1))
    tokenised = tokenise_frame(earlier, use_case.pii_columns, pii_key.encode())
    publish(storage, tokenised, DAY - timedelta(days=1))
    frame = clean_day()
    frame.loc[0, "transaction_id"] = earlier.loc[0, "transaction_id"]
    [failure] = [f for f in validate_delivery(storage, use_case, DAY, frame).failures if f.contract_default]
    assert (failure.contract_default, failure.unexpected_count) == (KEY_NOT_PUBLISHED, 1)
    assert failure.sample_values == [tokenised.loc[0, "transaction_id_token"]]  # the token, not the raw key
    assert earlier.loc[0, "transaction_id"] not in failure.details


# --- the declaration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract", "message"),
    [
        ({"value_sets": {"no_such": {"values": ["a"]}}}, r"value_sets names \['no_such'\]"),
        (
            {"value_sets": {"merchant_id": {"policy": "reject"}}},
            r"value_sets \['merchant_id'\] list no values",
        ),
        (
            {"max_string_length": {"amount": 10}},
            r"max_string_length names \['amount'\], which are not string",
        ),
        (
            {"max_string_length": {"merchant_id": 0}},
            r"max_string_length\.merchant_id\n  Input should be greater than 0",
        ),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"value_sets": {"channel": {"policy": "block"}}}, "reject"),
        ({"lookback_days": 3}, "Extra inputs are not permitted"),
    ],
)
def test_a_wrong_contract_section_is_refused_naming_the_key(
    tmp_path: Path, contract: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        card_fraud(tmp_path, **contract)


def test_a_contract_section_in_a_yaml_declaration_loads_and_a_typo_names_the_valid_keys(
    tmp_path: Path,
) -> None:
    text = (USECASE_DIR / "card_fraud.yaml").read_text()
    section = "contract:\n  timezone: Europe/Zurich\n  value_sets:\n    merchant_category: {policy: reject}\n"
    (tmp_path / "card_fraud.yaml").write_text(text + section)
    contract = load_use_case(str(tmp_path / "card_fraud.yaml")).contract
    assert (
        contract.timezone == "Europe/Zurich" and contract.value_sets["merchant_category"].policy == "reject"
    )
    (tmp_path / "typo.yaml").write_text(text + "contract:\n  lookback: 3\n")
    with pytest.raises(
        UseCaseDeclarationError, match=r"contract\.lookback: .*valid keys here are \[.*'key_lookback_days'"
    ):
        load_use_case(str(tmp_path / "typo.yaml"))


def test_the_bundled_declarations_load_with_the_documented_defaults() -> None:
    for name in ("card_fraud", "flight_delay"):
        contract = load_use_case(name).contract
        assert (contract.timezone, contract.default_max_string_length, contract.key_lookback_days) == (
            "UTC",
            1000,
            30,
        )
        assert contract.categorical_policy == "report"


# --- nothing that passed before fails now -------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Any]]:
    """Each generator scenario's delivery judged by the suite alone and with the contract defaults."""
    use_case = load_use_case("card_fraud")
    storage = Storage(str(tmp_path_factory.mktemp("scenarios")))
    reports = {}
    for scenario in ALL_SCENARIOS:
        if scenario == "fault_malformed":  # not a frame: the unreadable-file path rejects it before GX
            continue
        frame = generate_day(DAY, rows=1000, seed=SEED, scenario=scenario).transactions
        reports[scenario] = (
            validate_frame(frame, "transactions_raw"),
            validate_delivery(storage, use_case, DAY, frame),
        )
    return reports


def test_every_generator_scenario_keeps_its_verdict(scenario_reports: dict[str, tuple[Any, Any]]) -> None:
    for scenario, (suite_only, with_defaults) in scenario_reports.items():
        assert with_defaults.success == suite_only.success == (scenario in DRIFT_SCENARIOS), scenario
        assert {(f.expectation, f.column) for f in suite_only.failures} <= {
            (f.expectation, f.column) for f in with_defaults.failures
        }
        added = {(f.contract_default, f.column) for f in with_defaults.failures if f.contract_default}
        # A column that is not there fails its defaults too ("column is missing"), beside the suite's.
        expected = {
            "fault_missing_column": {(MAX_STRING_LENGTH, "country")},
            "fault_renamed_column": {
                (MAX_STRING_LENGTH, "merchant_category"),
                (VALUE_SET, "merchant_category"),
            },
        }.get(scenario, set())
        assert added == expected, (scenario, added)
    reported = {
        s: [r.column for r in with_defaults.reported] for s, (_, with_defaults) in scenario_reports.items()
    }
    assert reported.pop("covariate_new_categories") == ["merchant_category"]
    assert not any(reported.values()), reported


def test_generated_event_times_stay_inside_their_utc_day() -> None:
    for offset in range(0, 7):
        day = DAY + timedelta(days=offset)
        times = generate_day(day, rows=5000, seed=42).transactions["event_time"]
        start, end = day_bounds(day, "UTC")
        assert times.min() >= start and times.max() < end


@pytest.mark.parametrize("day", [date(2013, 1, 1), date(2013, 3, 10), date(2013, 10, 26), date(2013, 12, 31)])
def test_real_flight_days_pass_with_the_defaults(tmp_path: Path, day: date) -> None:
    from mlloop.data.flights import FIRST_DAY, LAST_DAY, day_frames

    use_case = load_use_case("flight_delay")
    storage = Storage(str(tmp_path))
    for neighbour in (day - timedelta(days=1), day + timedelta(days=1)):
        if FIRST_DAY <= neighbour <= LAST_DAY:  # published neighbours: a flight id spans no two UTC days
            storage.write_frame(f"validated/flights/date={neighbour}/b.parquet", day_frames(neighbour)[0])
    delivery = day_frames(day)[0]
    report = validate_delivery(storage, use_case, day, delivery)
    # The defaults add no failure and nothing to report; the verdict is the suite's own (10-26 and 12-31
    # lost the weather feed: the suite's temp/wind_speed null checks reject them, with or without defaults).
    assert not [f for f in report.failures if f.contract_default] and not report.reported, report.summary()
    assert report.success == validate_frame(delivery, "flights_raw").success == (day not in LOST_WEATHER)
    assert len(report.result["meta"]["mlloop"]["checks"][KEY_NOT_PUBLISHED]["days_read"]) >= 1
