"""Housekeeping against a real MLflow server, a real data root and Airflow's real CLI: archival by rule and
its refusals, the retention run keeping the champion's lineage, MLflow run cleanup, `airflow db clean`, and
the housekeeping_<use case> DAG run for real (dag.test)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from mlloop.lifecycle.__main__ import main as housekeeping_main
from mlloop.lifecycle.cleanup import MetadataDbUnavailable, clean_airflow_metadata
from mlloop.lifecycle.versions import archive_versions
from mlloop.registry import (
    CHAMPION,
    PREVIOUS,
    PromotionError,
    audit_log,
    promote,
    register_version,
    reject,
    rollback,
)
from mlloop.registry.tags import LIFECYCLE_REASON_TAG, LIFECYCLE_TAG, SNAPSHOT_DIGEST_TAG
from mlloop.storage import Storage
from mlloop.usecase import RetentionSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-06-30"
CHAMPION_DIGEST = "a" * 64  # trained on 2026-03-01 (labels known 2026-03-05)
OLD_DIGEST = "c" * 64
RETENTION = {
    "raw": {"days": 100},
    "quarantine": {"days": 30},
    "validated": {"days": 100},
    "labels": {"days": 100},
    "inference": {"days": 30},
    "snapshots": {"count": 1},
    "reports": {"days": 60},
    "legal_holds": ["raw/transactions/date=2026-01-20"],
    "mlflow_runs_days": 180,
    "airflow_metadata_days": 90,
}


@pytest.mark.slow  # 28-45 s on the shared 2-core machine: five versions, four promotions, two archivals
def test_rules_archive_rejected_and_superseded_versions_which_cannot_be_served_again(
    client, registry_env: str, new_version
) -> None:
    name = registry_env
    versions = [new_version(name, f"run-{i}").version for i in range(5)]
    reject(client, name, versions[0], actor="test", reason="gate failed", gate_report="r0")
    for version in versions[1:5]:  # champion v5, previous v4; v2 superseded by 3 promotions, v3 by 2
        promote(client, name, version, actor="test", reason="passed", gate_report="r")
    created = client.get_model_version(name, versions[-1]).creation_timestamp
    now = datetime.fromtimestamp(created / 1000, UTC) + timedelta(days=31)

    listed = archive_versions(client, name, RetentionSpec(), now, actor="test", dry_run=True)
    assert [d["version"] for d in listed] == [versions[0], versions[1]]
    assert LIFECYCLE_TAG not in client.get_model_version(name, versions[0]).tags

    done = archive_versions(client, name, RetentionSpec(), now, actor="housekeeper", dry_run=False)
    assert done == listed
    rejected, superseded = (client.get_model_version(name, v) for v in versions[:2])
    assert rejected.tags[LIFECYCLE_TAG] == superseded.tags[LIFECYCLE_TAG] == "archived"
    assert (
        "rejected (gate not run, decision rejected) and registered 31 days ago"
        in rejected.tags[LIFECYCLE_REASON_TAG]
    )
    assert (
        f"superseded by 3 later promotions (v{versions[2]}, v{versions[3]}, v{versions[4]})"
        in superseded.tags[LIFECYCLE_REASON_TAG]
    )
    assert superseded.description.startswith(f"ARCHIVED on {now.date()}") and superseded.description.endswith(
        "test"
    )
    for version in (rejected, superseded):  # the model's files are gone, the run and its metrics stay
        assert client.list_artifacts(version.run_id, "model") == []
        assert client.get_run(version.run_id).info.lifecycle_stage == "active"
    assert [(r.action, r.to_version, r.actor) for r in audit_log(client, name)[-2:]] == [
        ("archive", versions[0], "housekeeper"),
        ("archive", versions[1], "housekeeper"),
    ]
    assert client.list_artifacts(client.get_model_version(name, versions[2]).run_id, "model") != []

    with pytest.raises(PromotionError, match=rf"v{versions[1]} is archived \(superseded by 3"):
        promote(client, name, versions[1], actor="test", reason="again", gate_report="r")
    with pytest.raises(PromotionError, match="cannot be the target of a rollback"):
        rollback(client, name, versions[1], actor="test", reason="back", force=True)
    assert client.get_model_version_by_alias(name, CHAMPION).version == versions[4]
    assert client.get_model_version_by_alias(name, PREVIOUS).version == versions[3]
    assert archive_versions(client, name, RetentionSpec(), now, actor="test", dry_run=False) == []


@pytest.fixture
def housekept(tmp_path: Path, mlloop_env, registry_env: str, data_root: Path, client) -> dict:
    """card_fraud with RETENTION in its own use-case folder, a seeded data root, and a champion on it."""
    folder = tmp_path / "usecases"
    folder.mkdir()
    declaration = yaml.safe_load((REPO_ROOT / "include/mlloop/usecases/card_fraud.yaml").read_text())
    declaration["retention"] = RETENTION
    (folder / "card_fraud.yaml").write_text(yaml.safe_dump(declaration, sort_keys=False))
    mlloop_env(usecases_dir=folder, use_case="card_fraud")
    storage = Storage(str(data_root))
    for day in ("2026-01-20", "2026-02-10", "2026-03-01", "2026-06-29"):
        for zone in ("raw", "validated", "labels", "inference", "quarantine"):
            storage.write_bytes(f"{zone}/transactions/date={day}/b1.parquet", b"p" * 10)
    for digest, as_of, days in (
        (CHAMPION_DIGEST, "2026-03-05", ["2026-03-01"]),
        (OLD_DIGEST, "2026-02-11", ["2026-02-10"]),
    ):
        storage.write_bytes(f"snapshots/{digest}/data.parquet", b"x")
        sources = [{"day": d, "key": f"validated/transactions/date={d}/b1.parquet"} for d in days]
        storage.write_json(
            f"snapshots/{digest}/manifest.json",
            {
                "use_case": "card_fraud",
                "as_of": f"{as_of}T00:00:00+00:00",
                "days": days,
                "source_partitions": sources,
            },
        )
    runs = _training_runs(client, registry_env)
    promote(client, registry_env, runs["version"], actor="test", reason="champion", gate_report="r")
    return {"storage": storage, "model": registry_env, **runs}


def _training_runs(client, model: str) -> dict:
    """Two old runs in the use case's training experiment: one a version uses, one nobody uses."""
    experiment = client.get_experiment_by_name("card_fraud")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("card_fraud")
    old = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)
    used, unused = (client.create_run(experiment_id, start_time=old) for _ in range(2))
    for run in (used, unused):
        client.log_text(run.info.run_id, "{}", "model/model.json")
        client.set_terminated(run.info.run_id)
    version = register_version(
        client, model, source=f"{used.info.artifact_uri}/model", run_id=used.info.run_id,
        tags={"mlloop.dag_run_id": used.info.run_id, SNAPSHOT_DIGEST_TAG: CHAMPION_DIGEST},
        description="champion", idempotency_tag="mlloop.dag_run_id",
    )  # fmt: skip
    return {"version": version.version, "used_run": used.info.run_id, "unused_run": unused.info.run_id}


def test_housekeeping_dry_run_reports_then_apply_deletes_and_keeps_the_champions_lineage(
    housekept: dict, client, capsys
) -> None:
    storage: Storage = housekept["storage"]
    before = set(storage.list(""))
    assert housekeeping_main(["--day", DAY, "--skip-airflow-db"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (
        summary["dry_run"] is True
        and summary["mlflow_runs"]["stale_runs"].count(housekept["unused_run"]) == 1
    )
    report = storage.read_json(summary["retention"]["report"])
    expired = {d["key"] for d in report["expired"]}
    assert set(storage.list("")) - before == {
        storage.key(summary["retention"]["report"]),
        storage.key(summary["retention"]["report"]).replace(".json", ".txt"),
    }
    # 100 days: 01-20 (legal hold on raw), 02-10, 03-01 (the champion's day) are old; 30 days: all but 06-29.
    assert expired == {
        "validated/transactions/date=2026-01-20/b1.parquet",
        "labels/transactions/date=2026-01-20/b1.parquet",
        "raw/transactions/date=2026-02-10/b1.parquet",
        "validated/transactions/date=2026-02-10/b1.parquet",
        "labels/transactions/date=2026-02-10/b1.parquet",
        *(
            f"{z}/transactions/date={d}/b1.parquet"
            for z in ("inference", "quarantine")
            for d in ("2026-01-20", "2026-02-10", "2026-03-01")
        ),
        f"snapshots/{OLD_DIGEST}/data.parquet",
        f"snapshots/{OLD_DIGEST}/manifest.json",
    }
    assert client.get_run(housekept["unused_run"]).info.lifecycle_stage == "active"  # a dry run

    assert housekeeping_main(["--day", DAY, "--skip-airflow-db", "--apply"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["retention_applied"]["deleted"] == len(expired)
    assert not any(storage.exists(key) for key in expired)
    kept = [
        "raw/transactions/date=2026-01-20/b1.parquet",  # legal hold
        *(f"{zone}/transactions/date=2026-03-01/b1.parquet" for zone in ("raw", "validated", "labels")),
        f"snapshots/{CHAMPION_DIGEST}/manifest.json",
        "inference/transactions/date=2026-06-29/b1.parquet",
    ]
    for key in kept:
        assert storage.exists(key), key
    assert client.get_run(housekept["unused_run"]).info.lifecycle_stage == "deleted"
    assert client.list_artifacts(housekept["unused_run"]) == []
    assert client.get_run(housekept["used_run"]).info.lifecycle_stage == "active"
    assert client.list_artifacts(housekept["used_run"], "model") != []


def test_airflow_db_clean_runs_on_the_metadata_db_and_a_task_without_its_url_is_told_how(
    airflow_db, monkeypatch, mlloop_env
) -> None:
    before = datetime(2026, 1, 1, tzinfo=UTC)
    result = clean_airflow_metadata(before, dry_run=True)
    assert "dag_run" in result["output_tail"], result
    assert clean_airflow_metadata(before, dry_run=False)["dry_run"] is False

    url = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "airflow-db-not-allowed:///")
    with pytest.raises(MetadataDbUnavailable, match="Set MLLOOP_AIRFLOW_DB_URL"):
        clean_airflow_metadata(before, dry_run=True)
    mlloop_env(airflow_db_url=url)
    assert clean_airflow_metadata(before, dry_run=True)["dry_run"] is True


@pytest.mark.slow  # about 35 s: two dag.test runs of six tasks
def test_the_housekeeping_dag_is_a_dry_run_by_default_and_applies_when_asked(
    housekept: dict, load_dag
) -> None:
    storage: Storage = housekept["storage"]
    dag = load_dag("housekeeping_card_fraud")
    before = set(storage.list("raw"))

    dag_run = dag.test(logical_date=datetime(2031, 6, 1, tzinfo=UTC), run_conf={"day": DAY})
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert states == {
        "resolve_mode": "success",
        "plan_retention": "success",
        "apply_retention": "skipped",
        "archive_versions": "success",
        "clean_mlflow_runs": "success",
        "clean_airflow_metadata": "success",
    }
    assert set(storage.list("raw")) == before

    dag_run = dag.test(logical_date=datetime(2031, 6, 2, tzinfo=UTC), run_conf={"day": DAY, "dry_run": False})
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert str(dag_run.state) == "success", states
    assert before - set(storage.list("raw")) == {"raw/transactions/date=2026-02-10/b1.parquet"}


def test_a_rollback_run_audits_the_user_who_triggered_it(
    load_dag, registry_env: str, client, new_version
) -> None:
    name = registry_env
    first, second = new_version(name, "a").version, new_version(name, "b").version
    promote(client, name, first, actor="test", reason="first", gate_report="r1")
    promote(client, name, second, actor="test", reason="second", gate_report="r2")

    dag_run = load_dag("rollback_card_fraud").test(
        logical_date=datetime(2031, 7, 1, tzinfo=UTC), run_conf={"reason": "audit names the user"}
    )

    assert str(dag_run.state) == "success"
    record = audit_log(client, name)[-1]
    assert (record.action, record.reason) == ("rollback", "audit names the user")
    assert record.actor == f"airflow:{dag_run.run_id} by dag_test"  # dag.test's triggering user


@pytest.mark.parametrize("knows_its_model_id", [True, False])
def test_a_trained_versions_files_are_deleted_through_the_tracking_server(
    client, model_name: str, tmp_path: Path, knows_its_model_id: bool
) -> None:
    """A version registered from an MLflow 3 logged model (source ``models:/m-...``), as training does.

    The server proxies the artifacts; a version read back may not carry its ``model_id``, only the source.
    """
    from types import SimpleNamespace

    from mlloop.lifecycle.versions import delete_model_artifacts

    experiment = client.get_experiment_by_name("registry-tests")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("registry-tests")
    run = client.create_run(experiment_id)
    logged = client.create_logged_model(experiment_id=experiment_id, source_run_id=run.info.run_id)
    files = tmp_path / "model"
    files.mkdir()
    (files / "model.json").write_text("{}")
    client.log_model_artifacts(logged.model_id, str(files))
    client.finalize_logged_model(logged.model_id, "READY")
    client.create_registered_model(model_name)
    version = client.create_model_version(
        model_name, source=f"models:/{logged.model_id}", run_id=run.info.run_id, model_id=logged.model_id
    )
    assert [a.path for a in client.list_logged_model_artifacts(logged.model_id)] == ["model.json"]
    read_back = client.get_model_version(model_name, version.version)
    if not knows_its_model_id:
        read_back = SimpleNamespace(
            name=model_name, version=read_back.version, source=read_back.source, model_id=None
        )

    delete_model_artifacts(client, read_back)

    assert client.list_logged_model_artifacts(logged.model_id) == []
