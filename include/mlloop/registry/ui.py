"""Addresses of MLflow UI pages (runs, artifacts, model versions) as users reach them."""

from __future__ import annotations

from urllib.parse import quote


def mlflow_ui_url() -> str:
    """Return the MLflow address users open: MLLOOP_MLFLOW_UI_URL, else the tracking URI when it is HTTP."""
    from mlloop.config import get_settings

    settings = get_settings()
    url = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    return url.rstrip("/") if url.startswith(("http://", "https://")) else ""


def run_url(run_id: str, artifact_path: str | None = None, experiment_id: str | None = None) -> str:
    """Return the MLflow UI page of a run, or of one of its artifacts (which needs the experiment id)."""
    base = mlflow_ui_url()
    if not base or not run_id:
        return ""
    if artifact_path and experiment_id is not None:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{artifact_path}"
    return f"{base}/#/runs/{run_id}"


def model_version_url(name: str, version: str | int) -> str:
    """Return the MLflow UI page of a registered model version."""
    base = mlflow_ui_url()
    return f"{base}/#/models/{quote(str(name), safe='')}/versions/{version}" if base else ""
