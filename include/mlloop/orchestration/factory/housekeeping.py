"""The ``housekeeping_<use case>`` DAG: retention, version archival, MLflow runs and Airflow metadata."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, dag, task

from mlloop.orchestration.names import dag_names
from mlloop.orchestration.params import dag_arguments
from mlloop.registry.champion import airflow_actor
from mlloop.registry.runner import registered_model_name
from mlloop.usecase import RETENTION_ZONES, UseCase


def _limits(use_case: UseCase) -> str:
    """Return the declaration's retention limits as one Markdown line per zone."""
    lines = []
    for zone in RETENTION_ZONES:
        limits = use_case.retention.zone(zone)
        parts = [
            f"{limits.days} days" if limits.days else "",
            f"newest {limits.count}" if limits.count else "",
        ]
        lines.append(f"- `{zone}`: {', '.join(p for p in parts if p) or 'kept forever'}")
    return "\n".join(lines)


def _doc(use_case: UseCase) -> str:
    """Return the DAG's page text in the declaration's own nouns."""
    retention = use_case.retention
    return f"""
### Housekeeping of `{use_case.name}` (data retention, model lifecycle, cleanup)

Applies the declaration's `retention:` policy (docs/lifecycle.md):

{_limits(use_case)}

Never deleted: what the `champion` and `previous` versions of `{registered_model_name(use_case)}` (and any
version tagged `mlloop.legal_hold=true`) need to be reproduced or audited (their snapshot, the raw,
validated and label days behind it, their validation and drift reports), and what `retention.legal_holds`
names ({len(retention.legal_holds)} entries).

1. **plan_retention** writes the report (JSON and text, under `reports/housekeeping/{use_case.dataset}/`):
   what is or would be deleted, the bytes, and why the rest is kept.
2. **apply_retention** deletes exactly what that report lists (skipped in a dry run).
3. **archive_versions**: rejected versions after {retention.rejected_versions_days} days, promoted ones
   superseded by {retention.superseded_after_promotions} later promotions: tagged `mlloop.lifecycle=archived`,
   model artifacts deleted, metadata kept; promotion and rollback refuse them.
4. **clean_mlflow_runs**: training runs older than {retention.mlflow_runs_days} days that no version uses.
5. **clean_airflow_metadata**: `airflow db clean` before {retention.airflow_metadata_days} days (needs
   `MLLOOP_AIRFLOW_DB_URL` in the workers' environment; skipped, saying so, without it).

**Dry run is on by default**: a manual run deletes only with *dry_run* off; the daily run deletes only when
the declaration sets `retention.apply_on_schedule: true` (now {retention.apply_on_schedule}).
"""


def build_housekeeping_dag(use_case: UseCase) -> DAG:
    """Return ``housekeeping_<use case>``: retention, version archival, MLflow and Airflow cleanup."""
    name = use_case.name

    @dag(
        dag_id=dag_names(name).housekeeping,
        schedule="@daily",
        **dag_arguments(name, "lifecycle", "housekeeping", doc_md=_doc(use_case)),
        params={
            "dry_run": Param(
                True,
                type="boolean",
                title="Dry run",
                description="Report what would be deleted and archived, delete nothing. Off: apply.",
            ),
            "day": Param(
                None,
                type=["null", "string"],
                format="date",
                title="As of day",
                description="Apply the policy as on this day (YYYY-MM-DD). Empty: the run's day.",
            ),
        },
    )
    def housekeeping() -> None:
        """Plan and apply retention, archive versions, clean MLflow runs and Airflow metadata."""

        @task
        def resolve_mode(params: dict[str, Any], dag_run=None) -> dict[str, Any]:
            """Fix the day, whether this run is a dry run, and who acts (so every step agrees)."""
            from mlloop.clock import platform_time

            at = platform_time(dag_run.run_after)
            manual = dag_run.run_type == "manual"
            dry_run = bool(params["dry_run"]) if manual else not use_case.retention.apply_on_schedule
            return {
                "day": params.get("day") or at.date().isoformat(),
                "at": at.isoformat(),
                "dry_run": dry_run,
                "actor": airflow_actor(dag_run),
            }

        @task
        def plan_retention(mode: dict[str, Any]) -> dict[str, Any]:
            """Write the retention report: what expires (bytes, reasons) and what holds keep."""
            from datetime import date, datetime

            from mlloop.lifecycle.runner import plan_housekeeping

            return plan_housekeeping(
                name,
                date.fromisoformat(mode["day"]),
                dry_run=mode["dry_run"],
                at=datetime.fromisoformat(mode["at"]),
            )

        @task
        def apply_retention(mode: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
            """Delete exactly what the report lists (and a fresh plan still expires); skipped in a dry run."""
            from airflow.sdk.exceptions import AirflowSkipException

            from mlloop.lifecycle.runner import apply_housekeeping

            if mode["dry_run"]:
                raise AirflowSkipException(
                    f"Dry run: {plan['expired_objects']} objects ({plan['expired_bytes']} bytes) would be "
                    f"deleted; see {plan['report']}. Trigger with dry_run off to delete them."
                )
            return apply_housekeeping(name, plan["report"])

        # After retention's apply, which a dry run skips: run whatever it did, unless it failed.
        @task(trigger_rule="none_failed")
        def archive_versions(mode: dict[str, Any]) -> list[dict[str, str]]:
            """Archive the versions the rules select (listed only, in a dry run)."""
            from datetime import datetime

            from mlloop.lifecycle.runner import archive_model_versions

            return archive_model_versions(
                name, datetime.fromisoformat(mode["at"]), dry_run=mode["dry_run"], actor=mode["actor"]
            )

        @task(trigger_rule="none_failed")
        def clean_mlflow_runs(mode: dict[str, Any]) -> dict[str, Any]:
            """Delete training runs past the policy that no version uses (listed only, in a dry run)."""
            from datetime import date

            from mlloop.lifecycle.runner import clean_runs

            return clean_runs(name, date.fromisoformat(mode["day"]), dry_run=mode["dry_run"])

        @task
        def clean_airflow_metadata(mode: dict[str, Any]) -> dict[str, Any]:
            """Run `airflow db clean` up to the policy's cut-off (`--dry-run` in a dry run)."""
            from datetime import date

            from airflow.sdk.exceptions import AirflowSkipException

            from mlloop.lifecycle.cleanup import MetadataDbUnavailable
            from mlloop.lifecycle.runner import clean_metadata

            try:
                return clean_metadata(name, date.fromisoformat(mode["day"]), dry_run=mode["dry_run"])
            except MetadataDbUnavailable as exc:
                raise AirflowSkipException(str(exc)) from exc

        mode = resolve_mode()
        applied = apply_retention(mode, plan_retention(mode))
        archived = archive_versions(mode)
        applied >> archived
        clean_mlflow_runs(mode) << archived
        clean_airflow_metadata(mode)

    return housekeeping()
