"""Model versions archived by rule: rejected ones after some days, promoted ones once superseded.

``versions_to_archive`` is the rule (pure: the versions, the policy and now in; what to archive and why
out). ``archive_versions`` applies it through ``mlloop.registry.archive`` (tag, artifacts deleted,
description, audit). A version holding an alias or under legal hold is never archived.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mlloop.registry.champion import archive
from mlloop.registry.tags import (
    ARCHIVED,
    ARCHIVING,
    DECISION_TAG,
    GATE_VERDICT_TAG,
    LEGAL_HOLD_TAG,
    LIFECYCLE_REASON_TAG,
    LIFECYCLE_TAG,
    PROMOTED_AT_TAG,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mlloop.usecase import RetentionSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveDecision:
    """One version the rules archive, and the rule's reason with its figures."""

    version: str
    reason: str


def _never_promoted_and_refused(tags: dict[str, str]) -> bool:
    """Return whether a version was rejected, or failed (or errored in) the gate and was never promoted."""
    if PROMOTED_AT_TAG in tags:
        return False
    return tags.get(DECISION_TAG) == "rejected" or tags.get(GATE_VERDICT_TAG) in ("failed", "error")


def versions_to_archive(
    versions: list[Any], retention: RetentionSpec, now: datetime
) -> list[ArchiveDecision]:
    """Return the versions to archive now, oldest first (see the module docstring for the rules).

    Rejected: registered more than ``rejected_versions_days`` before ``now`` and never promoted.
    Superseded: promoted, holding no alias, and at least ``superseded_after_promotions`` versions promoted
    after it.
    """
    promoted = sorted(
        (float(v.tags[PROMOTED_AT_TAG]), v.version) for v in versions if PROMOTED_AT_TAG in (v.tags or {})
    )
    decisions = []
    for version in sorted(versions, key=lambda v: int(v.version)):
        tags = version.tags or {}
        if getattr(version, "aliases", None) or tags.get(LIFECYCLE_TAG) in (ARCHIVED, ARCHIVING):
            continue
        if tags.get(LEGAL_HOLD_TAG) == "true":
            continue
        registered = datetime.fromtimestamp(version.creation_timestamp / 1000, now.tzinfo)
        age = now - registered
        limit = retention.rejected_versions_days
        if limit is not None and _never_promoted_and_refused(tags) and age > timedelta(days=limit):
            decisions.append(
                ArchiveDecision(
                    version.version,
                    f"rejected (gate {tags.get(GATE_VERDICT_TAG, 'not run')}, decision "
                    f"{tags.get(DECISION_TAG, 'none')}) and registered {age.days} days ago, more than "
                    f"retention.rejected_versions_days={limit}",
                ),
            )
            continue
        after = retention.superseded_after_promotions
        if after is None or PROMOTED_AT_TAG not in tags:
            continue
        later = [v for at, v in promoted if at > float(tags[PROMOTED_AT_TAG])]
        if len(later) >= after:
            decisions.append(
                ArchiveDecision(
                    version.version,
                    f"superseded by {len(later)} later promotions (v{', v'.join(later)}), at least "
                    f"retention.superseded_after_promotions={after}",
                ),
            )
    return decisions


def delete_model_artifacts(client: MlflowClient, version: ModelVersion) -> str:
    """Delete the files of a version's model (its MLflow 3 logged model, else its source); return where."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    model_id = getattr(version, "model_id", None)
    if not model_id and version.source.startswith("models:/m-"):
        # A version read back from a tracking server may carry only its source, models:/<model id>: the
        # models:/ repository cannot delete, the logged model's own artifact location can.
        model_id = version.source.removeprefix("models:/").split("/")[0]
    location = client.get_logged_model(model_id).artifact_location if model_id else version.source
    if location.startswith("runs:/"):
        run_id, _, path = location.removeprefix("runs:/").partition("/")
        location = f"{client.get_run(run_id).info.artifact_uri}/{path}".rstrip("/")
    get_artifact_repository(location, tracking_uri=client.tracking_uri).delete_artifacts()
    return location


def archive_versions(
    client: MlflowClient,
    model: str,
    retention: RetentionSpec,
    now: datetime,
    *,
    actor: str,
    dry_run: bool,
) -> list[dict[str, str]]:
    """Archive (unless ``dry_run``) the versions of ``model`` the rules select; return each with its reason.

    A version left ``archiving`` by a failed run is archived again first.
    """
    versions = client.search_model_versions(f"name = '{model}'")
    decisions = versions_to_archive(versions, retention, now)
    unfinished = [
        ArchiveDecision(v.version, v.tags.get(LIFECYCLE_REASON_TAG, "archival unfinished"))
        for v in versions
        if (v.tags or {}).get(LIFECYCLE_TAG) == ARCHIVING
    ]
    done = []
    for decision in [*unfinished, *decisions]:
        log.info(
            "%s %s v%s: %s",
            "Would archive" if dry_run else "Archiving",
            model,
            decision.version,
            decision.reason,
        )
        if not dry_run:
            archive(
                client,
                model,
                decision.version,
                actor=actor,
                reason=decision.reason,
                delete_artifacts=lambda v: delete_model_artifacts(client, v),
                today=now.date().isoformat(),
            )
        done.append({"version": decision.version, "reason": decision.reason})
    return done
