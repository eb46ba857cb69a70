"""Entry points the registry DAGs call, with the tracking server and model name from settings."""

from __future__ import annotations

import logging
from typing import Any

from mlloop.config import get_settings
from mlloop.registry.champion import resolve_rollback_version, rollback
from mlloop.usecase import load_use_case

log = logging.getLogger(__name__)


def registry_client_and_model() -> tuple[Any, str]:
    """Return an MlflowClient for the configured server and the registered model's name."""
    from mlflow import MlflowClient

    settings = get_settings()
    name = settings.model_name or load_use_case(settings.use_case).model_name
    uri = settings.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri), name


def rollback_target(version: int | None, *, force: bool) -> str:
    """Return the version a rollback would serve, checking it is allowed (see ``champion.rollback``)."""
    client, name = registry_client_and_model()
    return resolve_rollback_version(client, name, None if version is None else str(version), force=force)


def rollback_champion(version: str, *, force: bool, reason: str, actor: str) -> dict[str, Any]:
    """Make ``version`` the champion again and return the audit record (idempotent for a retried task)."""
    client, name = registry_client_and_model()
    record = rollback(client, name, version, actor=actor, reason=reason, force=force)
    log.info("Champion of %s is now v%s (was v%s): %s", name, record.to_version, record.from_version, reason)
    return record.__dict__
