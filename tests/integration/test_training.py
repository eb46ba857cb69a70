"""The training CLI on a real snapshot against a real MLflow server: registers once, reproducible."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlloop.data.generator import generate_day
from mlloop.ingestion.batches import land_batch, publish_validated, validate_landed_batch
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

DAYS = [date(2026, 11, 10) + timedelta(days=i) for i in range(4)]
ROWS = 15_000


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> tuple[str, str]:
    """Ingest four generated days and snapshot them with every label known; return (data root, digest)."""
    from mlloop.training.snapshot import create_snapshot

    root = tmp_path_factory.mktemp("training-data")
    storage = Storage(str(root))
    use_case = load_use_case("card_fraud")
    labels = []
    for day in DAYS:
        batch = land_batch(storage, use_case, day, rows=ROWS)
        validate_landed_batch(storage, use_case, batch)
        publish_validated(storage, use_case, batch, b"k" * 32)
        labels.append(generate_day(day, rows=ROWS, seed=use_case.source.seed).labels)
    manifest = create_snapshot(
        storage, use_case, DAYS, labels=pd.concat(labels), as_of=datetime(2027, 1, 1, tzinfo=UTC)
    )
    return str(root), manifest.digest


@pytest.fixture
def configured(snapshot, registry_env: str, mlloop_env) -> str:
    mlloop_env(data_root=snapshot[0])
    return snapshot[1]


def test_train_registers_once_per_dag_run_and_reproduces(
    configured: str, client, model_name: str, tmp_path: Path
) -> None:
    from mlloop.training.train import main

    result_path = tmp_path / "result.json"
    assert main(["--snapshot", configured, "--dag-run-id", "dr-1", "--result-path", str(result_path)]) == 0
    import json

    first = json.loads(result_path.read_text())
    assert first["version"] == "1" and first["snapshot"] == configured
    assert first["metrics"]["pr_auc"] > 0.05 and first["metrics"]["roc_auc"] > 0.7
    version = client.get_model_version(model_name, "1")
    assert version.tags["mlloop.snapshot_digest"] == configured
    assert version.tags["mlloop.dag_run_id"] == "dr-1"
    run = client.get_run(first["run_id"])
    assert run.data.metrics["holdout_pr_auc"] == pytest.approx(first["metrics"]["pr_auc"])
    artifacts = {a.path for a in client.list_artifacts(first["run_id"], "plots")}
    assert {
        "plots/pr_curve.png",
        "plots/calibration.png",
        "plots/feature_importance.png",
        "plots/confusion_matrix.png",
    } <= artifacts

    # A retried task (same DAG run id) trains again but registers nothing new; metrics are identical.
    assert main(["--snapshot", configured, "--dag-run-id", "dr-1", "--result-path", str(result_path)]) == 0
    retried = json.loads(result_path.read_text())
    assert retried["version"] == "1"
    assert retried["metrics"] == first["metrics"]
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1

    assert main(["--snapshot", configured, "--dag-run-id", "dr-2", "--result-path", str(result_path)]) == 0
    assert json.loads(result_path.read_text())["version"] == "2"


def test_unknown_snapshot_names_the_problem(configured: str, tmp_path: Path) -> None:
    from mlloop.training.train import main

    with pytest.raises(Exception, match="0" * 8):
        main(["--snapshot", "0" * 64, "--result-path", str(tmp_path / "r.json")])
