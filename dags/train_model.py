"""
### Train, gate and promote a model

Runs whenever `ingest_transactions` publishes a validated batch (the `validated_transactions` Asset), or
manually with the form below.

1. **snapshot** — the last *window_days* validated days, with the labels known when the run was created,
   become one content-addressed snapshot (`snapshots/<sha256>/`); the feature contract
   (`expectations/transactions_features.json`) must hold or nothing is written.
2. **train** — the training CLI (`python -m mlloop.training.train`) in a subprocess on the worker: logs the
   run to MLflow and registers one version per DAG run (a retry registers nothing new).
3. **gate** — challenger and champion are scored on the same holdout: floors, paired-bootstrap
   non-inferiority, slices, latency and size budgets (`include/mlloop/promotion/gate_defaults.yaml`,
   overridable per run). The report is logged to the challenger's MLflow run.
4. **promote** — a passing challenger becomes `champion` (the old one `previous`), a failing one is tagged
   rejected with the failed rules; both are audited in the `mlloop-audit` experiment.

One run at a time, so two promotions never interleave.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from mlloop.orchestration.assets import VALIDATED_TRANSACTIONS


@dag(
    dag_id="train_model",
    schedule=[VALIDATED_TRANSACTIONS],
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlloop", "training", "promotion"],
    doc_md=__doc__,
    default_args={"owner": "mlloop", "retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "window_days": Param(
            4,
            type="integer",
            minimum=1,
            maximum=365,
            title="Window (days)",
            description="Validated days in the training snapshot (the latest ones).",
        ),
        "end_day": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Last day",
            description="Last day of the window (YYYY-MM-DD). Empty: the latest validated day.",
        ),
        "model": Param("xgboost", type="string", enum=["xgboost"], title="Model type"),
        "backend": Param(
            "local",
            type="string",
            enum=["local"],
            title="Training backend",
            description="local: a subprocess on the worker.",
        ),
        "seed": Param(42, type="integer", minimum=0, title="Seed"),
        "gate_overrides": Param(
            {},
            type="object",
            title="Gate overrides",
            description='Per-run gate thresholds, e.g. {"min_pr_auc": 0.1}.',
        ),
    },
)
def train_model() -> None:
    """Snapshot, train, gate, then promote or reject."""

    @task
    def snapshot(params: dict[str, Any], dag_run=None) -> dict[str, Any]:
        """Materialise the training window as a content-addressed snapshot."""
        from mlloop.training.pipeline import assemble_snapshot

        return assemble_snapshot(params["window_days"], params.get("end_day"), as_of=dag_run.run_after)

    @task
    def train(snap: dict[str, Any], params: dict[str, Any], dag_run=None) -> dict[str, Any]:
        """Run the training CLI; returns run id, registered version and holdout metrics."""
        from mlloop.training.pipeline import train_local

        return train_local(
            snap["digest"], model=params["model"], seed=params["seed"], dag_run_id=dag_run.run_id
        )

    @task
    def gate(result: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """Decide challenger vs champion on the same holdout; log the report."""
        from mlloop.training.pipeline import gate_challenger

        return gate_challenger(result, params.get("gate_overrides"))

    @task
    def promote(result: dict[str, Any], decision: dict[str, Any], dag_run=None) -> dict[str, Any]:
        """Move the champion alias, or tag the challenger rejected."""
        from mlloop.training.pipeline import promote_or_reject

        return promote_or_reject(result, decision, actor=f"airflow:{dag_run.run_id}")

    result = train(snapshot())
    promote(result, gate(result))


train_model()
