"""
### Ingest transactions

Lands one day's batch of the use case's dataset, enforces its data contract, and publishes it.

1. **land** — fetch the day's delivery (generator in the demo, files/S3 in production) and write it
   unchanged to `raw/<dataset>/date=<day>/<batch_id>.parquet` (immutable; the id is the content hash).
2. **validate** — run the Great Expectations suite `expectations/<suite>.json`. On failure the batch is
   copied to `quarantine/<dataset>/date=<day>/<batch_id>/` with `reason.json`, the task fails naming the
   failed expectations and those paths, and nothing goes downstream. The full GX result is kept under
   `reports/validation/`.
3. **publish** — tokenise PII with a keyed HMAC, write `validated/<dataset>/date=<day>/<batch_id>.parquet`,
   and emit the `validated_transactions` Asset that `train_model` schedules on (with **start_training**
   off, the train_model run it starts skips: for backfills, and for simulations where monitoring alone
   decides when to retrain).

Scheduled daily (the day is the data interval's start). Trigger it manually with **day** and **scenario**
to replay a day or inject a drift or data-quality fault. Re-running a day writes the same objects.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from mlloop.data.scenarios import ALL_SCENARIOS
from mlloop.orchestration.assets import VALIDATED_TRANSACTIONS
from mlloop.orchestration.names import INGEST_DAG
from mlloop.orchestration.params import DEFAULT_ARGS
from mlloop.orchestration.payloads import ValidatedBatch


@dag(
    dag_id=INGEST_DAG,
    # Data intervals, not trigger times: the run at midnight ingests the day that just ended.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=3,
    tags=["mlloop", "ingestion", "data-contract"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS | {"retries": 2},
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Day",
            description="Day to ingest (YYYY-MM-DD). Empty: the run's data interval start.",
        ),
        "scenario": Param(
            "none",
            type="string",
            enum=list(ALL_SCENARIOS),
            title="Scenario (generator source only)",
            description="Drift or data-quality fault to inject into the generated batch.",
        ),
        "rows": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=10_000_000,
            title="Rows (generator source only)",
            description="Rows to generate. Empty: the use case's rows_per_day.",
        ),
        "start_training": Param(
            True,
            type="boolean",
            title="Start training on this batch",
            description="Off: the batch is published, but the train_model run it starts skips (a backfill, "
            "or a closed-loop simulation where only monitoring decides when to retrain).",
        ),
    },
)
def ingest_transactions() -> None:
    """Land, validate, then publish or quarantine one day's batch."""

    @task
    def land(params: dict[str, Any], data_interval_start=None, dag_run=None) -> dict[str, Any]:
        """Write the day's delivery to raw/ (immutable)."""
        from mlloop.clock import platform_time
        from mlloop.ingestion.runner import land_day

        return land_day(
            params.get("day"),
            platform_time(data_interval_start) if data_interval_start else None,
            platform_time(dag_run.run_after) if dag_run else None,
            scenario=params.get("scenario") or "none",
            rows=params.get("rows"),
        )

    @task(retries=0)
    def validate(batch: dict[str, Any]) -> dict[str, Any]:
        """Run the GX contract; quarantine and fail (no retry) when it does not hold."""
        from airflow.sdk.exceptions import AirflowFailException

        from mlloop.ingestion.batches import BatchRejectedError
        from mlloop.ingestion.runner import validate_day

        try:
            return validate_day(batch)
        except BatchRejectedError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task(outlets=[VALIDATED_TRANSACTIONS])
    def publish(
        batch: dict[str, Any], validation: dict[str, Any], params: dict[str, Any], outlet_events=None
    ) -> dict[str, Any]:
        """Tokenise PII, write validated/, and emit the validated-transactions Asset."""
        from mlloop.ingestion.runner import publish_day

        result = publish_day(batch)
        outlet_events[VALIDATED_TRANSACTIONS].extra = ValidatedBatch(
            day=result["day"],
            batch_id=result["batch_id"],
            uri=result["validated_uri"],
            rows=result["rows"],
            validation_report=validation["report_uri"],
            start_training=bool(params.get("start_training", True)),
        ).to_extra()
        return result

    batch = land()
    publish(batch, validate(batch))


ingest_transactions()
