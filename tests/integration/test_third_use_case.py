"""Adding a use case needs no code change: a third declaration runs the whole loop (issue 15, item 7).

A minimal, non-fraud use case, ``pump_failure`` (pump sensor readings: one categorical column, three floats,
no PII, no history features), is declared with its two GX suites in temporary folders beside card_fraud and a
file-fed copy of it. The DAGs parse (three sets of four), then its own DAGs run for real with ``dag.test()``:
ingest each delivered day (a ``files`` source with labels known hours after each reading), train on a manual
window (train, gate, promote into its own registered model and MLflow experiment), monitor a later clean
day; then the scoring service, started in-process, answers one request with the promoted version.
Real GX, a real MLflow server and real XGBoost throughout.
"""

from __future__ import annotations

import json
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

from mlloop.orchestration.factory import INVALID_TAG
from mlloop.orchestration.names import dag_names
from mlloop.registry import CHAMPION
from mlloop.storage import Storage
from mlloop.usecase import USECASE_DIR

NAME = "pump_failure"
DATASET = "pump_readings"
MODEL_NAME = "pump-failure-classifier"
SITES = ["north", "south", "east"]
ROWS_PER_DAY = 3000
WINDOW_DAYS = 4
TRAIN_DAYS = [date(2026, 11, 2) + timedelta(days=i) for i in range(WINDOW_DAYS)]
MONITORED_DAY = TRAIN_DAYS[-1] + timedelta(days=1)
# Runs happen two days after their window's last day: every label (known within 20 hours) is in by then.
TRAIN_RUN_AT = datetime.combine(TRAIN_DAYS[-1] + timedelta(days=3), datetime.min.time(), UTC)
MONITOR_RUN_AT = datetime.combine(MONITORED_DAY + timedelta(days=2), datetime.min.time(), UTC)
PII_KEY = "third-use-case-pii-key-0123456789"


def _declaration(inbox: Path) -> dict:
    """Return the pump_failure declaration: a few columns, its suites, its policy; nothing fraud-like."""
    return {
        "name": NAME,
        "description": "Pump failure within the shift, from one sensor reading per pump.",
        "dataset": DATASET,
        "key_column": "reading_id",
        "time_column": "event_time",
        "target_column": "failed",
        "pii_columns": [],
        "schema": {
            "reading_id": "string",
            "event_time": "datetime",
            "site": "string",
            "temperature": "float",
            "vibration": "float",
            "pressure": "float",
        },
        "suites": {"raw": "pump_readings_raw", "features": "pump_readings_features"},
        "model_name": MODEL_NAME,
        "label_maturity_days": 1,
        "training": {"window_days": WINDOW_DAYS, "min_rows": 5000, "min_positives": 300},
        "features": {
            "version": "1",
            "numeric": ["temperature", "vibration", "pressure"],
            "categorical": {"site": SITES},
        },
        "source": {"kind": "files", "uri": str(inbox)},
        "gate": {"slice_columns": ["site"]},
    }


def _write_suites(folder: Path) -> None:
    """Write pump_failure's raw and feature suites (and copy card_fraud's, which the copies name)."""
    floats = [dtype(c, "float64") for c in ("temperature", "vibration", "pressure")]
    ranges = {"temperature": (-40, 200), "vibration": (0, 100), "pressure": (0, 20)}
    raw = suite(
        "pump_readings_raw",
        ["reading_id", "event_time", "site", "temperature", "vibration", "pressure"],
        [text("reading_id"), of_type("event_time", "Timestamp"), text("site"), *floats],
        ranges, ("site", SITES), "reading_id",
    )  # fmt: skip
    # build_features' order: key, time, numeric (float64), then categoricals over the declared vocabulary.
    features = suite(
        "pump_readings_features",
        ["reading_id", "event_time", "temperature", "vibration", "pressure", "site"],
        [text("reading_id"), of_type("event_time", "Timestamp"), *floats,
         of_type("site", "CategoricalDtypeType")],
        ranges, ("site", [*SITES, "__unknown__"]), "reading_id",
    )  # fmt: skip
    write_suites(folder, raw, features)


def _deliver(inbox: Path, day: date, seed: int) -> pd.DataFrame:
    """Write one day's readings and their labels as a files source delivers them; return the readings.

    Failures are likelier at high temperature and vibration (and a little at the east site), so a model
    has real skill; each label is known a few hours after its reading (at most 20).
    """
    rng = np.random.default_rng([seed, day.toordinal()])
    n = ROWS_PER_DAY
    start = pd.Timestamp(day, tz="UTC")
    seconds = np.sort(rng.integers(0, 86_400, n))
    site = rng.choice(SITES, size=n, p=[0.4, 0.35, 0.25])
    east = site == "east"
    temperature = rng.normal(70.0, 8.0, n) + 3.0 * east
    log_vibration = rng.normal(0.0, 0.4, n)
    vibration = 2.0 * np.exp(log_vibration)
    pressure = rng.normal(5.0, 0.6, n)
    logit = -3.0 + 1.4 * (temperature - 70.0) / 8.0 + 1.2 * log_vibration / 0.4 + 0.3 * east
    failed = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    readings = pd.DataFrame(
        {
            "reading_id": [f"{day:%Y%m%d}-{i:05d}" for i in range(n)],
            "event_time": start + pd.to_timedelta(seconds, unit="s"),
            "site": site.astype(object),
            "temperature": temperature.round(2),
            "vibration": vibration.round(3),
            "pressure": pressure.round(3),
        }
    )
    delay = np.minimum(rng.exponential(3 * 3600.0, n), 20 * 3600.0).round()
    labels = pd.DataFrame(
        {
            "reading_id": readings["reading_id"],
            "failed": failed,
            "label_time": readings["event_time"] + pd.to_timedelta(delay, unit="s"),
        }
    )
    deliver(inbox, DATASET, day, readings, labels)
    return readings


@dataclass(frozen=True)
class Deployment:
    """The temporary deployment: its data root, the MLflow server every run uses, the monitored day."""

    data_root: Path
    tracking_uri: str
    monitored: pd.DataFrame


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, mlflow_server: str, airflow_db) -> Deployment:
    """Declare card_fraud, a file-fed copy and pump_failure; deliver pump's days; point MLLOOP_* here."""

    root = tmp_path_factory.mktemp("third-use-case")
    usecases, expectations, inbox = root / "usecases", root / "expectations", root / "inbox"
    for folder in (usecases, expectations, inbox):
        folder.mkdir()
    fraud = yaml.safe_load((USECASE_DIR / "card_fraud.yaml").read_text())
    copy = fraud | {
        "name": "card_fraud_eu",
        "dataset": "eu_payments",
        "model_name": "fraud-detector-eu",
        "source": {"kind": "files", "uri": str(root / "inbox-eu")},
    }
    for declaration in (fraud, copy, _declaration(inbox)):
        (usecases / f"{declaration['name']}.yaml").write_text(yaml.safe_dump(declaration, sort_keys=False))
    _write_suites(expectations)
    for day in TRAIN_DAYS:
        _deliver(inbox, day, seed=7)
    monitored = _deliver(inbox, MONITORED_DAY, seed=7)

    with deployed(root, mlflow_server, PII_KEY):
        yield Deployment(root / "data", mlflow_server, monitored)


def test_a_third_declared_use_case_runs_the_whole_loop_without_code(deployment: Deployment, load_dag) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from mlflow import MlflowClient

    # 1. Three declarations, three sets of the same DAGs; pump's files source has no generator knobs.
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags" / "use_cases.py"))
    assert bag.import_errors == {}
    expected = {d for name in ("card_fraud", "card_fraud_eu", NAME) for d in dag_names(name).dags}
    assert set(bag.dag_ids) == expected and len(expected) == 3 * len(dag_names(NAME).dags)
    assert not [d for d in bag.dag_ids if INVALID_TAG in bag.get_dag(d).tags]
    names = dag_names(NAME)
    assert set(bag.get_dag(names.ingest).params.keys()) == {"day", "start_training"}
    assert MODEL_NAME in bag.get_dag(names.train).doc_md

    # 2a. Ingest every delivered day through its own contract.
    ingest = load_dag(names.ingest)
    for day in [*TRAIN_DAYS, MONITORED_DAY]:
        run_at = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
        dag_run, states = run_dag(ingest, run_at, day=day.isoformat(), start_training=True)
        assert str(dag_run.state) == "success", (day, states)
        published = xcom(dag_run, "publish")
        assert published["rows"] == ROWS_PER_DAY and f"validated/{DATASET}/" in published["validated_uri"]
        assert states["land_labels"] == "success", states

    # 2b. Train on the window ending at the last labelled day: trained, gated, promoted.
    train = load_dag(names.train)
    form = {
        "window_days": WINDOW_DAYS, "end_day": TRAIN_DAYS[-1].isoformat(), "model": "xgboost",
        "backend": "local", "seed": 42, "gate_overrides": {}, "approval_required": False,
    }  # fmt: skip
    dag_run, states = run_dag(train, TRAIN_RUN_AT, **form)
    assert str(dag_run.state) == "success", states
    assert states["promote"] == "success" and states["reject"] == "skipped", states
    snap = xcom(dag_run, "snapshot")
    assert snap["days"] == [d.isoformat() for d in TRAIN_DAYS] and snap["rows"] == WINDOW_DAYS * ROWS_PER_DAY
    client = MlflowClient(tracking_uri=deployment.tracking_uri, registry_uri=deployment.tracking_uri)
    first = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert first.version == "1" and first.tags["mlloop.gate.verdict"] == "passed", first.tags
    experiment = client.get_experiment_by_name(NAME)
    assert experiment is not None, f"no MLflow experiment named {NAME}"
    assert client.get_run(first.run_id).info.experiment_id == experiment.experiment_id

    # The same window and seed again: an equal challenger is judged against the champion, slice by site.
    dag_run, states = run_dag(train, TRAIN_RUN_AT + timedelta(hours=1), **form)
    assert str(dag_run.state) == "success", states
    assert states["promote"] == "success", states
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert champion.version == "2", champion
    gate = json.loads(Path(client.download_artifacts(champion.run_id, "gate/gate_report.json")).read_text())
    assert gate["champion"] and gate["failed_rules"] == [], gate
    assert "slice_no_regression.site" in {rule["name"] for rule in gate["rules"]}, gate["rules"]
    assert {(s["column"], s["value"], s["status"]) for s in gate["slices"]} == {
        ("site", site, "ok") for site in SITES
    }, gate["slices"]

    # 2c. Monitor a later clean day against the champion's own training data: it decides, quietly.
    monitor = load_dag(names.monitor)
    dag_run, states = run_dag(
        monitor, MONITOR_RUN_AT, window_days=1, end_day=MONITORED_DAY.isoformat(), dry_run=False, overrides={}
    )
    assert str(dag_run.state) == "success", states
    summary = xcom(dag_run, "check")
    assert summary["window"] == f"{MONITORED_DAY.isoformat()}..{MONITORED_DAY.isoformat()}", summary
    assert summary["champion_version"] == "2", summary
    assert summary["figures"], summary
    assert summary["action"] == "quiet" and summary["fired_rules"] == [], summary
    assert states["request_retrain"] == "skipped", states

    # 3. One request, scored by the promoted version.
    reading = deployment.monitored.iloc[0]
    row = {
        "reading_id": "serve-00001",
        "event_time": (reading["event_time"] + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "site": reading["site"],
        "temperature": float(reading["temperature"]),
        "vibration": float(reading["vibration"]),
        "pressure": float(reading["pressure"]),
    }
    ready, body, _ = serve_one(NAME, row)
    assert ready["use_cases"][NAME]["status"] == "serving", ready
    route = f"/predict/{NAME}"
    assert (body["model_name"], body["model_version"]) == (MODEL_NAME, "2"), (route, body)
    score = body["prediction"]["score"]
    assert 0.0 <= score <= 1.0, body
    # The answer went to pump's own inference log (flushed when the service stopped).
    logged = Storage(str(deployment.data_root)).list(f"inference/{DATASET}")
    assert logged, f"nothing logged under inference/{DATASET}"
