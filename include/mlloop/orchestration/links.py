"""Operator extra links from Airflow tasks to MLflow: the training run, the gate report, the model version.

Airflow 3 computes an operator's links on the worker when the task finishes and keeps them as XCom, so
``get_link`` reads the task's own return value (run id, version, report URI) and never calls MLflow.
Light at import: DAG files import this module at parse time. Registered by ``plugins/mlloop_links.py``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from mlloop.registry.ui import model_version_url, run_url

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-f]+)/(?P<path>.+)$")


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
        """Return the report artifact's page from the task's result (``report``, ``experiment_id``)."""
        result = _own_result(ti_key)
        match = _RUNS_URI.match(str(result.get("report", "")))
        return run_url(match["run_id"], match["path"], result.get("experiment_id")) if match else ""


class ModelVersionLink(BaseOperatorLink):
    """'Model version': the registered version a promote/reject task acted on (aliases, tags)."""

    name = "Model version"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the model version page from the task's result (``model`` and ``to_version``)."""
        result = _own_result(ti_key)
        name, version = result.get("model"), result.get("to_version")
        return model_version_url(name, version) if name and version else ""


class MonitoringReportLink(BaseOperatorLink):
    """'Drift report': Evidently's data-drift report of a monitoring check, in its MLflow run."""

    name = "Drift report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the report artifact's page from the task's result (``report_run``, ``experiment_id``)."""
        result = _own_result(ti_key)
        run_id = str(result.get("report_run", ""))
        return run_url(run_id, "monitoring/data_drift.html", result.get("experiment_id")) if run_id else ""


ALL_LINKS: tuple[type[BaseOperatorLink], ...] = (
    MlflowRunLink,
    GateReportLink,
    ModelVersionLink,
    MonitoringReportLink,
)


def with_links(task_output: Any, *links: BaseOperatorLink) -> Any:
    """Attach extra links to the operator behind a TaskFlow call's output (``@task`` takes no links)."""
    task_output.operator.operator_extra_links = tuple(links)
    return task_output
