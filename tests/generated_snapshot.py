"""A snapshot of generated days, built the way the loop builds one: land, validate, publish, snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from mlloop.data.generator import generate_day
from mlloop.ingestion.batches import land_batch, publish_validated, validate_landed_batch
from mlloop.storage import Storage
from mlloop.training.snapshot import create_snapshot
from mlloop.usecase import UseCase


def snapshot_generated_days(root: Path, use_case: UseCase, days: Sequence[date], rows: int) -> str:
    """Ingest generated ``days`` into ``root``, snapshot them with every label known; return the digest."""
    storage = Storage(str(root))
    labels = []
    for day in days:
        batch = land_batch(storage, use_case, day, rows=rows)
        validate_landed_batch(storage, use_case, batch)
        publish_validated(storage, use_case, batch, b"k" * 32)
        labels.append(generate_day(day, rows=rows, seed=use_case.source.seed).labels)
    manifest = create_snapshot(
        storage, use_case, days, labels=pd.concat(labels), as_of=datetime(2027, 1, 1, tzinfo=UTC)
    )
    return manifest.digest
