"""Entry points the ingestion DAGs call: the use case by name, settings and storage resolved per call."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mlloop.config import get_settings
from mlloop.ingestion.batches import LandedBatch, land_batch, publish_validated, validate_landed_batch
from mlloop.ingestion.pii import resolve_pii_key
from mlloop.orchestration.runtime import resolve_day
from mlloop.storage import Storage
from mlloop.usecase import load_use_case


def land_day(
    param_day: str | None,
    data_interval_start: datetime | None,
    run_after: datetime | None,
    *,
    use_case: str,
    scenario: str = "none",
    rows: int | None = None,
) -> dict[str, Any]:
    """Resolve the day and land ``use_case``'s delivery in raw/; returns the LandedBatch as a dict."""
    settings = get_settings()
    day = resolve_day(param_day, data_interval_start, run_after)
    batch = land_batch(
        Storage.from_settings(settings), load_use_case(use_case), day, scenario=scenario, rows=rows
    )
    return batch.to_dict()


def validate_day(batch: dict[str, Any], *, use_case: str) -> dict[str, Any]:
    """Validate a landed batch of ``use_case``; raises BatchRejectedError after quarantining it."""
    return validate_landed_batch(
        Storage.from_settings(get_settings()), load_use_case(use_case), LandedBatch(**batch)
    )


def publish_day(batch: dict[str, Any], *, use_case: str) -> dict[str, Any]:
    """Tokenise PII and write the validated partition of a landed, validated batch of ``use_case``."""
    settings = get_settings()
    return publish_validated(
        Storage.from_settings(settings),
        load_use_case(use_case),
        LandedBatch(**batch),
        resolve_pii_key(settings),
    )
