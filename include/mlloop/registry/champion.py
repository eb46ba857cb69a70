"""Register model versions, move the ``champion``/``previous`` aliases, and keep an audit trail in MLflow.

Promotion order matters because MLflow cannot move two aliases atomically: ``previous`` is moved to the
old champion first, then ``champion`` to the new version. A crash between the two leaves ``champion``
where it was (and ``previous`` pointing at it), never a champion without a way back. Every promotion,
rollback and rejection is appended to the audit experiment as one finished run, tagged so it can be
searched per model; audit runs are never edited.
"""

from __future__ import annotations

import getpass
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlloop.registry.tags import (
    ARCHIVED,
    ARCHIVING,
    AUDIT_TAG_PREFIX,
    DECISION_TAG,
    LIFECYCLE_REASON_TAG,
    LIFECYCLE_TAG,
    PROMOTED_AT_TAG,
    REASON_TAG,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
AUDIT_EXPERIMENT = "mlloop-audit"


class PromotionError(RuntimeError):
    """Raised when a promotion or rollback is refused; the message says why and what to do."""


@dataclass(frozen=True)
class AuditRecord:
    """One promotion, rollback or rejection, as appended to the audit experiment."""

    action: str
    model: str
    to_version: str | None
    from_version: str | None
    actor: str
    reason: str
    evidence: str
    at: float

    def tags(self) -> dict[str, str]:
        """Return the record as MLflow run tags."""
        return {
            f"{AUDIT_TAG_PREFIX}{key}": "" if value is None else str(value)
            for key, value in self.__dict__.items()
        }


# Who started an Airflow run that no user triggered, by its run type.
_RUN_STARTERS = {"scheduled": "the scheduler", "asset_triggered": "an Asset event", "backfill": "a backfill"}


def airflow_actor(dag_run: Any, reviewer: str | None = None) -> str:
    """Return the audit's actor for an Airflow run: ``airflow:<run id> by <the user who triggered it>``.

    ``dag_run`` is the task context's run (``run_id``, ``run_type``, ``triggering_user_name``). A run no
    user triggered names what started it (the scheduler, an Asset event, a backfill). ``reviewer`` is who
    answered the run's review question (Airflow's HITL responder), when one was asked.
    """
    kind = str(getattr(dag_run.run_type, "value", dag_run.run_type))
    starter = dag_run.triggering_user_name or _RUN_STARTERS.get(kind, f"a {kind} run")
    actor = f"airflow:{dag_run.run_id} by {starter}"
    return f"{actor}, reviewed by {reviewer}" if reviewer else actor


# Who the review's answer is attributed to when nobody answered before the response timeout.
NO_REVIEWER = "nobody (no answer before the timeout; the default applied)"


def hitl_reviewer(event: dict[str, Any]) -> str:
    """Return who answered a human-in-the-loop question, from the answer's event (``responded_by_user``)."""
    user = event.get("responded_by_user") or {}
    return str(user.get("name") or user.get("id") or NO_REVIEWER)


def cli_actor() -> str:
    """Return the audit's actor for a command run by hand: ``cli:<OS user>``."""
    return f"cli:{getpass.getuser()}"


def _is_missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def champion_version(client: MlflowClient, name: str, alias: str = CHAMPION) -> ModelVersion | None:
    """Return the version holding ``alias`` (default ``champion``), or None when the alias is unset."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _is_missing(exc) or "alias" in str(exc).lower():
            return None
        raise


def register_version(
    client: MlflowClient,
    name: str,
    *,
    source: str,
    run_id: str,
    tags: dict[str, str],
    description: str,
    idempotency_tag: str,
    model_id: str | None = None,
) -> ModelVersion:
    """Register ``source`` as a new version of ``name`` unless one already carries the same idempotency tag.

    A retried or restarted training task passes the same ``tags[idempotency_tag]`` (e.g. the DAG run id),
    so it gets the version registered the first time instead of a second one.
    """
    from mlflow.exceptions import MlflowException

    key = tags[idempotency_tag]
    try:
        client.create_registered_model(name, description="Managed by mlloop: see the champion alias.")
    except MlflowException as exc:
        if (
            "already exists" not in str(exc).lower()
            and getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS"
        ):
            raise
    existing = client.search_model_versions(f"name = '{name}' and tags.`{idempotency_tag}` = '{key}'")
    if existing:
        version = max(existing, key=lambda v: int(v.version))
        log.info(
            "%s v%s is already registered for %s=%s; not registering again",
            name,
            version.version,
            idempotency_tag,
            key,
        )
        return version
    version = client.create_model_version(
        name, source=source, run_id=run_id, tags=tags, description=description, model_id=model_id
    )
    log.info("Registered %s v%s from run %s", name, version.version, run_id)
    return version


def experiment_id(client: MlflowClient, name: str) -> str:
    """Return the id of the MLflow experiment ``name``, creating it the first time."""
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def append_audit(client: MlflowClient, record: AuditRecord) -> None:
    """Append one audit record (a finished run in the audit experiment)."""
    target = f" v{record.to_version}" if record.to_version else ""
    run = client.create_run(
        experiment_id(client, AUDIT_EXPERIMENT),
        run_name=f"{record.action} {record.model}{target}",
        tags=record.tags(),
    )
    client.set_terminated(run.info.run_id)


def audit_log(client: MlflowClient, name: str) -> list[AuditRecord]:
    """Return the audit records of a registered model, oldest first."""
    experiment = client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{AUDIT_TAG_PREFIX}model` = '{name}'",
        order_by=["attributes.start_time ASC"],
        max_results=10_000,
    )
    records = []
    for run in runs:
        values = {
            k.removeprefix(AUDIT_TAG_PREFIX): v
            for k, v in run.data.tags.items()
            if k.startswith(AUDIT_TAG_PREFIX)
        }
        records.append(
            AuditRecord(
                action=values["action"],
                model=values["model"],
                to_version=values["to_version"] or None,
                from_version=values["from_version"] or None,
                actor=values["actor"],
                reason=values["reason"],
                evidence=values["evidence"],
                at=float(values["at"]),
            )
        )
    return sorted(records, key=lambda r: r.at)


def refuse_archived(client: MlflowClient, name: str, version: str, action: str) -> None:
    """Raise PromotionError when ``version`` is archived (or being archived): its model artifacts are gone.

    Raises:
        PromotionError: naming the version, when and why it was archived, and what to do instead.
    """
    tags = client.get_model_version(name, str(version)).tags or {}
    if tags.get(LIFECYCLE_TAG) in (ARCHIVED, ARCHIVING):
        raise PromotionError(
            f"{name} v{version} is archived ({tags.get(LIFECYCLE_REASON_TAG, 'no reason recorded')}): its "
            f"model artifacts were deleted, so it cannot be the target of a {action}. Choose another "
            "version, or retrain on its snapshot (train_<use case> with its window) for a servable one."
        )


def _move_champion(
    client: MlflowClient, name: str, version: str, *, action: str, actor: str, reason: str, evidence: str
) -> AuditRecord:
    """Point ``previous`` at the current champion, then ``champion`` at ``version``; audit it."""
    refuse_archived(client, name, version, action)
    current = champion_version(client, name)
    if current is not None and current.version == str(version):
        log.info("%s v%s is already the champion; nothing to move", name, version)
        return AuditRecord(
            f"{action}-noop", name, str(version), current.version, actor, reason, evidence, time.time()
        )
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, current.version)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    record = AuditRecord(
        action, name, str(version), current.version if current else None, actor, reason, evidence, time.time()
    )
    append_audit(client, record)
    log.info(
        "%s: %s champion v%s -> v%s (%s), by %s", action, name, record.from_version, version, reason, actor
    )
    return record


def promote(
    client: MlflowClient, name: str, version: str, *, actor: str, reason: str, gate_report: str
) -> AuditRecord:
    """Make ``version`` the champion (the old one becomes ``previous``), tag it and audit the promotion.

    Promoting the version that already is the champion changes nothing and writes no audit record.
    """
    record = _move_champion(
        client, name, version, action="promote", actor=actor, reason=reason, evidence=gate_report
    )
    if not record.action.endswith("-noop"):
        client.set_model_version_tag(name, str(version), PROMOTED_AT_TAG, str(record.at))
        client.set_model_version_tag(name, str(version), DECISION_TAG, "promoted")
    return record


def reject(
    client: MlflowClient, name: str, version: str, *, actor: str, reason: str, gate_report: str
) -> AuditRecord:
    """Tag ``version`` as rejected with the reason (it never gets an alias) and audit the rejection."""
    champion = champion_version(client, name)
    if champion is not None and champion.version == str(version):
        raise PromotionError(f"{name} v{version} is the champion and cannot be rejected; roll back first.")
    client.set_model_version_tag(name, str(version), DECISION_TAG, "rejected")
    client.set_model_version_tag(name, str(version), REASON_TAG, reason[:4900])
    record = AuditRecord(
        "reject",
        name,
        str(version),
        champion.version if champion else None,
        actor,
        reason,
        gate_report,
        time.time(),
    )
    append_audit(client, record)
    return record


def archive(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    actor: str,
    reason: str,
    delete_artifacts: Callable[[ModelVersion], str],
    today: str,
) -> AuditRecord:
    """Archive ``version``: refuse it as a promotion target, delete its model artifacts, keep the rest.

    Tagged ``archiving`` first (promotion and rollback refuse it from then on), then ``delete_artifacts``
    removes the model's files (returning where they were), then the version is tagged ``archived`` with the
    reason, its description says so, and the archival is audited. A failure half way leaves ``archiving``,
    which the next run completes.

    Raises:
        PromotionError: when ``version`` holds an alias (champion or previous); move the alias first.
    """
    target = client.get_model_version(name, str(version))
    aliases = list(getattr(target, "aliases", []) or [])
    if aliases:
        raise PromotionError(
            f"{name} v{version} holds the alias(es) {aliases} and cannot be archived; promote or roll back "
            "another version first."
        )
    client.set_model_version_tag(name, str(version), LIFECYCLE_TAG, ARCHIVING)
    client.set_model_version_tag(name, str(version), LIFECYCLE_REASON_TAG, reason[:4900])
    location = delete_artifacts(target)
    description = (
        f"ARCHIVED on {today}: {reason}. Its model artifacts ({location}) were deleted; its metadata, "
        "metrics, tags, run and audit are kept. It cannot be promoted or rolled back to."
    )
    client.update_model_version(
        name, str(version), description=f"{description}\n\n{target.description or ''}"
    )
    client.set_model_version_tag(name, str(version), LIFECYCLE_TAG, ARCHIVED)
    record = AuditRecord("archive", name, str(version), None, actor, reason, location, time.time())
    append_audit(client, record)
    log.info("Archived %s v%s (%s), by %s; deleted %s", name, version, reason, actor, location)
    return record


def resolve_rollback_version(client: MlflowClient, name: str, version: str | None, *, force: bool) -> str:
    """Return the version to roll back to (default: the ``previous`` alias), refusing unpromoted ones.

    Raises:
        PromotionError: when there is nothing to roll back to, or the version was never promoted
            (pass ``force=True`` to override that check deliberately).
    """
    if version is None:
        previous = champion_version(client, name, PREVIOUS)
        if previous is None:
            raise PromotionError(f"{name} has no '{PREVIOUS}' alias: name the version to roll back to.")
        version = previous.version
    refuse_archived(client, name, str(version), "rollback")
    target = client.get_model_version(name, str(version))
    if PROMOTED_AT_TAG not in (target.tags or {}) and not force:
        raise PromotionError(
            f"{name} v{version} was never promoted (no {PROMOTED_AT_TAG} tag); it has not passed the gate. "
            "Pass force=True (the rollback DAG's 'force' Param) to roll back to it anyway."
        )
    return str(version)


def rollback(
    client: MlflowClient,
    name: str,
    version: str | None = None,
    *,
    actor: str,
    reason: str,
    force: bool = False,
) -> AuditRecord:
    """Move ``champion`` back to ``version`` (default: the ``previous`` alias) and audit it.

    Rolling back to the version that already is the champion changes nothing (a retried task).
    """
    version = resolve_rollback_version(client, name, version, force=force)
    return _move_champion(
        client, name, version, action="rollback", actor=actor, reason=reason, evidence=f"forced={force}"
    )


def version_summary(version: ModelVersion) -> dict[str, Any]:
    """Return the fields of a model version worth showing in a summary."""
    return {
        "name": version.name,
        "version": version.version,
        "run_id": version.run_id,
        "aliases": list(getattr(version, "aliases", []) or []),
        "tags": dict(version.tags or {}),
    }
