"""Platform cleanup: MLflow runs no model version refers to, and Airflow's metadata, past the policy.

MLflow: a run of the use case's training experiment started before the cut-off and referred to by no
registered version (archived ones included: they keep their metrics) has its artifacts deleted through
its artifact repository and is deleted (MLflow's ``deleted`` stage, hidden in the UI). ``mlflow gc`` needs
the tracking server's database, not its REST API; a deployment that wants the rows gone too runs it there.

Airflow: ``airflow db clean --clean-before-timestamp <cut-off> --yes --skip-archive
--error-on-cleanup-failure`` (``--dry-run`` for a dry run). The metadata DB is one for every use case and
the command cleans all of it (its ``--dag-ids`` filter fails on the ``deadline`` table in Airflow 3.x), so
the shortest ``airflow_metadata_days`` declared wins. A task cannot reach that DB (Airflow 3 hides its URL
from task code), so inside a task the URL comes from ``MLLOOP_AIRFLOW_DB_URL``; in a shell, from Airflow's
own setting.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlloop.config import get_settings
from mlloop.connections import readers

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

_DB_URL_VAR = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
# What Airflow 3 puts in a task's environment instead of the metadata DB URL.
_BLOCKED_DB_URL = "airflow-db-not-allowed:///"


class MetadataDbUnavailable(RuntimeError):
    """The Airflow metadata DB URL is not known to this process; the message says how to give it."""


def stale_runs(client: MlflowClient, experiment: str, model: str, before: datetime) -> list[Any]:
    """Return the active runs of ``experiment`` started before ``before`` no version of ``model`` uses."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    used = {v.run_id for v in client.search_model_versions(f"name = '{model}'")}
    runs, token = [], None
    while True:
        page = client.search_runs(
            [found.experiment_id],
            filter_string=f"attributes.start_time < {int(before.timestamp() * 1000)}",
            max_results=1000,
            page_token=token,
        )
        runs += [run for run in page if run.info.run_id not in used]
        token = page.token
        if not token:
            return runs


def delete_runs(client: MlflowClient, runs: list[Any]) -> int:
    """Delete each run's artifacts and the run itself; return how many were deleted."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    for count, run in enumerate(runs, 1):
        get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri).delete_artifacts()
        client.delete_run(run.info.run_id)
        if count % 100 == 0:
            log.info("Deleted %d of %d MLflow runs", count, len(runs))
    return len(runs)


def clean_mlflow_runs(
    client: MlflowClient, experiment: str, model: str, before: datetime, *, dry_run: bool
) -> dict[str, Any]:
    """Delete (unless ``dry_run``) the stale runs of ``experiment``; return their ids and the count."""
    runs = stale_runs(client, experiment, model, before)
    log.info(
        "%s %d MLflow run(s) of experiment %s started before %s and used by no version of %s",
        "Would delete" if dry_run else "Deleting",
        len(runs),
        experiment,
        before.isoformat(),
        model,
    )
    deleted = 0 if dry_run else delete_runs(client, runs)
    return {"stale_runs": [r.info.run_id for r in runs], "deleted": deleted, "before": before.isoformat()}


def airflow_db_clean_command(before: datetime, *, dry_run: bool) -> list[str]:
    """Return the ``airflow db clean`` command that removes metadata older than ``before``."""
    command = [
        str(Path(sys.executable).parent / "airflow"),
        *("db", "clean", "--clean-before-timestamp", before.isoformat()),
        *("--yes", "--skip-archive", "--error-on-cleanup-failure"),
    ]
    return [*command, "--dry-run"] if dry_run else command


def metadata_db_url() -> str:
    """Return the Airflow metadata DB URL: ``MLLOOP_AIRFLOW_DB_URL``, else this process's Airflow setting.

    Raises:
        MetadataDbUnavailable: inside an Airflow task without ``MLLOOP_AIRFLOW_DB_URL`` (naming the fix).
    """
    configured = get_settings().airflow_db_url
    if configured is not None:
        return configured.get_secret_value()
    url = os.environ.get(_DB_URL_VAR, "")
    if url and url != _BLOCKED_DB_URL:
        return url
    raise MetadataDbUnavailable(
        "the Airflow metadata DB URL is not available here: Airflow 3 hides it from task code. Set "
        "MLLOOP_AIRFLOW_DB_URL (the same URL as AIRFLOW__DATABASE__SQL_ALCHEMY_CONN) in the workers' "
        "environment, or run `mlloop housekeeping --use-case <name>` from a shell with Airflow's settings."
    )


def clean_airflow_metadata(before: datetime, *, dry_run: bool) -> dict[str, Any]:
    """Run ``airflow db clean`` up to ``before`` (a dry run only lists); return the end of its output.

    Raises:
        MetadataDbUnavailable: see ``metadata_db_url``.
        RuntimeError: when the command fails, with the end of its output.
    """
    url = metadata_db_url()
    mask = readers().mask
    if mask is not None:
        mask(url)
    command = airflow_db_clean_command(before, dry_run=dry_run)
    log.info("Running %s", " ".join(command[1:]))
    env = {**os.environ, _DB_URL_VAR: url, "AIRFLOW__CORE__SQL_ALCHEMY_CONN": url}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    output = (proc.stdout + proc.stderr).replace(url, "***")
    for line in output.splitlines()[-40:]:
        log.info("[airflow db clean] %s", line)
    if proc.returncode:
        raise RuntimeError(f"`airflow db clean` failed (exit {proc.returncode}): {output[-2000:]}")
    return {"before": before.isoformat(), "dry_run": dry_run, "output_tail": output[-4000:]}
