"""Entry points of housekeeping (the ``housekeeping_<use case>`` DAG and ``mlloop housekeeping``).

Each step takes a use case's name, the day housekeeping runs for and whether it is a dry run, and returns a
small JSON-able summary. The retention plan is written before anything is deleted, and the apply step
deletes only what that written plan lists (and a fresh plan still lists).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from mlloop.config import get_settings
from mlloop.lifecycle.cleanup import clean_airflow_metadata, clean_mlflow_runs
from mlloop.lifecycle.holds import declared_holds, kept_versions, version_holds
from mlloop.lifecycle.retention import (
    RetentionPlan,
    apply_plan,
    plan_retention,
    write_plan_report,
    zone_objects,
)
from mlloop.lifecycle.versions import archive_versions
from mlloop.registry.runner import registry_client_and_model
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

log = logging.getLogger("mlloop.lifecycle")


def current_plan(use_case: str, today: date, storage: Storage | None = None) -> RetentionPlan:
    """Plan ``use_case``'s retention on ``today``: its objects, its policy, and the holds as they are now."""
    declaration = load_use_case(use_case)
    storage = storage or Storage.from_settings(get_settings())
    client, model = registry_client_and_model(use_case)
    kept = kept_versions(client, model)
    log.info("Versions whose lineage is kept: %s", ", ".join(v.label for v in kept) or "none")
    holds = declared_holds(declaration.retention) + version_holds(storage, declaration, kept)
    objects = zone_objects(storage, declaration)
    log.info("%d objects of %s in the retention zones", len(objects), use_case)
    return plan_retention(objects, declaration.retention, today, holds, use_case=use_case)


def plan_housekeeping(use_case: str, today: date, *, dry_run: bool, at: datetime) -> dict[str, Any]:
    """Plan retention, write the report (JSON and text) and return where it is and what it expires."""
    storage = Storage.from_settings(get_settings())
    plan = current_plan(use_case, today, storage)
    report = write_plan_report(storage, plan, load_use_case(use_case).dataset, dry_run=dry_run, at=at)
    log.info("\n%s", plan.to_text(dry_run=dry_run))
    log.info("Retention report: %s", report)
    return {
        "report": report,
        "expired_objects": len(plan.expired),
        "expired_bytes": plan.expired_bytes,
        "held_objects": len(plan.held),
        "dry_run": dry_run,
    }


def apply_housekeeping(use_case: str, report: str) -> dict[str, Any]:
    """Delete what the written plan ``report`` expires and a fresh plan of its day still expires."""
    storage = Storage.from_settings(get_settings())
    planned = RetentionPlan.from_dict(storage.read_json(report))
    if planned.use_case != use_case:
        raise ValueError(f"{report} is the plan of use case {planned.use_case!r}, not {use_case!r}")
    result = apply_plan(storage, planned, current_plan(use_case, date.fromisoformat(planned.today), storage))
    storage.write_json(report.removesuffix(".json") + "-applied.json", result)
    return result


def archive_model_versions(
    use_case: str, now: datetime, *, dry_run: bool, actor: str
) -> list[dict[str, str]]:
    """Archive (unless ``dry_run``) the versions of ``use_case``'s model that its rules select."""
    client, model = registry_client_and_model(use_case)
    retention = load_use_case(use_case).retention
    return archive_versions(client, model, retention, now, actor=actor, dry_run=dry_run)


def clean_runs(use_case: str, today: date, *, dry_run: bool) -> dict[str, Any]:
    """Delete (unless ``dry_run``) training runs past ``retention.mlflow_runs_days`` that no version uses."""
    days = load_use_case(use_case).retention.mlflow_runs_days
    if days is None:
        return {"skipped": "retention.mlflow_runs_days is unset: MLflow runs are kept"}
    client, model = registry_client_and_model(use_case)
    return clean_mlflow_runs(
        client, use_case, model, _start_of(today - timedelta(days=days)), dry_run=dry_run
    )


def clean_metadata(use_case: str, today: date, *, dry_run: bool) -> dict[str, Any]:
    """Run ``airflow db clean`` (every DAG's records) up to ``retention.airflow_metadata_days`` ago."""
    days = load_use_case(use_case).retention.airflow_metadata_days
    if days is None:
        return {"skipped": "retention.airflow_metadata_days is unset: Airflow's metadata is kept"}
    return clean_airflow_metadata(_start_of(today - timedelta(days=days)), dry_run=dry_run)


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)
