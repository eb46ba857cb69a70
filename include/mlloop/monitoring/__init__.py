"""Monitoring: data drift of the feature columns (Evidently) and when drift or decay starts a retrain.

Light to import: pandas, numpy and Evidently load when a drift check is first used.
"""

from __future__ import annotations

from typing import Any

_DRIFT_EXPORTS = ("ColumnDrift", "DriftResult", "ReferenceProfile", "check_drift", "evidently_drift")

__all__ = list(_DRIFT_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load the drift check only when one of its names is first used."""
    if name in _DRIFT_EXPORTS:
        from mlloop.monitoring import drift

        return getattr(drift, name)
    raise AttributeError(f"module 'mlloop.monitoring' has no attribute {name!r}")
