"""Training: content-addressed training-set snapshots and their time split (more stages to come).

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
