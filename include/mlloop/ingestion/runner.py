"""Entry points the ingestion DAGs call: the use case by name, settings and storage resolved per call."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time, timedelta
from typing import Any

from mlloop import clock
from mlloop.config import get_settings
from mlloop.ingestion.batches import (
    DeliveryMissingError,
    LandedBatch,
    delivery_keys,
    land_batch,
    publish_validated,
    validate_landed_batch,
)
from mlloop.ingestion.labels_feed import LabelsRejectedError, land_labels
from mlloop.ingestion.pii import resolve_pii_key
from mlloop.orchestration.runtime import resolve_day
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

log = logging.getLogger(__name__)


def await_delivery(
    param_day: str | None,
    data_interval_start: datetime | None,
    run_after: datetime | None,
    *,
    use_case: str,
    now: datetime | None = None,
) -> bool:
    """Return whether ``use_case``'s delivery of the day is there (always, for a generator source).

    A files source's delivery of day D is due when D ends (midnight UTC) and is waited for until
    ``source.wait_hours`` after that: a scheduled run waits, a manual run of an older missing day fails now.

    Raises:
        DeliveryMissingError: once that wait is over, naming the folder waited on and the fix.
    """
    loaded = load_use_case(use_case)
    if loaded.source.kind != "files":
        return True
    day = resolve_day(param_day, data_interval_start, run_after)
    _, keys, folder = delivery_keys(loaded, day)
    if keys:
        log.info("The delivery of %s is there: %s", day, ", ".join(keys))
        return True
    now = now or clock.now()
    due = datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    deadline = due + timedelta(hours=loaded.source.wait_hours)
    until = f"{deadline:%Y-%m-%d %H:%M}"
    marker = f" with its {loaded.source.ready_marker} marker" if loaded.source.ready_marker else ""
    if now >= deadline:
        raise DeliveryMissingError(
            f"no {loaded.source.suffix} delivery{marker} for {day} under {folder} after waiting until "
            f"{until} UTC "
            f"(source.wait_hours {loaded.source.wait_hours:g}); deliver the day's file there and clear this "
            "task, or declare a longer source.wait_hours"
        )
    log.info(
        "Waiting for the delivery of %s under %s: not there yet; waiting until %s UTC (source.wait_hours %g)",
        day,
        folder,
        until,
        loaded.source.wait_hours,
    )
    return False


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


def land_label_feed(*, use_case: str, now: datetime | None = None) -> dict[str, Any]:
    """Land ``use_case``'s label deliveries up to today; raise after landing the rest if one was rejected.

    Raises:
        LabelsRejectedError: naming each quarantined delivery's reason file.
    """
    settings = get_settings()
    today = (now or clock.now()).date()
    result = land_labels(Storage.from_settings(settings), load_use_case(use_case), today)
    if result.quarantined:
        raise LabelsRejectedError(
            f"{len(result.quarantined)} label delivery(ies) of {use_case} failed the labels contract "
            f"and were quarantined (reasons: {', '.join(result.quarantined)}); {result.summary()}. "
            "Deliver corrected files: a new file is landed on the next run (the rejected one stays in "
            "quarantine)."
        )
    return result.to_dict()
