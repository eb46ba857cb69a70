"""Entry points the registry DAGs call: the tracking server from settings, the model from the use case.

``use_configured_mlflow`` is the one place that points MLflow at the configured server: every entry point
(training, gate, monitoring, serving, the ops commands) calls it, directly or through
``registry_client_and_model``, before it touches a run, a model URI or the registry.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mlloop.config import get_settings
from mlloop.registry.champion import resolve_rollback_version, rollback
from mlloop.usecase import load_use_case

if TYPE_CHECKING:
    from mlloop.config import Settings
    from mlloop.usecase import UseCase

log = logging.getLogger(__name__)


def use_configured_mlflow() -> str:
    """Set MLflow's tracking and registry URI to ``MLLOOP_MLFLOW_TRACKING_URI``; return it.

    Process-wide, so ``models:/`` and ``runs:/`` URIs, ``mlflow.start_run`` and any ``MlflowClient()``
    reach the configured server: without it MLflow falls back to ``MLFLOW_TRACKING_URI`` or, unset, to a
    ``./mlflow.db`` in the working directory (a registry where no model is found). MLflow also exports
    both URIs to the environment, so subprocesses (the training CLI) inherit them.
    """
    import mlflow

    uri = get_settings().mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def registered_model_name(use_case: UseCase, settings: Settings | None = None) -> str:
    """Return ``use_case``'s registered model name: its declaration's, or ``MLLOOP_MODEL_NAME`` when set.

    The override renames the model of the default use case (``MLLOOP_USE_CASE``) only, in every part (DAGs,
    scoring service, ops commands); every other use case registers its declaration's ``model_name``.
    """
    settings = settings or get_settings()
    if settings.model_name and use_case.name == settings.use_case:
        return settings.model_name
    return use_case.model_name


def registry_client_and_model(use_case: str) -> tuple[Any, str]:
    """Return an MlflowClient for the configured server (set process-wide) and ``use_case``'s model name."""
    from mlflow import MlflowClient

    name = registered_model_name(load_use_case(use_case))
    uri = use_configured_mlflow()
    return MlflowClient(tracking_uri=uri, registry_uri=uri), name


def rollback_target(version: int | None, *, force: bool, use_case: str) -> str:
    """Return the version a rollback would serve, checking it is allowed (see ``champion.rollback``)."""
    client, name = registry_client_and_model(use_case)
    return resolve_rollback_version(client, name, None if version is None else str(version), force=force)


def rollback_champion(version: str, *, force: bool, reason: str, actor: str, use_case: str) -> dict[str, Any]:
    """Make ``version`` the champion again and return the audit record (idempotent for a retried task)."""
    client, name = registry_client_and_model(use_case)
    record = rollback(client, name, version, actor=actor, reason=reason, force=force)
    log.info("Champion of %s is now v%s (was v%s): %s", name, record.to_version, record.from_version, reason)
    return record.__dict__
