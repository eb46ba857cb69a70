"""Features: the versioned spec a use case declares and the one builder training and serving share.

Light to import (the spec is pydantic only); ``build_features`` and friends load pandas on first use.
"""

from __future__ import annotations

from typing import Any

from mlloop.features.spec import UNKNOWN_CATEGORY, FeatureSpec, HistorySpec, feature_columns, window_length

_BUILD_EXPORTS = (
    "HistoryEvents",
    "build_features",
    "build_use_case_features",
    "categorical_column",
    "categorical_dtype",
    "feature_arrays",
    "feature_frame",
    "model_matrix",
)

__all__ = [
    "UNKNOWN_CATEGORY",
    "FeatureSpec",
    "HistoryEvents",
    "HistorySpec",
    "build_features",
    "build_use_case_features",
    "categorical_column",
    "categorical_dtype",
    "feature_arrays",
    "feature_columns",
    "feature_frame",
    "model_matrix",
    "window_length",
]


def __getattr__(name: str) -> Any:
    """Load the pandas-based builder only when one of its functions is first used."""
    if name in _BUILD_EXPORTS:
        from mlloop.features import build

        return getattr(build, name)
    raise AttributeError(f"module 'mlloop.features' has no attribute {name!r}")
