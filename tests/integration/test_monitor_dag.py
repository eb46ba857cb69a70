"""monitor_card_fraud run for real (dag.test) against a champion trained by train_card_fraud (real MLflow).

Generated scenarios: a clean day triggers nothing; a covariate-drift day triggers one retrain with the
reason; a second drifted day inside the cooldown is suppressed and says so; a dry run records and triggers
nothing; a concept-drift day (same inputs, moved fraud pattern) fires on performance decay alone. Each
check's figures land on the use case's MLflow timeline run, stepped by day; and a check in a fresh process
with only MLLOOP_MLFLOW_TRACKING_URI set finds the champion on that server (no ./mlflow.db).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from mlloop.ingestion.batches import land_batch, publish_validated, validate_landed_batch
from mlloop.monitoring.decision import load_monitor_config
from mlloop.monitoring.runner import day_step, decisions_prefix
from mlloop.registry.tags import TIMELINE_TAG
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

TRAIN_DAYS = [date(2026, 10, 1) + timedelta(days=i) for i in range(3)]
CHECKED = {
    "2026-10-04": "none",
    "2026-10-05": "covariate_amount",
    "2026-10-06": "covariate_channel",
    "2026-10-07": "concept",
}
ROWS = 12_000
_dates = iter(range(10_000))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("monitor-dag-data")
    storage, use_case = Storage(str(root)), load_use_case("card_fraud")
    days = [(d, "none") for d in TRAIN_DAYS] + [(date.fromisoformat(d), s) for d, s in CHECKED.items()]
    for day, scenario in days:
        batch = land_batch(storage, use_case, day, rows=ROWS, scenario=scenario)
        validate_landed_batch(storage, use_case, batch)
        publish_validated(storage, use_case, batch, b"k" * 32)
    return str(root)


@pytest.fixture(scope="module")
def champion(ingested: str, mlflow_server: str, load_dag):
    """Train the champion once for the module (train DAG, first three days); yield its model name."""
    from mlloop.config import get_settings

    name = f"test-monitor-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLLOOP_DATA_ROOT", ingested)
        env.setenv("MLLOOP_MLFLOW_TRACKING_URI", mlflow_server)
        env.setenv("MLLOOP_MODEL_NAME", name)
        get_settings.cache_clear()
        run = _run(load_dag("train_card_fraud"), window_days=3, end_day=TRAIN_DAYS[-1].isoformat())
        assert str(run.state) == "success", _states(run)
        yield name
    get_settings.cache_clear()


@pytest.fixture
def configured(ingested: str, champion: str, mlflow_server: str, mlloop_env) -> tuple[str, Storage]:
    mlloop_env(data_root=ingested, mlflow_tracking_uri=mlflow_server, model_name=champion)
    return champion, Storage(ingested)


def _run(dag, **conf):
    # Logical dates far ahead: every label of these days is known when the runs look. dag.test keeps a
    # run's conf in the DAG's params, so every run states the Params it relies on.
    logical = datetime(2033, 1, 1, tzinfo=UTC) + timedelta(hours=next(_dates))
    return dag.test(logical_date=logical, run_conf=conf)


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _check(dag_run) -> dict:
    (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == "check"]
    return ti.xcom_pull(task_ids="check")


def test_quiet_drift_cooldown_dry_run_and_concept(configured, load_dag, client, asset_events) -> None:
    _, storage = configured
    monitor = load_dag("monitor_card_fraud")

    quiet = _run(monitor, end_day="2026-10-04", dry_run=False, overrides={})
    assert str(quiet.state) == "success", _states(quiet)
    summary = _check(quiet)
    assert summary["action"] == "quiet" and summary["fired_rules"] == [], summary
    assert (
        _states(quiet)["request_retrain"] == "skipped"
        and asset_events(quiet, "retrain_requested_card_fraud") == []
    )

    drifted = _run(monitor, end_day="2026-10-05", dry_run=False, overrides={})
    summary = _check(drifted)
    assert summary["action"] == "trigger", summary
    assert "amount" in summary["reason"] and summary["fired_rules"], summary
    (event,) = asset_events(drifted, "retrain_requested_card_fraud")
    assert event["end_day"] == "2026-10-05" and event["reason"] == summary["reason"]
    assert event["monitor_record"] == summary["record"]

    again = _run(monitor, end_day="2026-10-06", dry_run=False, overrides={})
    summary = _check(again)
    assert summary["action"] == "suppressed" and "cooldown" in summary["reason"], summary
    assert asset_events(again, "retrain_requested_card_fraud") == []

    dry = _run(monitor, end_day="2026-10-06", dry_run=True, overrides={"cooldown_hours": 0})
    summary = _check(dry)
    assert summary["action"] == "dry_run" and "would trigger" in summary["reason"], summary
    assert asset_events(dry, "retrain_requested_card_fraud") == []

    overrides = {"cooldown_hours": 0, "max_triggers_per_week": 9}
    concept = _run(monitor, end_day="2026-10-07", dry_run=False, overrides=overrides)
    summary = _check(concept)
    assert summary["fired_rules"] == ["performance_decay"], summary
    assert summary["action"] == "trigger" and "batch re-scored" in summary["reason"], summary
    (event,) = asset_events(concept, "retrain_requested_card_fraud")
    assert event["train_from"] == "2026-10-07", "a decay retrains from the day it was seen"

    # Every outcome, fired or not, is recorded with its reason, in storage and in MLflow.
    records = [storage.read_json(k) for k in storage.list(decisions_prefix("transactions"))]
    assert sorted(r["action"] for r in records) == ["dry_run", "quiet", "suppressed", "trigger", "trigger"]
    assert all(r["reason"] and r["champion_version"] == "1" for r in records)
    experiment = client.get_experiment_by_name("mlloop-monitoring")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`mlloop.model_version` = '1'")
    reports = {a.path for a in client.list_artifacts(runs[0].info.run_id, "monitoring")}
    assert {
        "monitoring/data_drift.html",
        "monitoring/prediction_drift.html",
        "monitoring/data_quality.html",
    } <= reports
    assert all(r["quality_findings"] == [] for r in records), "no day here has new categories or gaps"

    # The decay was judged against the champion's own holdout band, and every record keeps its policy.
    (decayed,) = [r for r in records if r["end_day"] == "2026-10-07"]
    (decay,) = [r for r in decayed["decision"]["rules"] if r["rule"] == "performance_decay"]
    numbers = decay["figures"]
    assert numbers["state"] == "judged" and numbers["metric"] == "roc_auc", decay
    assert numbers["estimate"] < numbers["fires_beyond"] < numbers["band_edge"] < numbers["expected"], decay
    assert numbers["labelled_positives"] >= numbers["positives_needed"], decay
    version = load_monitor_config().version
    assert all(r["policy"]["version"] == version and r["policy"]["use_case"] == "card_fraud" for r in records)
    assert decayed["policy"]["run_overrides"] == overrides
    assert decayed["policy"]["effective"]["cooldown_hours"] == 0

    # One timeline run per use case: each figure is one line over the monitored days.
    (timeline,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{TIMELINE_TAG}` = 'card_fraud'"
    )
    history = client.get_metric_history(timeline.info.run_id, "drift_share")
    days = {"2026-10-04", "2026-10-05", "2026-10-06", "2026-10-07"}
    assert {m.step for m in history} == {day_step(date.fromisoformat(d)) for d in days}
    clean, concept = day_step(date(2026, 10, 4)), day_step(date(2026, 10, 7))
    roc = {m.step: m.value for m in client.get_metric_history(timeline.info.run_id, "roc_auc")}
    assert roc[concept] < roc[clean] - 0.1, roc
    fired = {m.step: m.value for m in client.get_metric_history(timeline.info.run_id, "performance_decay")}
    assert fired[concept] == 1.0 and fired[clean] == 0.0, fired

    # What production saw decides when the service logged it: the clean day's answers, as the champion's
    # logged scores, here useless ones (random), make the same day decay although its batch is clean.
    import numpy as np

    from mlloop.serving.inference_log import InferenceLog

    frame = storage.read_frame(next(k for k in storage.list("validated/transactions/date=2026-10-04")))
    scores = np.random.default_rng(0).random(len(frame))
    served_at = datetime(2026, 10, 4, 23, tzinfo=UTC)
    writer = InferenceLog(storage, "transactions", "event_time", flush_rows=100_000, flush_seconds=3600)
    writer.append(
        [
            {"transaction_id": key, "event_time": when.to_pydatetime(), "score": float(score),
             "flagged": bool(score > 0.9), "model_version": "1", "served_at": served_at}
            for key, when, score in zip(frame["transaction_id"], frame["event_time"], scores, strict=True)
        ]
    )  # fmt: skip
    writer.close()
    served = _run(monitor, end_day="2026-10-04", dry_run=False, overrides=overrides)
    summary = _check(served)
    assert "performance_decay" in summary["fired_rules"] and "served answers" in summary["reason"], summary


def test_a_fresh_process_monitors_on_the_configured_server_only(
    configured, mlflow_server: str, tmp_path
) -> None:
    """Without MLFLOW_TRACKING_URI (an Airflow task process has none), MLLOOP_MLFLOW_TRACKING_URI is used."""
    name, storage = configured
    data = tmp_path / "data"
    # A copy without the inference log (the other test logged useless answers there): the clean day alone,
    # and this check's record stays out of the other test's count.
    shutil.copytree(storage.root, data, ignore=shutil.ignore_patterns("inference"))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MLLOOP_"))}
    env |= {
        "MLLOOP_DATA_ROOT": str(data),
        "MLLOOP_MLFLOW_TRACKING_URI": mlflow_server,
        "MLLOOP_MODEL_NAME": name,
    }
    script = (
        "import json; from datetime import UTC, datetime\n"
        "from mlloop.monitoring.runner import monitor_window\n"
        "now = datetime(2033, 6, 1, tzinfo=UTC)\n"
        "summary = monitor_window(use_case='card_fraud', end_day='2026-10-04', window_days=1, now=now, "
        "training_active=False, dry_run=True)\n"
        "print(json.dumps(summary))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["champion_version"] == "1" and summary["action"] == "quiet", summary
    assert sorted(p.name for p in workdir.iterdir()) == [], (
        "nothing (mlflow.db, mlruns) in the working directory"
    )
