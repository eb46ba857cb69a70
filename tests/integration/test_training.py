"""The training CLI on a real snapshot and a real MLflow server: registers once, reproducible, both models."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from generated_snapshot import snapshot_generated_days

from mlloop.promotion import ScoredModel
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

DAYS = [date(2026, 11, 10) + timedelta(days=i) for i in range(4)]
ROWS = 15_000


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> tuple[str, str]:
    """Ingest four generated days and snapshot them with every label known; return (data root, digest)."""
    root = tmp_path_factory.mktemp("training-data")
    return str(root), snapshot_generated_days(root, load_use_case("card_fraud"), DAYS, ROWS)


@pytest.fixture
def configured(snapshot, registry_env: str, mlloop_env) -> str:
    mlloop_env(data_root=snapshot[0])
    return snapshot[1]


def reloaded(model_uri: str, digest: str, tracking_uri: str) -> tuple[ScoredModel, pd.DataFrame, np.ndarray]:
    """Load a registered model with ``load_model`` and score the snapshot's holdout as the gate does."""
    import mlflow

    from mlloop.training.fit import TrainConfig, load_training_data
    from mlloop.training.model_io import load_model, score_model

    mlflow.set_tracking_uri(tracking_uri)
    data = load_training_data(Storage.from_settings(), TrainConfig(snapshot=digest))
    x_holdout, y_holdout = data.parts["holdout"]
    return score_model(model_uri, load_model(model_uri), x_holdout), x_holdout, y_holdout


def assert_calibrated(model_uri: str, run) -> None:
    """The registered model loads with the map its run fitted, and the run logged calibration before/after."""
    from mlloop.training.model_io import load_model

    calibration = load_model(model_uri).calibration
    assert calibration.fitted and calibration.slope == pytest.approx(
        float(run.data.params["calibration_slope"])
    )
    metrics = run.data.metrics
    assert {"holdout_ece", "holdout_ece_raw", "holdout_brier", "holdout_brier_raw"} <= set(metrics)


def test_train_registers_once_per_dag_run_and_reproduces(
    configured: str, client, model_name: str, mlflow_server: str, tmp_path: Path
) -> None:
    from mlloop.promotion import pr_auc
    from mlloop.training.train import main

    result_path = tmp_path / "result.json"
    assert main(["--snapshot", configured, "--dag-run-id", "dr-1", "--result-path", str(result_path)]) == 0
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
    importance = json.loads(Path(client.download_artifacts(first["run_id"], "importance.json")).read_text())
    ranked = list(importance["importance"].values())
    assert importance["kind"] and ranked == sorted(ranked, reverse=True) and len(ranked) > 5
    scored, _, y_holdout = reloaded(f"models:/{model_name}/1", configured, mlflow_server)
    assert pr_auc(y_holdout, scored.scores) == pytest.approx(run.data.metrics["holdout_pr_auc"], abs=1e-9)
    assert scored.size_mb == pytest.approx(first["model_size_mb"])
    assert_calibrated(f"models:/{model_name}/1", run)
    # Class weighting inflates XGBoost's raw scores several-fold; the calibrated ones are probabilities.
    assert run.data.metrics["holdout_ece"] < run.data.metrics["holdout_ece_raw"] / 2

    # A retried task (same DAG run id) trains again but registers nothing new; metrics are identical.
    assert main(["--snapshot", configured, "--dag-run-id", "dr-1", "--result-path", str(result_path)]) == 0
    retried = json.loads(result_path.read_text())
    assert retried["version"] == "1"
    assert retried["metrics"] == first["metrics"]
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1

    assert main(["--snapshot", configured, "--dag-run-id", "dr-2", "--result-path", str(result_path)]) == 0
    assert json.loads(result_path.read_text())["version"] == "2"


def test_torch_model_registers_and_reloads_to_the_same_holdout_scores(
    configured: str, client, model_name: str, mlflow_server: str, tmp_path: Path
) -> None:
    import json

    import mlflow

    from mlloop.promotion import pr_auc
    from mlloop.training.model_io import serving_frame
    from mlloop.training.train import main

    result_path = tmp_path / "result.json"
    argv = ["--snapshot", configured, "--model", "torch", "--dag-run-id", "dr-torch"]
    assert main([*argv, "--result-path", str(result_path)]) == 0
    result = json.loads(result_path.read_text())
    assert result["version"] == "1" and result["model"] == "torch" and result["device"] == "cpu"
    assert result["metrics"]["pr_auc"] > 0.05 and result["metrics"]["roc_auc"] > 0.7
    version = client.get_model_version(model_name, "1")
    assert version.tags["mlloop.snapshot_digest"] == configured
    assert version.tags["mlloop.dag_run_id"] == "dr-torch"
    assert version.tags["mlloop.model_type"] == "torch"
    run = client.get_run(result["run_id"])
    assert int(run.data.params["best_epoch"]) >= 1 and "max_rounds" not in run.data.params
    assert "plots/feature_importance.png" in {
        a.path for a in client.list_artifacts(result["run_id"], "plots")
    }

    # The registered version reloads (weights only, no logged code run) to the run's holdout scores.
    model_uri = f"models:/{model_name}/1"
    scored, x_holdout, y_holdout = reloaded(model_uri, configured, mlflow_server)
    assert pr_auc(y_holdout, scored.scores) == pytest.approx(run.data.metrics["holdout_pr_auc"], abs=1e-9)
    assert scored.size_mb == pytest.approx(result["model_size_mb"])
    assert_calibrated(model_uri, run)

    # The logged model holds no pickle, and MLflow's own pyfunc (models from code) scores the same.
    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "model")))
    assert not [p for p in local.rglob("*") if p.suffix in {".pkl", ".pickle"}]
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    rows = x_holdout.head(200)
    np.testing.assert_allclose(pyfunc.predict(serving_frame(rows)), scored.scores[:200], rtol=1e-6)


def test_unknown_snapshot_names_the_problem(configured: str, tmp_path: Path) -> None:
    from mlloop.training.train import main

    with pytest.raises(Exception, match="0" * 8):
        main(["--snapshot", "0" * 64, "--result-path", str(tmp_path / "r.json")])
