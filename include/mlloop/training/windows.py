"""Training windows: a set of validated days snapshotted with the labels known on a day.

Training (the train DAG's snapshot task) and monitoring (the monitored window, a replay's champion) build
their snapshots here, so a day's runs judge the same rows with the same labels and reach the same
content-addressed snapshot.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from mlloop.labels import labels_cutoff, read_delivered_labels
from mlloop.training.snapshot import SnapshotManifest, create_snapshot

if TYPE_CHECKING:
    from mlloop.storage import Storage
    from mlloop.usecase import UseCase


def snapshot_days(
    storage: Storage, use_case: UseCase, days: list[date], *, as_of: datetime, validate: bool = True
) -> SnapshotManifest:
    """Snapshot ``days`` with the labels delivered for them that were known at the start of as_of's UTC day.

    Labels trickle in all the time; counting them per day (``labels_cutoff``) makes every run of one day
    (training or monitoring) build the same content-addressed snapshot.
    """
    cutoff = labels_cutoff(as_of)
    labels = read_delivered_labels(storage, use_case, days, cutoff)
    return create_snapshot(storage, use_case, days, labels=labels, as_of=cutoff, validate=validate)
