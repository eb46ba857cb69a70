"""The train_<use case> DAG run for real (dag.test) on ingested days, against a real MLflow server."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from mlloop.ingestion.batches import land_batch, publish_validated, validate_landed_batch
from mlloop.registry import CHAMPION, audit_log
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

DAYS = [date(2026, 11, 1) + timedelta(days=i) for i in range(4)]
_dates = iter(range(10_000))


@pytest.fixture(scope="module")
def train_dag(load_dag):
    return load_dag("train_card_fraud")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("train-dag-data")
    storage, use_case = Storage(str(root)), load_use_case("card_fraud")
    for day in DAYS:
        batch = land_batch(storage, use_case, day, rows=12_000)
        validate_landed_batch(storage, use_case, batch)
        publish_validated(storage, use_case, batch, b"k" * 32)
    return str(root)


@pytest.fixture
def configured(ingested: str, registry_env: str, mlloop_env) -> str:
    mlloop_env(data_root=ingested)
    return registry_env


def _run(dag, **conf):
    logical = datetime(2032, 1, 1, tzinfo=UTC) + timedelta(days=next(_dates))
    dag_run = dag.test(logical_date=logical, run_conf=conf)
    return dag_run, {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def test_first_model_is_promoted_a_worse_one_rejected_an_equal_one_promoted(
    train_dag, configured: str, client, asset_events
) -> None:
    """Default gate thresholds throughout; the worse challenger is worse because it saw less data."""
    name = configured
    first = {"window_days": 3, "end_day": DAYS[2].isoformat()}
    dag_run, states = _run(train_dag, **first)
    assert str(dag_run.state) == "success", states
    assert states["promote"] == "success" and states["reject"] == "skipped", states
    assert client.get_model_version_by_alias(name, CHAMPION).version == "1"
    version = client.get_model_version(name, "1")
    assert version.tags["mlloop.gate.verdict"] == "passed"
    assert {a.path for a in client.list_artifacts(version.run_id, "gate")} >= {
        "gate/gate_report.json",
        "gate/gate_report.md",
    }
    assert asset_events(dag_run, "champion_model_card_fraud") == [
        {
            "model": name,
            "version": "1",
            "previous": None,
            "gate_report": f"runs:/{version.run_id}/gate/gate_report.md",
        }
    ]

    # One day of training data instead of three, judged on the newest day's holdout.
    dag_run, states = _run(train_dag, window_days=1, end_day=DAYS[3].isoformat())
    assert str(dag_run.state) == "success", states
    assert states["reject"] == "success" and states["promote"] == "skipped", states
    rejected = client.get_model_version(name, "2")
    assert rejected.tags["mlloop.gate.decision"] == "rejected"
    report = client.download_artifacts(rejected.run_id, "gate/gate_report.json")
    failed = json.loads(Path(report).read_text())["failed_rules"]
    assert failed and all(rule in rejected.tags["mlloop.gate.reason"] for rule in failed), failed
    assert "non_inferiority" in failed, failed
    assert client.get_model_version_by_alias(name, CHAMPION).version == "1"
    assert asset_events(dag_run, "champion_model_card_fraud") == []

    # The champion's window and seed again: an equal model passes non-inferiority and the slices.
    dag_run, states = _run(train_dag, **first)
    assert str(dag_run.state) == "success", states
    third = client.get_model_version(name, "3")
    report = Path(client.download_artifacts(third.run_id, "gate/gate_report.md")).read_text()
    assert client.get_model_version_by_alias(name, CHAMPION).version == "3", report
    assert client.get_model_version_by_alias(name, "previous").version == "1"
    assert [(r.action, r.to_version) for r in audit_log(client, name)] == [
        ("promote", "1"),
        ("reject", "2"),
        ("promote", "3"),
    ]
    assert [e["version"] for e in asset_events(dag_run, "champion_model_card_fraud")] == ["3"]
