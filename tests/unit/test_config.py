"""Settings read from MLLOOP_* env vars; use-case declarations load and validate."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mlloop.config import REPO_ROOT, Settings
from mlloop.orchestration.runtime import resolve_day
from mlloop.usecase import load_use_case


def test_defaults_are_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLLOOP_DATA_ROOT", raising=False)
    settings = Settings()
    assert settings.data_root == str(REPO_ROOT / "data")
    assert settings.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert settings.training_backend == "local"
    assert settings.pii_key is None


def test_env_overrides_and_secret_is_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLOOP_DATA_ROOT", "s3://bucket/prefix")
    monkeypatch.setenv("MLLOOP_TRAINING_BACKEND", "kubernetes")
    monkeypatch.setenv("MLLOOP_PII_KEY", "canary-secret-key-123456")
    settings = Settings()
    assert settings.data_root == "s3://bucket/prefix"
    assert settings.training_backend == "kubernetes"
    assert "canary-secret-key" not in repr(settings)
    assert "canary-secret-key" not in str(settings.model_dump())


def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLOOP_TRAINING_BACKEND", "spark")
    with pytest.raises(ValidationError, match="training_backend"):
        Settings()


def test_use_case_declaration_loads() -> None:
    use_case = load_use_case("card_fraud")
    assert use_case.dataset == "transactions"
    assert use_case.key_column == "transaction_id"
    assert use_case.pii_columns == ["card_number"]
    assert use_case.columns[0] == "transaction_id"
    assert use_case.model_name == "fraud-detector"


def test_unknown_use_case_names_the_fix() -> None:
    with pytest.raises(FileNotFoundError, match="MLLOOP_USE_CASE"):
        load_use_case("no_such_case")


def test_use_case_with_undeclared_pii_column_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (REPO_ROOT / "include/mlloop/usecases/card_fraud.yaml")
        .read_text()
        .replace("pii_columns: [card_number]", "pii_columns: [iban]")
    )
    with pytest.raises(ValueError, match=r"bad\.yaml is invalid: .*pii_columns") as error:
        load_use_case(str(bad))
    assert str(bad) in str(error.value)


def test_use_case_policy_defaults_and_bad_policy(tmp_path: Path) -> None:
    use_case = load_use_case("card_fraud")
    assert use_case.training.window_days >= 1
    bad = tmp_path / "bad_policy.yaml"
    bad.write_text(
        (REPO_ROOT / "include/mlloop/usecases/card_fraud.yaml").read_text() + "training:\n  window_dayz: 3\n"
    )
    with pytest.raises(ValueError, match=r"training\.window_dayz: Extra inputs are not permitted"):
        load_use_case(str(bad))


def test_resolve_day() -> None:
    from datetime import UTC, date, datetime

    assert resolve_day("2026-11-20", None, None) == date(2026, 11, 20)
    assert resolve_day(None, datetime(2026, 11, 19, tzinfo=UTC), None) == date(2026, 11, 19)
    assert resolve_day(None, None, datetime(2026, 11, 21, 3, tzinfo=UTC)) == date(2026, 11, 20)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        resolve_day("20/11/2026", None, None)


def test_a_bad_monitor_section_fails_at_load_naming_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad_monitor.yaml"
    text = (REPO_ROOT / "include/mlloop/usecases/card_fraud.yaml").read_text()
    bad.write_text(text.replace("monitor:\n", "monitor:\n  drift_false_alarm_rat: 0.01\n", 1))
    with pytest.raises(
        ValueError, match=r"bad_monitor\.yaml is invalid: monitor: .*drift_false_alarm_rat"
    ) as error:
        load_use_case(str(bad))
    assert "valid settings are" in str(error.value)
