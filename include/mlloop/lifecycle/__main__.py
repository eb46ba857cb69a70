"""Housekeep one use case: ``python -m mlloop.lifecycle --use-case U [--apply]`` (``mlloop housekeeping``).

A dry run by default: writes the retention report (what would be deleted, the bytes, why the rest is kept)
under reports/housekeeping/, and lists the versions it would archive, the MLflow runs it would delete and
what ``airflow db clean --dry-run`` would remove. ``--apply`` deletes and archives.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import date, datetime

from mlloop import clock
from mlloop.config import get_settings
from mlloop.lifecycle.cleanup import MetadataDbUnavailable
from mlloop.lifecycle.runner import (
    apply_housekeeping,
    archive_model_versions,
    clean_metadata,
    clean_runs,
    plan_housekeeping,
)
from mlloop.registry.champion import cli_actor


def main(argv: list[str] | None = None) -> int:
    """Plan (and with ``--apply`` apply) retention, archival and cleanup for one use case; print a summary."""
    parser = argparse.ArgumentParser(prog="python -m mlloop.lifecycle", description=__doc__)
    parser.add_argument(
        "--use-case", default=get_settings().use_case, help="declared use case (MLLOOP_USE_CASE)"
    )
    parser.add_argument("--apply", action="store_true", help="delete and archive (default: dry run)")
    parser.add_argument(
        "--day", type=date.fromisoformat, default=None, help="apply the policy as on this day (YYYY-MM-DD)"
    )
    parser.add_argument("--skip-airflow-db", action="store_true", help="leave Airflow's metadata DB alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    at = clock.now()
    day = args.day or at.date()
    dry_run = not args.apply
    summary: dict[str, object] = {"use_case": args.use_case, "day": day.isoformat(), "dry_run": dry_run}
    plan = plan_housekeeping(args.use_case, day, dry_run=dry_run, at=at)
    summary["retention"] = plan
    if not dry_run:
        summary["retention_applied"] = apply_housekeeping(args.use_case, plan["report"])
    moment = datetime.combine(day, at.timetz()) if args.day else at
    actor = cli_actor()
    summary["archived" if not dry_run else "would_archive"] = archive_model_versions(
        args.use_case, moment, dry_run=dry_run, actor=actor
    )
    summary["mlflow_runs"] = clean_runs(args.use_case, day, dry_run=dry_run)
    if args.skip_airflow_db:
        summary["airflow_metadata"] = {"skipped": "--skip-airflow-db"}
    else:
        try:
            summary["airflow_metadata"] = clean_metadata(args.use_case, day, dry_run=dry_run)
        except MetadataDbUnavailable as exc:
            summary["airflow_metadata"] = {"skipped": str(exc)}
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
