"""Retiring a use case: a dry run changes nothing; apply pauses, unaliases, archives, tags and audits, once.

The MLflow side is a real registry (a SQLite tracking store under tmp_path); the Airflow REST API is a
recording fake, since no Airflow API server runs in a unit test (tests/dags check the retire DAG itself).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mlloop.lifecycle.retire import RetirementError, read_retirement, retire
from mlloop.ops.airflow_api import AirflowAPIError
from mlloop.orchestration.names import dag_names
from mlloop.registry.champion import AUDIT_EXPERIMENT, audit_log, promote
from mlloop.registry.tags import (
    ARCHIVED,
    LEGAL_HOLD_TAG,
    LIFECYCLE_TAG,
    RETIRED_BY_TAG,
    RETIRED_REASON_TAG,
    RETIRED_TAG,
)

pytestmark = pytest.mark.unit

USE_CASE = "card_fraud"
MODEL = "fraud-detector-retire-test"
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


class RecordingAirflow:
    """The Airflow REST API's DAG endpoints as retiring uses them; records every pause."""

    def __init__(self, paused: dict[str, bool]) -> None:
        self.paused = dict(paused)
        self.calls: list[tuple[str, bool]] = []

    def get(self, path: str) -> dict[str, Any]:
        dag_id = path.removeprefix("/dags/")
        if dag_id not in self.paused:
            raise AirflowAPIError(f"GET /api/v2{path} -> HTTP 404: DAG not found", 404)
        return {"dag_id": dag_id, "is_paused": self.paused[dag_id]}

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.calls.append((dag_id, paused))
        self.paused[dag_id] = paused


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real registry with MODEL v1 (previous), v2 (champion), v3 (never promoted), each with artifacts."""
    from mlflow import MlflowClient

    from mlloop.config import get_settings

    monkeypatch.setenv("MLLOOP_MODEL_NAME", MODEL)
    monkeypatch.setenv("MLLOOP_USE_CASE", USE_CASE)
    get_settings.cache_clear()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # Artifacts under tmp_path (a SQLite store would put them in ./mlruns).
    client.create_experiment(AUDIT_EXPERIMENT, artifact_location=(tmp_path / "audit").as_uri())
    client.create_registered_model(MODEL)
    models = {}
    for version in ("1", "2", "3"):
        folder = tmp_path / "models" / f"v{version}"
        folder.mkdir(parents=True)
        (folder / "model.ubj").write_bytes(b"trees")
        client.create_model_version(MODEL, source=str(folder))
        models[version] = folder
    promote(client, MODEL, "1", actor="tests", reason="first", gate_report="none")
    promote(client, MODEL, "2", actor="tests", reason="better", gate_report="none")
    yield client, models
    get_settings.cache_clear()


def _airflow() -> RecordingAirflow:
    names = dag_names(USE_CASE)
    paused = {dag_id: False for dag_id in names.dags}
    paused[names.rollback] = True  # already paused: not paused again
    del paused[names.housekeeping]  # not registered in Airflow: nothing to pause, not an error
    return RecordingAirflow(paused)


def test_a_dry_run_changes_nothing_and_lists_every_step(registry) -> None:
    client, models = registry
    airflow = _airflow()
    before = client.get_registered_model(MODEL)

    result = retire(USE_CASE, "cli:alice", "replaced by card_fraud_v2", client=client, airflow=airflow)

    names = dag_names(USE_CASE)
    assert result["dry_run"] and not result["changed"]
    assert result["steps"] == [
        f"pause DAG {names.ingest}",
        f"pause DAG {names.train}",
        f"pause DAG {names.monitor}",
        f"tag {MODEL} {RETIRED_TAG} (the scoring service then answers 410 Gone)",
        "remove alias champion (v2)",
        "remove alias previous (v1)",
        "archive v1 (delete its model artifacts)",
        "archive v2 (delete its model artifacts)",
        "archive v3 (delete its model artifacts)",
        f"record the retirement in the audit trail of {MODEL}",
    ]
    assert result["unregistered_dags"] == [names.housekeeping]
    assert airflow.calls == []
    after = client.get_registered_model(MODEL)
    assert after.aliases == before.aliases  # a database-backed client returns int versions, REST strings
    assert {alias: str(v) for alias, v in after.aliases.items()} == {"champion": "2", "previous": "1"}
    assert RETIRED_TAG not in after.tags
    assert all(folder.exists() for folder in models.values())
    assert [r.action for r in audit_log(client, MODEL)] == ["promote", "promote"]


def test_apply_pauses_unaliases_archives_tags_and_audits_with_the_actor(registry) -> None:
    client, models = registry
    client.set_model_version_tag(MODEL, "3", LEGAL_HOLD_TAG, "true")
    airflow = _airflow()

    result = retire(USE_CASE, "cli:alice", "replaced", apply=True, client=client, airflow=airflow, now=NOW)

    names = dag_names(USE_CASE)
    assert result["changed"] and not result["dry_run"]
    # Every DAG of the use case that was running is paused, but not retire_<uc> (it may be this very run)
    # nor erase_<uc> (a data subject may still ask to be erased after the use case is retired).
    assert airflow.calls == [(names.ingest, True), (names.train, True), (names.monitor, True)]
    assert airflow.paused[names.retire] is False
    assert airflow.paused[names.erase] is False
    model = client.get_registered_model(MODEL)
    assert model.aliases == {}
    assert model.tags[RETIRED_TAG] == "2026-11-20T09:30:00+00:00"
    assert model.tags[RETIRED_BY_TAG] == "cli:alice"
    assert model.tags[RETIRED_REASON_TAG] == "replaced"
    for version in ("1", "2"):
        archived = client.get_model_version(MODEL, version)
        assert archived.tags[LIFECYCLE_TAG] == ARCHIVED
        assert "use case card_fraud retired: replaced" in archived.description
        assert not models[version].exists()
    held = client.get_model_version(MODEL, "3")
    assert LIFECYCLE_TAG not in held.tags and models["3"].exists()  # a legal hold keeps its artifacts
    assert result["legal_holds"] == ["3"]
    records = audit_log(client, MODEL)
    assert [r.action for r in records] == ["promote", "promote", "archive", "archive", "retire"]
    retirement = records[-1]
    assert retirement.actor == "cli:alice" and retirement.from_version == "2"
    assert retirement.reason == "use case card_fraud retired: replaced"
    assert "aliases removed: champion=v2, previous=v1" in retirement.evidence
    assert "kept under legal hold: v3" in retirement.evidence
    assert all(r.actor == "cli:alice" for r in records[2:])
    gone = read_retirement(client, MODEL)
    assert gone is not None and gone.actor == "cli:alice"
    assert "retired on 2026-11-20T09:30:00+00:00 by cli:alice (replaced)" in gone.gone_message(
        USE_CASE, MODEL
    )


def test_a_second_apply_changes_and_records_nothing(registry) -> None:
    client, _ = registry
    airflow = _airflow()
    retire(USE_CASE, "cli:alice", "replaced", apply=True, client=client, airflow=airflow, now=NOW)
    audited = len(audit_log(client, MODEL))
    airflow.calls.clear()

    again = retire(USE_CASE, "cli:bob", "again", apply=True, client=client, airflow=airflow)

    assert not again["changed"] and again["steps"] == []
    assert again["retirement"] == {
        "at": "2026-11-20T09:30:00+00:00",
        "actor": "cli:alice",
        "reason": "replaced",
    }
    assert airflow.calls == []
    assert len(audit_log(client, MODEL)) == audited


def test_an_apply_after_a_crash_finishes_what_is_left(registry) -> None:
    """A run that stopped after tagging the model leaves aliases and versions: the next apply completes it."""
    client, models = registry
    for key, value in ((RETIRED_BY_TAG, "cli:alice"), (RETIRED_REASON_TAG, "replaced")):
        client.set_registered_model_tag(MODEL, key, value)
    client.set_registered_model_tag(MODEL, RETIRED_TAG, "2026-11-19T08:00:00+00:00")

    result = retire(
        USE_CASE, "cli:bob", "other words", apply=True, client=client, airflow=_airflow(), now=NOW
    )

    assert result["retirement"]["at"] == "2026-11-19T08:00:00+00:00"  # the first retirement's record stays
    assert client.get_registered_model(MODEL).aliases == {}
    assert not any(folder.exists() for folder in models.values())
    assert audit_log(client, MODEL)[-1].action == "retire"


def test_a_use_case_without_a_registered_model_is_refused_naming_it(registry, monkeypatch) -> None:
    client, _ = registry
    from mlloop.config import get_settings

    monkeypatch.setenv("MLLOOP_MODEL_NAME", "never-trained")
    get_settings.cache_clear()
    with pytest.raises(RetirementError, match=r"no registered model 'never-trained'.*nothing to retire"):
        retire(USE_CASE, "cli:alice", apply=True, client=client, airflow=_airflow())


def test_an_undeclared_use_case_is_refused_naming_the_declared_ones(registry) -> None:
    client, _ = registry
    with pytest.raises(FileNotFoundError, match="card_fraud"):
        retire("no_such_use_case", "cli:alice", client=client, airflow=_airflow())


def test_without_an_airflow_password_the_error_names_the_setting(registry, monkeypatch) -> None:
    client, _ = registry
    from mlloop.config import get_settings

    monkeypatch.delenv("MLLOOP_AIRFLOW_PASSWORD", raising=False)
    get_settings.cache_clear()
    with pytest.raises(RetirementError, match="MLLOOP_AIRFLOW_PASSWORD is unset"):
        retire(USE_CASE, "cli:alice", client=client)
