"""The use-case folder: declarations found, selected and checked at load; `mlloop use-cases` reports them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlloop.cli import cli
from mlloop.config import get_settings
from mlloop.usecase import (
    USECASE_DIR,
    declared_use_cases,
    enabled_use_cases,
    load_use_case,
    usecases_dir,
)
from mlloop.validation.suite import EXPECTATIONS_DIR

CARD_FRAUD = yaml.safe_load((USECASE_DIR / "card_fraud.yaml").read_text())
Declare = Callable[..., Path]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty use-case folder that MLLOOP_USECASES_DIR points at, with no MLLOOP_USE_CASES selection."""
    path = tmp_path / "usecases"
    path.mkdir()
    monkeypatch.setenv("MLLOOP_USECASES_DIR", str(path))
    monkeypatch.delenv("MLLOOP_USE_CASES", raising=False)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


@pytest.fixture
def declare(folder: Path) -> Declare:
    """Write card_fraud's real declaration as ``<stem>.yaml`` named ``stem`` (own dataset and model), with
    ``changes`` on top."""

    def write(stem: str, *, where: Path | None = None, suffix: str = ".yaml", **changes: Any) -> Path:
        document = {
            **CARD_FRAUD,
            "name": stem,
            "dataset": f"{stem}_events",
            "model_name": f"{stem}-model",
            **changes,
        }
        path = (where or folder) / f"{stem}{suffix}"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    return write


def select(monkeypatch: pytest.MonkeyPatch, selection: str) -> None:
    monkeypatch.setenv("MLLOOP_USE_CASES", selection)
    get_settings.cache_clear()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["use-cases", *args], prog_name="mlloop")


def test_without_the_setting_the_packaged_folder_declares_card_fraud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLLOOP_USECASES_DIR", raising=False)
    monkeypatch.delenv("MLLOOP_USE_CASES", raising=False)
    get_settings.cache_clear()
    try:
        assert usecases_dir() == USECASE_DIR
        assert declared_use_cases()["card_fraud"] == USECASE_DIR / "card_fraud.yaml"
        assert "card_fraud" in enabled_use_cases()
    finally:
        get_settings.cache_clear()


def test_every_yaml_in_the_folder_is_declared_by_its_file_name(folder: Path, declare: Declare) -> None:
    declare("churn")
    declare("alpha", suffix=".yml")
    (folder / "notes.txt").write_text("not a declaration")
    declared = declared_use_cases()
    assert list(declared) == ["alpha", "churn"]
    assert declared["alpha"] == folder / "alpha.yml"
    assert enabled_use_cases() == ["alpha", "churn"]  # no selection: all declared
    assert load_use_case("alpha").dataset == "alpha_events"


def test_the_same_name_declared_twice_is_refused(folder: Path, declare: Declare) -> None:
    declare("churn")
    declare("churn", suffix=".yml")
    with pytest.raises(ValueError, match=r"'churn' is declared twice .*churn\.yaml and churn\.yml"):
        declared_use_cases()


def test_a_missing_folder_names_the_setting(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLOOP_USECASES_DIR", str(folder / "absent"))
    get_settings.cache_clear()
    with pytest.raises(FileNotFoundError, match=r"absent does not exist\. Point MLLOOP_USECASES_DIR"):
        declared_use_cases()


def test_selection_keeps_its_order_once_each(
    folder: Path, declare: Declare, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("alpha", "churn", "demand"):
        declare(name)
    select(monkeypatch, " demand, alpha,demand ,")
    assert enabled_use_cases() == ["demand", "alpha"]
    select(monkeypatch, " ")
    assert enabled_use_cases() == ["alpha", "churn", "demand"]


def test_selecting_an_undeclared_use_case_names_the_variable_folder_and_declared(
    folder: Path, declare: Declare, monkeypatch: pytest.MonkeyPatch
) -> None:
    declare("churn")
    select(monkeypatch, "churn,chrun,demand")
    with pytest.raises(ValueError) as raised:
        enabled_use_cases()
    message = str(raised.value)
    assert "MLLOOP_USE_CASES='churn,chrun,demand' names ['chrun', 'demand']" in message
    assert str(folder) in message
    assert "declared use cases: ['churn']" in message


def test_a_name_is_looked_up_in_the_folder_the_setting_names_now(
    tmp_path: Path, folder: Path, declare: Declare, monkeypatch: pytest.MonkeyPatch
) -> None:
    declare("churn")
    other = tmp_path / "other"
    other.mkdir()
    declare("churn", where=other, dataset="churn_v2")
    assert load_use_case("churn").dataset == "churn_events"
    monkeypatch.setenv("MLLOOP_USECASES_DIR", str(other))
    get_settings.cache_clear()
    assert load_use_case("churn").dataset == "churn_v2"  # not the cached declaration of the first folder
    with pytest.raises(FileNotFoundError, match=r"holds no card_fraud\.yaml.*MLLOOP_USE_CASE.*\['churn'\]"):
        load_use_case("card_fraud")


@pytest.mark.parametrize("name", ["Churn", "churn-v2", "2churn", "c" * 41, "churn.v2"])
def test_a_name_unfit_for_dag_ids_is_refused(tmp_path: Path, declare: Declare, name: str) -> None:
    path = declare("churn", where=tmp_path, name=name)  # outside the folder: only the pattern applies
    with pytest.raises(ValueError, match=r"is not a valid use-case name: it goes into DAG ids") as raised:
        load_use_case(str(path))
    assert str(path) in str(raised.value) and f"name: {name!r}" in str(raised.value)


def test_in_the_folder_the_name_must_be_the_file_name(folder: Path, declare: Declare) -> None:
    path = declare("churn", name="churn_model")
    with pytest.raises(ValueError) as raised:
        load_use_case("churn")
    message = str(raised.value)
    assert f"use case declaration {path} is invalid: name: name 'churn_model' differs from the file name" in (
        message
    )
    assert "Set name: churn or rename the file to churn_model.yaml" in message


def test_a_missing_suite_names_the_file_the_key_and_the_path_looked_for(
    folder: Path, declare: Declare
) -> None:
    path = declare("churn", suites={"raw": "churn_raw", "features": "transactions_features"})
    with pytest.raises(ValueError) as raised:
        load_use_case("churn")
    message = str(raised.value)
    assert f"use case declaration {path} is invalid: suites.raw: expectation suite 'churn_raw'" in message
    assert str(EXPECTATIONS_DIR / "churn_raw.json") in message
    assert "suites.features" not in message  # that suite exists


def test_a_declaration_without_a_raw_suite_is_refused(folder: Path, declare: Declare) -> None:
    declare("churn", suites={"features": "transactions_features"})
    with pytest.raises(ValueError, match=r"suites\.raw: missing; every use case needs a raw suite"):
        load_use_case("churn")


def test_every_invalid_key_is_named_with_its_fix(folder: Path) -> None:
    document = {key: value for key, value in CARD_FRAUD.items() if key != "target_column"}
    path = folder / "churn.yaml"
    path.write_text(yaml.safe_dump({**document, "name": "churn", "training": {"window_dayz": 3}}))
    with pytest.raises(ValueError) as raised:
        load_use_case("churn")
    message = str(raised.value)
    assert message.startswith(f"use case declaration {path} is invalid: ")
    assert "target_column: missing; this key is required" in message
    assert (
        "training.window_dayz: Extra inputs are not permitted; valid keys here are "
        "['min_positives', 'min_rows', 'window_days']"
    ) in message


def test_an_edited_declaration_is_read_again(folder: Path, declare: Declare) -> None:
    declare("churn")
    assert load_use_case("churn").source.rows_per_day == CARD_FRAUD["source"]["rows_per_day"]
    declare("churn", source={**CARD_FRAUD["source"], "rows_per_day": 123})
    assert load_use_case("churn").source.rows_per_day == 123


def test_list_shows_each_declaration_enabled_or_not_and_why_one_is_invalid(
    folder: Path, declare: Declare, monkeypatch: pytest.MonkeyPatch
) -> None:
    declare("churn")
    declare("demand", suites={"raw": "demand_raw"})
    result = invoke("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"use-case folder: {folder}"
    assert lines[1].split() == [
        "churn",
        "enabled",
        "dataset=churn_events",
        "model_name=churn-model",
        "source=generator",
    ]
    assert lines[2].startswith("demand  enabled   invalid: suites.raw: expectation suite 'demand_raw'")

    select(monkeypatch, "demand")
    lines = invoke("list").output.splitlines()
    assert lines[1].split()[:2] == ["churn", "disabled"] and lines[2].split()[:2] == ["demand", "enabled"]


def test_check_prints_ok_or_each_problem_and_fails_on_any(
    folder: Path, declare: Declare, tmp_path: Path
) -> None:
    good = declare("churn")
    bad = declare("demand", suites={"raw": "demand_raw"}, training={"window_dayz": 3})
    result = invoke("check")
    assert result.exit_code == 1, result.output
    assert f"OK       churn  ({good})" in result.output
    assert f"INVALID  demand  ({bad})\n  - training.window_dayz: Extra inputs" in result.output
    assert "\n  - suites.raw: expectation suite 'demand_raw'" in result.output
    assert result.output.endswith("2 use case(s) checked: 1 OK, 1 invalid.\n")

    assert invoke("check", "churn").exit_code == 0
    outside = declare("weather", where=tmp_path)
    result = invoke("check", "churn", str(outside))
    assert result.exit_code == 0, result.output
    assert f"OK       weather  ({outside})" in result.output

    result = invoke("check", "chrun")
    assert result.exit_code == 1
    assert (
        "INVALID  chrun" in result.output and "MLLOOP_USE_CASE to one of ['churn', 'demand']" in result.output
    )


def test_check_refuses_shared_datasets_and_a_bad_selection(
    folder: Path, declare: Declare, monkeypatch: pytest.MonkeyPatch
) -> None:
    declare("churn")
    declare("churn_b2b", dataset="churn_events")
    result = invoke("check")
    assert result.exit_code == 1, result.output
    assert "OK       churn_b2b" in result.output
    expected = "INVALID  churn_b2b: dataset 'churn_events' is already declared by use case 'churn'"
    assert expected in result.output

    declare("churn_b2b", dataset="accounts")
    assert invoke("check").exit_code == 0
    select(monkeypatch, "churn,demand")
    result = invoke("check")
    assert result.exit_code == 1
    assert "INVALID  MLLOOP_USE_CASES='churn,demand' names ['demand']" in result.output


def test_an_unreadable_folder_is_an_error_for_both_verbs(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLLOOP_USECASES_DIR", str(folder / "absent"))
    get_settings.cache_clear()
    for verb in ("list", "check"):
        result = invoke(verb)
        assert result.exit_code == 1
        assert "MLLOOP_USECASES_DIR" in result.output
