"""What housekeeping never deletes: what kept model versions need, and the declared legal holds.

A kept version is the ``champion``, the ``previous`` (the rollback target) and any version tagged
``mlloop.legal_hold=true``. What it needs to be reproduced or audited, read from its snapshot's manifest:
the snapshot itself and its feature-validation report, the raw and validated days it was built from
(window and history context) with their validation reports, the label deliveries from its first day to
its ``as_of``, and the monitoring checks that judged it (their decision records and drift reports). Its
gate report lives with its MLflow run, which MLflow cleanup never deletes while a version refers to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from mlloop.lifecycle.retention import Hold
from mlloop.registry.champion import CHAMPION, PREVIOUS, champion_version
from mlloop.registry.tags import LEGAL_HOLD_TAG, SNAPSHOT_DIGEST_TAG
from mlloop.storage import StorageError, StorageUnavailableError
from mlloop.usecase import RETENTION_ZONES

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlloop.storage import Storage
    from mlloop.usecase import RetentionSpec, UseCase

log = logging.getLogger(__name__)

# The zones whose days a version's snapshot was built from; unknown days (no manifest) hold all of them.
LINEAGE_ZONES = frozenset({"raw", "validated", "labels"})


@dataclass(frozen=True)
class KeptVersion:
    """A model version whose lineage housekeeping keeps, why, and the snapshot it was trained on."""

    model: str
    version: str
    why: str
    snapshot_digest: str | None

    @property
    def label(self) -> str:
        """Return e.g. ``fraud-detector v3 (champion)``."""
        return f"{self.model} v{self.version} ({self.why})"


def kept_versions(client: MlflowClient, model: str) -> list[KeptVersion]:
    """Return the champion, the previous and every legal-hold version of ``model`` (each once)."""
    found: dict[str, KeptVersion] = {}
    for alias in (CHAMPION, PREVIOUS):
        version = champion_version(client, model, alias)
        if version is not None:
            found.setdefault(version.version, _kept(model, version, alias))
    held = client.search_model_versions(f"name = '{model}' and tags.`{LEGAL_HOLD_TAG}` = 'true'")
    for version in held:
        found.setdefault(version.version, _kept(model, version, "legal hold"))
    return sorted(found.values(), key=lambda v: int(v.version))


def _kept(model: str, version: Any, why: str) -> KeptVersion:
    # str(): a version number is a string over MLflow's REST API but an int from a database-backed client.
    return KeptVersion(model, str(version.version), why, (version.tags or {}).get(SNAPSHOT_DIGEST_TAG))


def declared_holds(retention: RetentionSpec) -> list[Hold]:
    """Return the declaration's legal holds: a day (every zone) or a key prefix under the data root."""
    holds = []
    for entry in retention.legal_holds:
        reason = f"legal hold {entry!r} (retention.legal_holds)"
        try:
            day = date.fromisoformat(entry)
        except ValueError:
            holds.append(Hold(reason, prefix=entry.strip("/")))
        else:
            holds.append(Hold(reason, zones=frozenset(RETENTION_ZONES), days=frozenset({day.isoformat()})))
    return holds


def version_holds(storage: Storage, use_case: UseCase, kept: list[KeptVersion]) -> list[Hold]:
    """Return the holds that keep what each of the ``kept`` versions needs (see the module docstring)."""
    dataset = use_case.dataset
    holds: list[Hold] = []
    for version in kept:
        if version.snapshot_digest is None:
            log.info("%s carries no %s: no stored data is tied to it", version.label, SNAPSHOT_DIGEST_TAG)
            continue
        digest = version.snapshot_digest
        reason = f"{version.label} was trained on snapshot {digest[:12]}"
        holds += [
            Hold(reason, prefix=f"snapshots/{digest}/"),
            Hold(reason, prefix=f"reports/validation/{dataset}/snapshots/{digest}"),
            Hold(reason, prefix=f"reports/monitoring/{dataset}/calibration/{digest}"),
        ]
        try:
            manifest = storage.read_json(f"snapshots/{digest}/manifest.json")
        except StorageUnavailableError:
            raise  # an unreachable store says nothing about the manifest
        except StorageError:
            holds.append(
                Hold(
                    f"{reason}, whose manifest is missing: its days are unknown, so none is deleted",
                    zones=LINEAGE_ZONES,
                    all_days=True,
                )
            )
            continue
        days = {*manifest["days"], *(p["day"] for p in manifest["source_partitions"])}
        holds.append(
            Hold(f"{reason} from these days", zones=frozenset({"raw", "validated"}), days=frozenset(days))
        )
        holds += [
            Hold(f"{reason} from this day", prefix=f"reports/validation/{dataset}/date={d}/") for d in days
        ]
        deliveries = _days_between(min(manifest["days"]), str(manifest["as_of"])[:10])
        holds.append(Hold(f"{reason} with labels known then", zones=frozenset({"labels"}), days=deliveries))
        holds += [
            Hold(f"{reason} with labels known then", prefix=f"reports/validation/labels/{dataset}/date={d}/")
            for d in deliveries
        ]
    holds += _monitoring_holds(storage, dataset, kept)
    return holds


def _days_between(first: str, last: str) -> frozenset[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return frozenset((start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1))


def _monitoring_holds(storage: Storage, dataset: str, kept: list[KeptVersion]) -> list[Hold]:
    """Return holds on the monitoring checks (decision record and reports) that judged a kept version."""
    by_version = {v.version: v for v in kept}
    prefix = f"reports/monitoring/{dataset}/decisions"
    holds = []
    for key in storage.list(prefix):
        if not key.endswith(".json"):
            continue
        version = by_version.get(str(storage.read_json(key).get("champion_version")))
        if version is None:
            continue
        check_id = key.rsplit("/", 1)[1].removesuffix(".json")
        reason = f"monitoring check {check_id} judged {version.label}"
        holds += [
            Hold(reason, prefix=key),
            Hold(reason, prefix=f"reports/monitoring/{dataset}/{check_id}/"),
        ]
    return holds
