"""The ``monitor_<use case>`` DAG: drift and decay checks of the champion that can request a retrain."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, dag, task

from mlloop.config import get_settings
from mlloop.orchestration.assets import use_case_assets
from mlloop.orchestration.links import MonitoringReportLink, with_links
from mlloop.orchestration.names import dag_names
from mlloop.orchestration.params import dag_arguments, window_params
from mlloop.orchestration.payloads import RetrainRequest
from mlloop.usecase import UseCase


def _doc(use_case: UseCase) -> str:
    """Return the DAG's page text in the declaration's own nouns."""
    names = dag_names(use_case.name)
    return f"""
### Monitor the {use_case.name} champion: drift and decay checks that can start a retrain

Daily by default (`MLLOOP_MONITOR_SCHEDULE`: a cron expression or preset), and by hand with the form
below. Compares the champion's **own training snapshot** (found through its model-version tags) with the
newest validated window of `{use_case.dataset}`:

- **data drift** of every feature column (Evidently's per-column tests, fast path with the same verdicts:
  `include/mlloop/monitoring/drift.py`), and the share of drifted columns
  (left out: {", ".join(f"`{c}`" for c in use_case.drift_exclude) or "none"});
- **prediction drift**: the champion's score distribution on both;
- **performance decay** once labels of `{use_case.target_column}` for the window have arrived: the
  champion's metric on the labelled rows against its own holdout, resampled at the window's labelled
  positives and negatives; it fires on a drop beyond that chance band and beyond a practical margin, and
  says "waiting: N labelled positives, needs M" while the test would lack power;
- **label shift**: the window's base rate against the champion's days at the same label maturity, a
  finding of its own (not decay; retraining on it is a policy choice, off by default).

The policy (`include/mlloop/monitoring/monitor_defaults.yaml`, then the declaration's `monitor:` section,
then the **overrides** below) fires on a drift share above the threshold, drift of a top feature,
prediction drift or decay; the result says which rule fired with its numbers and records the effective
policy. Each check's figures are MLflow metrics on the use case's timeline run, stepped by the monitored
day, and StatsD gauges `mlloop.monitor.{use_case.name}.<figure>` (Grafana row *Monitoring*).
Guards: no trigger while `{names.train}` runs, within the cooldown after the last trigger, or over the
weekly budget; **dry run** records what would happen and triggers nothing. Every outcome is kept
(`reports/monitoring/`, MLflow experiment `mlloop-monitoring`, extra link *Drift report*). A trigger emits
the `{names.retrain_asset}` Asset with the reason and the window; `{names.train}` runs on it and its
challenger goes through the same gate.
"""


def build_monitor_dag(use_case: UseCase) -> DAG:
    """Return ``monitor_<use case>``: check, decide, guard; request a retrain when allowed."""
    name = use_case.name
    names = dag_names(name)
    retrain = use_case_assets(name).retrain

    @dag(
        dag_id=names.monitor,
        schedule=get_settings().monitor_schedule,
        **dag_arguments(name, "monitoring", "drift", doc_md=_doc(use_case)),
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
    def monitor() -> None:
        """Check, decide, guard; request a retrain when allowed."""

        @task
        def check(params: dict[str, Any], dag_run=None, ti=None) -> dict[str, Any]:
            """Run the drift and decay checks against the champion's training data; decide and guard."""
            from mlloop.clock import platform_time
            from mlloop.monitoring.runner import monitor_window
            from mlloop.orchestration.metrics import export_monitor_figures

            active = ti.get_dr_count(dag_id=names.train, states=["queued", "running"]) > 0
            summary = monitor_window(
                use_case=name,
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

        @task(outlets=[retrain])
        def request_retrain(summary: dict[str, Any], dag_run=None, outlet_events=None) -> dict[str, Any]:
            """Emit the retrain request with the reason and the window, or skip saying why not."""
            from airflow.sdk.exceptions import AirflowSkipException

            from mlloop.clock import platform_time

            if summary["action"] != "trigger":
                raise AirflowSkipException(f"No retrain ({summary['action']}): {summary['reason']}")
            extra = RetrainRequest.from_summary(summary, platform_time(dag_run.run_after)).to_extra()
            outlet_events[retrain].extra = extra
            return extra

        request_retrain(with_links(check(), MonitoringReportLink()))

    return monitor()
