"""
### Monitor the champion: drift and decay checks that can start a retrain

Daily by default (`MLLOOP_MONITOR_SCHEDULE`: a cron expression or preset), and by hand with the form
below. Compares the champion's **own training snapshot** (found through
its model-version tags) with the newest validated window:

- **data drift** of every feature column (Evidently's per-column tests, fast path with the same verdicts:
  `include/mlloop/monitoring/drift.py`), and the share of drifted columns;
- **prediction drift**: the champion's score distribution on both;
- **performance decay** once labels for the window have arrived: the champion's metric (ROC-AUC by
  default) on the labelled rows against its own holdout, resampled at the window's labelled positives and
  negatives; it fires on a drop beyond that chance band (false-alarm rate 0.01) and beyond a practical
  margin, and says "waiting: N labelled positives, needs M" while the test would lack power;
- **label shift**: the window's base rate against the champion's days at the same label maturity, a
  finding of its own (not decay; retraining on it is a policy choice, off by default).

The policy (`include/mlloop/monitoring/monitor_defaults.yaml`, then the use case's `monitor:` section, then
the **overrides** below) fires on a drift share above the threshold, drift of a top feature, prediction
drift or decay; the result says which rule fired with its numbers and records the effective policy. Each
check's figures are MLflow metrics on the use case's timeline run, stepped by the monitored day, and StatsD
gauges `mlloop.monitor.<use case>.<figure>` (Prometheus `mlloop_monitor_<figure>`, Grafana row *Monitoring*).
Guards: no trigger while `train_model` runs, within the cooldown after the last trigger, or over the weekly
budget; **dry run** records what would happen and triggers nothing. Every
outcome is kept (`reports/monitoring/`, MLflow experiment `mlloop-monitoring`, extra link *Drift report*).
A trigger emits the `retrain_requested` Asset with the reason and the window; `train_model` runs on it and
its challenger goes through the same gate.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from mlloop.config import get_settings
from mlloop.orchestration.assets import RETRAIN_REQUESTED
from mlloop.orchestration.links import MonitoringReportLink, with_links
from mlloop.orchestration.names import MONITOR_DAG, TRAIN_DAG
from mlloop.orchestration.params import DEFAULT_ARGS, window_params
from mlloop.orchestration.payloads import RetrainRequest


@dag(
    dag_id=MONITOR_DAG,
    schedule=get_settings().monitor_schedule,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlloop", "monitoring", "drift"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params={
        **window_params(
            days=1,
            maximum=90,
            days_help="Validated days checked.",
            end_day_help="Empty: the newest validated day.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Decide and record, but never trigger a retrain.",
        ),
        "overrides": Param(
            {},
            type="object",
            title="Threshold overrides",
            description='Per-run policy settings on top of the use case\'s, e.g. {"cooldown_hours": 0}.',
        ),
    },
)
def monitor_drift() -> None:
    """Check, decide, guard; request a retrain when allowed."""

    @task
    def check(params: dict[str, Any], dag_run=None, ti=None) -> dict[str, Any]:
        """Run the drift and decay checks against the champion's training data; decide and guard."""
        from mlloop.clock import platform_time
        from mlloop.monitoring.runner import monitor_window
        from mlloop.orchestration.metrics import export_monitor_figures

        active = ti.get_dr_count(dag_id=TRAIN_DAG, states=["queued", "running"]) > 0
        summary = monitor_window(
            end_day=params.get("end_day"),
            window_days=params["window_days"],
            now=platform_time(dag_run.run_after),
            training_active=active,
            dry_run=bool(params.get("dry_run")),
            overrides=params.get("overrides"),
        )
        if summary.get("figures"):
            export_monitor_figures(summary["use_case"], summary["figures"])
        return summary

    @task(outlets=[RETRAIN_REQUESTED])
    def request_retrain(summary: dict[str, Any], dag_run=None, outlet_events=None) -> dict[str, Any]:
        """Emit retrain_requested with the reason and the window, or skip saying why not."""
        from airflow.sdk.exceptions import AirflowSkipException

        from mlloop.clock import platform_time

        if summary["action"] != "trigger":
            raise AirflowSkipException(f"No retrain ({summary['action']}): {summary['reason']}")
        extra = RetrainRequest.from_summary(summary, platform_time(dag_run.run_after)).to_extra()
        outlet_events[RETRAIN_REQUESTED].extra = extra
        return extra

    request_retrain(with_links(check(), MonitoringReportLink()))


monitor_drift()
