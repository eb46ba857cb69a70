"""Training: content-addressed snapshots and their time split, the training CLI, score calibration.

The package exports the snapshot API; fitting a model on a snapshot is ``mlloop.training.fit`` (a library,
no MLflow), and the training CLI that the local and Kubernetes backends both run is ``mlloop.training.train``.

Light to import: pandas and pyarrow load when a function is first used.
"""

from mlloop.training.snapshot import (
    LABEL_KNOWN_COLUMN,
    FeatureContractError,
    MissingPartitionsError,
    SnapshotError,
    SnapshotIntegrityError,
    SnapshotManifest,
    Split,
    create_snapshot,
    load_snapshot,
    time_split,
)

__all__ = [
    "LABEL_KNOWN_COLUMN",
    "FeatureContractError",
    "MissingPartitionsError",
    "SnapshotError",
    "SnapshotIntegrityError",
    "SnapshotManifest",
    "Split",
    "create_snapshot",
    "load_snapshot",
    "time_split",
]
