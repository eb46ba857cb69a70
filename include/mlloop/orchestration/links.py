"""Operator extra links from Airflow tasks to MLflow: the training run, the gate report, the model version.

Airflow 3 computes an operator's links on the worker when the task finishes and keeps them as XCom, so
``get_link`` reads the task's own return value (run id, version, report URI) and never calls MLflow.
Light at import: DAG files import this module at parse time. Registered by ``plugins/mlloop_links.py``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-f]+)/(?P<path>.+)$")


def mlflow_ui_url() -> str:
    """Return the MLflow address users open: MLLOOP_MLFLOW_UI_URL, else the tracking URI when it is HTTP."""
    from mlloop.config import get_settings

    settings = get_settings()
    url = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    return url.rstrip("/") if url.startswith(("http://", "https://")) else ""


def run_url(run_id: str, artifact_path: str | None = None) -> str:
    """Return the MLflow UI page of a run (optionally opened on one of its artifacts)."""
    base = mlflow_ui_url()
    if not base or not run_id:
        return ""
    page = f"{base}/#/runs/{run_id}"
    return f"{page}/artifactPath/{artifact_path}" if artifact_path else page


def model_version_url(name: str, version: str | int) -> str:
    """Return the MLflow UI page of a registered model version."""
    base = mlflow_ui_url()
    return f"{base}/#/models/{quote(str(name), safe='')}/versions/{version}" if base else ""


def _own_result(ti_key: Any) -> dict[str, Any]:
    """Return the finishing task's return value (a dict), or {} when there is none."""
    pull = getattr(ti_key, "xcom_pull", None)
    value = pull(task_ids=ti_key.task_id) if pull else None
    return value if isinstance(value, dict) else {}


class MlflowRunLink(BaseOperatorLink):
    """'MLflow run': the training run a train task logged (metrics, plots, model)."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the run page from the task's result (``run_id``)."""
        return run_url(str(_own_result(ti_key).get("run_id", "")))


class GateReportLink(BaseOperatorLink):
    """'Gate report': the challenger's gate report (Markdown) in its MLflow run."""

    name = "Gate report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the report artifact's page from the task's result (``report``, a runs:/ URI)."""
        match = _RUNS_URI.match(str(_own_result(ti_key).get("report", "")))
        return run_url(match["run_id"], match["path"]) if match else ""


class ModelVersionLink(BaseOperatorLink):
    """'Model version': the registered version a promote/reject task acted on (aliases, tags)."""

    name = "Model version"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the model version page from the task's result (``model`` and ``to_version``)."""
        result = _own_result(ti_key)
        name, version = result.get("model"), result.get("to_version")
        return model_version_url(name, version) if name and version else ""


ALL_LINKS: tuple[type[BaseOperatorLink], ...] = (MlflowRunLink, GateReportLink, ModelVersionLink)


def with_links(task_output: Any, *links: BaseOperatorLink) -> Any:
    """Attach extra links to the operator behind a TaskFlow call's output (``@task`` takes no links)."""
    task_output.operator.operator_extra_links = tuple(links)
    return task_output
