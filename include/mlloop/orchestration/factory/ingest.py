"""The ``ingest_<use case>`` DAG: land, validate and publish (or quarantine) one day's batch."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, dag, task

from mlloop.orchestration.assets import use_case_assets
from mlloop.orchestration.names import dag_names
from mlloop.orchestration.params import dag_arguments
from mlloop.orchestration.payloads import ValidatedBatch
from mlloop.usecase import UseCase


def _doc(use_case: UseCase) -> str:
    """Return the DAG's page text in the declaration's own nouns."""
    names = dag_names(use_case.name)
    dataset = use_case.dataset
    steps, labels = "", ""
    if use_case.source.kind == "generator":
        source = "the generator (the demo)"
        manual = "Trigger it manually with **day** (and, for the generator, **scenario** and **rows**)"
    else:
        source = f"the declared {use_case.source.kind} source (`{use_case.source.uri}`)"
        manual = "Trigger it manually with **day**"
        steps = (
            f"0. **wait_for_delivery**: wait until the day's {use_case.source.format} file is in the inbox, "
            f"checking every {use_case.source.poke_minutes:g} minutes without holding a worker, for up to "
            f"{use_case.source.wait_hours:g} hours after the day ended (`source.wait_hours`); then fail "
            "naming the folder (a manual run of an older day that has no file fails at once). A day may be "
            "several files"
            + (
                f", complete once `{use_case.source.ready_marker}` is there"
                if use_case.source.ready_marker
                else ""
            )
            + ": they are validated together and published as one batch.\n"
        )
        labels = (
            f"4. **land_labels**: land the label feed's new files (`labels/{dataset}/date=<delivered>/` "
            f"in the inbox, known-at column `{use_case.labels.known_at_column}`), each checked (key, 0/1 "
            "target, known-at after its event and by its delivery day) and published to "
            f"`labels/{dataset}/`, or quarantined under `quarantine/labels/{dataset}/` failing this "
            "task. Every train and monitor run also looks, so a late or corrected label is used by the "
            "next of them.\n"
        )
    return f"""
### Ingest {dataset} ({use_case.name})

{use_case.description.strip() or f"Use case `{use_case.name}`."}

Lands one day's batch of `{dataset}`, enforces its data contract, and publishes it.

{steps}1. **land**: fetch the day's delivery from {source} and write it unchanged to
   `raw/{dataset}/date=<day>/<batch_id>.<format>` (immutable; the id is the content hash).
2. **validate**: run the Great Expectations suite `expectations/{use_case.suites.get("raw", "?")}.json`.
   On failure the batch is copied to `quarantine/{dataset}/date=<day>/<batch_id>/` with `reason.json`,
   the task fails naming the failed expectations and those paths, and nothing goes downstream. The full
   GX result is kept under `reports/validation/`.
3. **publish**: tokenise the PII columns ({", ".join(f"`{c}`" for c in use_case.pii_columns) or "none"})
   with a keyed HMAC, write `validated/{dataset}/date=<day>/<batch_id>.parquet`, and emit the
   `{names.validated_asset}` Asset that `{names.train}` schedules on (with **start_training** off, the
   `{names.train}` run it starts skips: for backfills, and for simulations where monitoring alone decides
   when to retrain).
{labels}
Scheduled daily (the day is the data interval's start). {manual} to replay a day. Re-running a day
writes the same objects.
"""


def _params(use_case: UseCase) -> dict[str, Param]:
    """Return the trigger form: the day, the generator's knobs (generator sources only), start_training."""
    params: dict[str, Param] = {
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Day",
            description="Day to ingest (YYYY-MM-DD). Empty: the run's data interval start.",
        ),
    }
    if use_case.source.kind == "generator":
        from mlloop.data.scenarios import ALL_SCENARIOS

        params["scenario"] = Param(
            "none",
            type="string",
            enum=list(ALL_SCENARIOS),
            title="Scenario",
            description="Drift or data-quality fault to inject into the generated batch.",
        )
        params["rows"] = Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=10_000_000,
            title="Rows",
            description="Rows to generate. Empty: the use case's rows_per_day "
            f"({use_case.source.rows_per_day}).",
        )
    params["start_training"] = Param(
        True,
        type="boolean",
        title="Start training on this batch",
        description=f"Off: the batch is published, but the {dag_names(use_case.name).train} run it starts "
        "skips (a backfill, or a closed-loop simulation where only monitoring decides when to retrain).",
    )
    return params


def build_ingest_dag(use_case: UseCase) -> DAG:
    """Return ``ingest_<use case>``: land, validate, then publish or quarantine one day's batch."""
    name = use_case.name
    validated = use_case_assets(name).validated

    @dag(
        dag_id=dag_names(name).ingest,
        # Data intervals, not trigger times: the run at midnight ingests the day that just ended.
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        **dag_arguments(
            name, "ingestion", "data-contract", doc_md=_doc(use_case), max_active_runs=3, retries=2
        ),
        params=_params(use_case),
    )
    def ingest() -> None:
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
                use_case=name,
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
                return validate_day(batch, use_case=name)
            except BatchRejectedError as exc:
                raise AirflowFailException(str(exc)) from exc

        @task(outlets=[validated])
        def publish(
            batch: dict[str, Any], validation: dict[str, Any], params: dict[str, Any], outlet_events=None
        ) -> dict[str, Any]:
            """Tokenise PII, write validated/, and emit the use case's validated Asset."""
            from mlloop.ingestion.runner import publish_day

            result = publish_day(batch, use_case=name)
            outlet_events[validated].extra = ValidatedBatch(
                day=result["day"],
                batch_id=result["batch_id"],
                uri=result["validated_uri"],
                rows=result["rows"],
                validation_report=validation["report_uri"],
                start_training=bool(params.get("start_training", True)),
            ).to_extra()
            return result

        batch = land()
        if use_case.source.kind == "files":
            # A delivery may be late: wait for it without holding a worker slot (reschedule mode), then fail
            # naming the folder. The task's own timeout only backs up the check inside.
            @task.sensor(
                poke_interval=use_case.source.poke_minutes * 60,
                timeout=use_case.source.wait_hours * 3600 + 3600,
                mode="reschedule",  # retries only for errors reading the inbox: the refusal does not retry
            )
            def wait_for_delivery(params: dict[str, Any], data_interval_start=None, dag_run=None) -> Any:
                """Wait until the day's file is in the inbox (up to source.wait_hours after the day ended)."""
                from airflow.sdk import PokeReturnValue
                from airflow.sdk.exceptions import AirflowFailException

                from mlloop.clock import platform_time
                from mlloop.ingestion.batches import DeliveryMissingError
                from mlloop.ingestion.runner import await_delivery

                try:
                    done = await_delivery(
                        params.get("day"),
                        platform_time(data_interval_start) if data_interval_start else None,
                        platform_time(dag_run.run_after) if dag_run else None,
                        use_case=name,
                    )
                except DeliveryMissingError as exc:
                    raise AirflowFailException(str(exc)) from exc
                return PokeReturnValue(is_done=done)

            wait_for_delivery() >> batch
        published = publish(batch, validate(batch))
        if use_case.source.kind == "files":

            @task  # retries for reading errors; a rejected delivery fails at once (AirflowFailException)
            def land_labels() -> dict[str, Any]:
                """Land the label feed's new files (checked; a rejected one is quarantined, failing this)."""
                from airflow.sdk.exceptions import AirflowFailException

                from mlloop.ingestion.labels_feed import LabelsRejectedError
                from mlloop.ingestion.runner import land_label_feed

                try:
                    return land_label_feed(use_case=name)
                except LabelsRejectedError as exc:
                    raise AirflowFailException(str(exc)) from exc

            published >> land_labels()

    return ingest()
