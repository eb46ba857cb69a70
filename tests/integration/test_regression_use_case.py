"""A regression use case runs the whole loop (issue 16, item 4): ``task: regression`` end to end.

``parcel_eta`` predicts how many minutes a parcel's delivery takes (distance, stops, weight, depot), declared
with its two GX suites in temporary folders and fed by a ``files`` source whose labels (the minutes) arrive
hours after each parcel. Its DAGs run for real with ``dag.test()``: ingest each day, train XGBoost on a
manual window (train, gate against predicting the training mean, promote), monitor a later clean day (decay
judged on RMSE), then the scoring service answers one request with the predicted minutes. Real GX, a real
MLflow server and real XGBoost throughout; dates are fixed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from usecase_helpers import (
    deliver,
    deployed,
    dtype,
    of_type,
    run_dag,
    serve_one,
    suite,
    text,
    write_suites,
    xcom,
)

from mlloop.orchestration.names import dag_names
from mlloop.registry import CHAMPION
from mlloop.storage import Storage

NAME = "parcel_eta"
DATASET = "parcel_deliveries"
MODEL_NAME = "parcel-eta-regressor"
DEPOTS = ["north", "south", "east"]
ROWS_PER_DAY = 3000
WINDOW_DAYS = 4
# After the DAGs' start_date (2026-11-01): an earlier logical date runs no task.
TRAIN_DAYS = [date(2026, 11, 9) + timedelta(days=i) for i in range(WINDOW_DAYS)]
MONITORED_DAY = TRAIN_DAYS[-1] + timedelta(days=1)
TRAIN_RUN_AT = datetime.combine(TRAIN_DAYS[-1] + timedelta(days=3), datetime.min.time(), UTC)
MONITOR_RUN_AT = datetime.combine(MONITORED_DAY + timedelta(days=2), datetime.min.time(), UTC)
PII_KEY = "regression-use-case-pii-key-0123456789"
NUMERIC = ["distance_km", "stops", "weight_kg"]


def _declaration(inbox: Path) -> dict:
    """Return parcel_eta's declaration: a numeric target, task regression, a min_positives it must ignore."""
    return {
        "name": NAME,
        "description": "Minutes from pick-up to delivery of a parcel.",
        "dataset": DATASET,
        "key_column": "parcel_id",
        "time_column": "event_time",
        "target_column": "minutes",
        "task": "regression",
        "schema": {
            "parcel_id": "string",
            "event_time": "datetime",
            "depot": "string",
            "distance_km": "float",
            "stops": "float",
            "weight_kg": "float",
        },
        "suites": {"raw": "parcel_deliveries_raw", "features": "parcel_deliveries_features"},
        "model_name": MODEL_NAME,
        "label_maturity_days": 1,
        # min_positives means nothing for a numeric target: set absurdly high, it must not stop training.
        "training": {"window_days": WINDOW_DAYS, "min_rows": 5000, "min_positives": 10**9},
        "features": {"version": "1", "numeric": NUMERIC, "categorical": {"depot": DEPOTS}},
        "source": {"kind": "files", "uri": str(inbox)},
        "gate": {"slice_columns": ["depot"]},
    }


def _write_suites(folder: Path) -> None:
    """Write parcel_eta's raw and feature suites beside the bundled ones."""
    floats = [dtype(c, "float64") for c in NUMERIC]
    ranges = {"distance_km": (0, 500), "stops": (0, 100), "weight_kg": (0, 100)}
    raw = suite(
        "parcel_deliveries_raw",
        ["parcel_id", "event_time", "depot", *NUMERIC],
        [text("parcel_id"), of_type("event_time", "Timestamp"), text("depot"), *floats],
        ranges, ("depot", DEPOTS), "parcel_id",
    )  # fmt: skip
    features = suite(
        "parcel_deliveries_features",
        ["parcel_id", "event_time", *NUMERIC, "depot"],
        [text("parcel_id"), of_type("event_time", "Timestamp"), *floats,
         of_type("depot", "CategoricalDtypeType")],
        ranges, ("depot", [*DEPOTS, "__unknown__"]), "parcel_id",
    )  # fmt: skip
    write_suites(folder, raw, features)


def _deliver(inbox: Path, day: date, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Write one day's parcels and their delivery minutes (known hours later); return both.

    Minutes grow with distance and stops (and a little at the east depot), with noise, so a model has
    real skill over predicting the mean.
    """
    rng = np.random.default_rng([seed, day.toordinal()])
    n = ROWS_PER_DAY
    seconds = np.sort(rng.integers(0, 86_400, n))
    depot = rng.choice(DEPOTS, size=n, p=[0.4, 0.35, 0.25])
    distance = rng.gamma(3.0, 4.0, n)
    stops = rng.poisson(6, n).astype(np.float64)
    weight = rng.gamma(2.0, 2.0, n)
    minutes = 10 + 2.0 * distance + 3.0 * stops + 6.0 * (depot == "east") + rng.normal(0, 6.0, n)
    parcels = pd.DataFrame(
        {
            "parcel_id": [f"{day:%Y%m%d}-{i:05d}" for i in range(n)],
            "event_time": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(seconds, unit="s"),
            "depot": depot.astype(object),
            "distance_km": distance.round(2),
            "stops": stops,
            "weight_kg": weight.round(2),
        }
    )
    delay = np.minimum(rng.exponential(3 * 3600.0, n), 20 * 3600.0).round()
    labels = pd.DataFrame(
        {
            "parcel_id": parcels["parcel_id"],
            "minutes": minutes.round(1),
            "label_time": parcels["event_time"] + pd.to_timedelta(delay, unit="s"),
        }
    )
    deliver(inbox, DATASET, day, parcels, labels)
    return parcels, labels["minutes"].to_numpy()


@dataclass(frozen=True)
class Deployment:
    """The temporary deployment: its data root, the MLflow server, the monitored day and its minutes."""

    data_root: Path
    tracking_uri: str
    monitored: pd.DataFrame
    minutes: np.ndarray


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, mlflow_server: str, airflow_db) -> Deployment:
    """Declare parcel_eta alone in a use-case folder, deliver its days, point MLLOOP_* at them."""

    root = tmp_path_factory.mktemp("regression-use-case")
    usecases, expectations, inbox = root / "usecases", root / "expectations", root / "inbox"
    for folder in (usecases, expectations, inbox):
        folder.mkdir()
    (usecases / f"{NAME}.yaml").write_text(yaml.safe_dump(_declaration(inbox), sort_keys=False))
    _write_suites(expectations)
    for day in TRAIN_DAYS:
        _deliver(inbox, day, seed=11)
    monitored, minutes = _deliver(inbox, MONITORED_DAY, seed=11)

    with deployed(root, mlflow_server, PII_KEY):
        yield Deployment(root / "data", mlflow_server, monitored, minutes)


def test_a_regression_use_case_runs_the_whole_loop(deployment: Deployment, load_dag) -> None:
    from mlflow import MlflowClient

    names = dag_names(NAME)
    # 1. Ingest every delivered day; its numeric labels pass the label feed's checks.
    ingest = load_dag(names.ingest)
    for day in [*TRAIN_DAYS, MONITORED_DAY]:
        run_at = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
        dag_run, states = run_dag(ingest, run_at, day=day.isoformat(), start_training=True)
        assert str(dag_run.state) == "success", (day, states)
        assert states["land_labels"] == "success", states

    # 2. Train on the window: an XGBoost regressor, gated against predicting the training mean, promoted.
    train = load_dag(names.train)
    form = {
        "window_days": WINDOW_DAYS, "end_day": TRAIN_DAYS[-1].isoformat(), "model": "xgboost",
        "backend": "local", "seed": 42, "gate_overrides": {}, "approval_required": False,
    }  # fmt: skip
    dag_run, states = run_dag(train, TRAIN_RUN_AT, **form)
    assert str(dag_run.state) == "success", states
    assert states["promote"] == "success" and states["reject"] == "skipped", states
    client = MlflowClient(tracking_uri=deployment.tracking_uri, registry_uri=deployment.tracking_uri)
    first = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert first.version == "1" and first.tags["mlloop.gate.verdict"] == "passed", first.tags
    run = client.get_run(first.run_id)
    metrics = run.data.metrics
    assert metrics["holdout_rmse_lower"] < metrics["holdout_rmse"] < metrics["holdout_rmse_upper"]
    assert metrics["holdout_rmse_upper"] < metrics["holdout_no_skill_rmse"], metrics
    assert metrics["holdout_mae_lower"] < metrics["holdout_mae"] < metrics["holdout_mae_upper"]
    assert "holdout_pr_auc" not in metrics and "holdout_brier" not in metrics, metrics
    assert run.data.params["calibration"].startswith("skipped"), run.data.params
    gate = json.loads(Path(client.download_artifacts(first.run_id, "gate/gate_report.json")).read_text())
    rules = {rule["name"]: rule for rule in gate["rules"]}
    assert rules["skill_rmse"]["passed"] and rules["operating_point"]["comparison"] == "n/a", rules

    # The same window again: judged against the champion on paired squared error and per depot.
    dag_run, states = run_dag(train, TRAIN_RUN_AT + timedelta(hours=1), **form)
    assert str(dag_run.state) == "success" and states["promote"] == "success", states
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert champion.version == "2", champion
    gate = json.loads(Path(client.download_artifacts(champion.run_id, "gate/gate_report.json")).read_text())
    assert gate["champion"] and gate["failed_rules"] == [] and gate["metric"] == "rmse", gate
    assert {"non_inferiority", "slice_no_regression.depot"} <= {rule["name"] for rule in gate["rules"]}
    assert {(s["column"], s["value"], s["status"]) for s in gate["slices"]} == {
        ("depot", depot, "ok") for depot in DEPOTS
    }, gate["slices"]

    # 3. Monitor a later clean day: decay is judged on RMSE, quietly; label shift and CBPE say why not.
    monitor = load_dag(names.monitor)
    dag_run, states = run_dag(
        monitor, MONITOR_RUN_AT, window_days=1, end_day=MONITORED_DAY.isoformat(), dry_run=False, overrides={}
    )
    assert str(dag_run.state) == "success", states
    summary = xcom(dag_run, "check")
    assert summary["action"] == "quiet" and summary["fired_rules"] == [], summary
    assert summary["figures"]["rmse"] > 0 and summary["figures"]["labelled_rows"] == ROWS_PER_DAY, summary
    storage = Storage(str(deployment.data_root))
    record = storage.read_json(storage.key(summary["record"]))
    rules = {rule["rule"]: rule for rule in record["decision"]["rules"]}
    assert rules["performance_decay"]["figures"]["metric"] == "rmse", rules["performance_decay"]
    assert "regression" in rules["performance_estimate"]["detail"], rules["performance_estimate"]

    # 4. One request: the answer is the predicted minutes, with no threshold and no decision.
    parcel = deployment.monitored.iloc[0]
    row = {
        "parcel_id": "serve-00001",
        "event_time": (parcel["event_time"] + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "depot": parcel["depot"],
        **{column: float(parcel[column]) for column in NUMERIC},
    }
    _, body, metrics = serve_one(NAME, row)
    assert (body["model_name"], body["model_version"]) == (MODEL_NAME, "2"), body
    assert "threshold" not in body and set(body["prediction"]) == {"parcel_id", "prediction"}, body
    minutes = body["prediction"]["prediction"]
    assert isinstance(minutes, float) and math.isfinite(minutes), body
    assert deployment.minutes.min() <= minutes <= deployment.minutes.max(), (minutes, body)
    # Its metric is the predicted minutes, not a 0..1 score histogram.
    assert f'mlloop_prediction_count{{use_case="{NAME}"}} 1.0' in metrics, metrics
    assert f'mlloop_score_count{{use_case="{NAME}"}}' not in metrics, metrics
    assert storage.list(f"inference/{DATASET}"), "nothing in the inference log"
