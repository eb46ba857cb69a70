"""Fixtures for tests against a real MLflow server: a client, a fresh model name, dummy versions."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mlloop.registry import register_version


@pytest.fixture
def client(mlflow_server: str):
    """An MlflowClient for the session's tracking server (registry on the same server)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


@pytest.fixture
def model_name() -> str:
    """A registered-model name no other test uses."""
    return f"test-model-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def registry_env(mlflow_server: str, model_name: str, mlloop_env) -> str:
    """Point the settings at the session's MLflow server and a fresh model name; return the name."""
    mlloop_env(mlflow_tracking_uri=mlflow_server, model_name=model_name)
    return model_name


@pytest.fixture
def new_version(client, tmp_path: Path):
    """Return a function that logs a tiny artifact in a fresh run and registers it as a version."""

    def _register(name: str, dag_run_id: str):
        experiment = client.get_experiment_by_name("registry-tests")
        experiment_id = experiment.experiment_id if experiment else client.create_experiment("registry-tests")
        run = client.create_run(experiment_id)
        model_dir = tmp_path / f"model-{uuid.uuid4().hex[:6]}"
        model_dir.mkdir()
        (model_dir / "model.json").write_text("{}")
        client.log_artifacts(run.info.run_id, str(model_dir), "model")
        client.set_terminated(run.info.run_id)
        return register_version(
            client, name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
            tags={"mlloop.dag_run_id": dag_run_id}, description="test", idempotency_tag="mlloop.dag_run_id",
        )  # fmt: skip

    return _register
