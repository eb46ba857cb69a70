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
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_third_use_case import _between, _dtype, _expectation, _of_type, _run, _text, _xcom

from mlloop.labels import feed_files
from mlloop.orchestration.names import dag_names
from mlloop.registry import CHAMPION
from mlloop.storage import Storage
from mlloop.validation.suite import EXPECTATIONS_DIR

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


def _suite(name: str, columns: list[str], types: list[dict], depots: list[str]) -> dict:
    """Return a GX 1.x suite: ordered columns, row count, types, not null, ranges, the depot's set."""
    return {
        "name": name,
        "id": None,
        "expectations": [
            _expectation("expect_table_columns_to_match_ordered_list", column_list=columns),
            _expectation("expect_table_row_count_to_be_between", min_value=1, max_value=1_000_000),
            *types,
            *(_expectation("expect_column_values_to_not_be_null", column=c) for c in columns),
            _between("distance_km", 0, 500),
            _between("stops", 0, 100),
            _between("weight_kg", 0, 100),
            _expectation("expect_column_values_to_be_in_set", column="depot", value_set=depots),
            _expectation("expect_column_values_to_be_unique", column="parcel_id"),
        ],
        "meta": {},
        "notes": None,
    }


def _write_suites(folder: Path) -> None:
    """Write parcel_eta's raw and feature suites beside the bundled ones."""
    for source in EXPECTATIONS_DIR.glob("*.json"):
        shutil.copy(source, folder / source.name)
    floats = [_dtype(c, "float64") for c in NUMERIC]
    raw = _suite(
        "parcel_deliveries_raw",
        ["parcel_id", "event_time", "depot", *NUMERIC],
        [_text("parcel_id"), _of_type("event_time", "Timestamp"), _text("depot"), *floats],
        DEPOTS,
    )
    features = _suite(
        "parcel_deliveries_features",
        ["parcel_id", "event_time", *NUMERIC, "depot"],
        [_text("parcel_id"), _of_type("event_time", "Timestamp"), *floats,
         _of_type("depot", "CategoricalDtypeType")],
        [*DEPOTS, "__unknown__"],
    )  # fmt: skip
    for suite in (raw, features):
        (folder / f"{suite['name']}.json").write_text(json.dumps(suite, indent=2))


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
    delivery = inbox / DATASET / f"date={day.isoformat()}" / "part-0.parquet"
    for path, frame in [(delivery, parcels), *((inbox / k, f) for k, f in feed_files(labels, DATASET, day))]:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
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
    from mlloop.config import get_settings

    root = tmp_path_factory.mktemp("regression-use-case")
    usecases, expectations, inbox = root / "usecases", root / "expectations", root / "inbox"
    for folder in (usecases, expectations, inbox):
        folder.mkdir()
    (usecases / f"{NAME}.yaml").write_text(yaml.safe_dump(_declaration(inbox), sort_keys=False))
    _write_suites(expectations)
    for day in TRAIN_DAYS:
        _deliver(inbox, day, seed=11)
    monitored, minutes = _deliver(inbox, MONITORED_DAY, seed=11)

    with pytest.MonkeyPatch.context() as env:
        for variable in ("MLLOOP_MODEL_NAME", "MLLOOP_USE_CASES", "MLLOOP_USE_CASE"):
            env.delenv(variable, raising=False)
        env.setenv("MLLOOP_USECASES_DIR", str(usecases))
        env.setenv("MLLOOP_EXPECTATIONS_DIR", str(expectations))
        env.setenv("MLLOOP_DATA_ROOT", str(root / "data"))
        env.setenv("MLLOOP_MLFLOW_TRACKING_URI", mlflow_server)
        env.setenv("MLLOOP_PII_KEY", PII_KEY)
        get_settings.cache_clear()
        yield Deployment(root / "data", mlflow_server, monitored, minutes)
    get_settings.cache_clear()


def _predict(row: dict) -> dict:
    """Start the scoring service in-process for parcel_eta, wait until it serves, answer ``row``."""
    from fastapi.testclient import TestClient

    from mlloop.config import get_settings
    from mlloop.serving.app import create_app

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLLOOP_USE_CASE", NAME)
        env.setenv("MLLOOP_SERVING_POLL_SECONDS", "0.5")
        get_settings.cache_clear()
        with TestClient(create_app(get_settings())) as http:
            deadline = time.monotonic() + 120
            while (ready := http.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, ready.json()
                time.sleep(0.5)
            answer = http.post(f"/predict/{NAME}", json=row)
            assert answer.status_code == 200, answer.text
            body = answer.json()
    get_settings.cache_clear()
    return body


def test_a_regression_use_case_runs_the_whole_loop(deployment: Deployment, load_dag) -> None:
    from mlflow import MlflowClient

    names = dag_names(NAME)
    # 1. Ingest every delivered day; its numeric labels pass the label feed's checks.
    ingest = load_dag(names.ingest)
    for day in [*TRAIN_DAYS, MONITORED_DAY]:
        run_at = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
        dag_run, states = _run(ingest, run_at, day=day.isoformat(), start_training=True)
        assert str(dag_run.state) == "success", (day, states)
        assert states["land_labels"] == "success", states

    # 2. Train on the window: an XGBoost regressor, gated against predicting the training mean, promoted.
    train = load_dag(names.train)
    form = {
        "window_days": WINDOW_DAYS, "end_day": TRAIN_DAYS[-1].isoformat(), "model": "xgboost",
        "backend": "local", "seed": 42, "gate_overrides": {}, "approval_required": False,
    }  # fmt: skip
    dag_run, states = _run(train, TRAIN_RUN_AT, **form)
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
    dag_run, states = _run(train, TRAIN_RUN_AT + timedelta(hours=1), **form)
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
    dag_run, states = _run(
        monitor, MONITOR_RUN_AT, window_days=1, end_day=MONITORED_DAY.isoformat(), dry_run=False, overrides={}
    )
    assert str(dag_run.state) == "success", states
    summary = _xcom(dag_run, "check")
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
    body = _predict(row)
    assert (body["model_name"], body["model_version"]) == (MODEL_NAME, "2"), body
    assert "threshold" not in body and set(body["prediction"]) == {"parcel_id", "prediction"}, body
    minutes = body["prediction"]["prediction"]
    assert isinstance(minutes, float) and math.isfinite(minutes), body
    assert deployment.minutes.min() <= minutes <= deployment.minutes.max(), (minutes, body)
    assert storage.list(f"inference/{DATASET}"), "nothing in the inference log"
