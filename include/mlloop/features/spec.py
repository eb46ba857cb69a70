"""The versioned feature spec a use case declares (``features:`` in its YAML); light to import.

The spec says which columns of a validated batch become features and how: numeric pass-through,
``log1p`` transforms, calendar parts of the event time, categoricals with a *declared* vocabulary,
and point-in-time history features over an entity (counts and sums of a value column in trailing
windows, time since the entity's previous event, value relative to the entity's recent mean).

Categorical vocabularies are declared here, never derived from data: the encoding then depends on
the spec version only (not on which days a snapshot covers), serving needs nothing but the spec,
and a value outside the vocabulary (a new merchant category, say) reads as ``UNKNOWN_CATEGORY``
instead of failing. Changing the vocabulary is a spec change: bump ``version``.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

UNKNOWN_CATEGORY = "__unknown__"
CalendarPart = Literal["hour_of_day", "day_of_week"]
_WINDOW = re.compile(r"^([1-9][0-9]*)(s|m|h|d)$")
_WINDOW_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def window_length(window: str) -> timedelta:
    """Return the length of a window written as ``<n><s|m|h|d>`` (e.g. ``1h``, ``24h``, ``7d``).

    Raises:
        ValueError: naming the window and the accepted form.
    """
    match = _WINDOW.match(window)
    if not match:
        raise ValueError(
            f"history window {window!r} is not of the form <positive integer><s|m|h|d>, e.g. 1h, 24h, 7d"
        )
    return timedelta(**{_WINDOW_UNITS[match.group(2)]: int(match.group(1))})


class HistorySpec(BaseModel):
    """Point-in-time history features of one entity: only its events strictly before each row count."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity_column: str
    value_column: str
    windows: list[str] = Field(min_length=1)
    prefix: str = "hist"
    time_since_previous: bool = True
    value_vs_mean: bool = True

    @field_validator("windows")
    @classmethod
    def _windows_parse(cls, windows: list[str]) -> list[str]:
        lengths = [window_length(w) for w in windows]
        if len(set(lengths)) != len(lengths):
            raise ValueError(f"history windows {windows} repeat a length; list each window once")
        return windows

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_name(cls, prefix: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", prefix):
            raise ValueError(f"history prefix {prefix!r} must be lower_snake_case, e.g. 'customer'")
        return prefix

    @property
    def longest_window(self) -> str:
        """Return the longest window: the history a row's features can depend on."""
        return max(self.windows, key=window_length)

    @property
    def lookback(self) -> timedelta:
        """Return how far back history features look (the longest window)."""
        return window_length(self.longest_window)

    def count_column(self, window: str) -> str:
        """Return the name of the event-count feature of ``window``."""
        return f"{self.prefix}_count_{window}"

    def sum_column(self, window: str) -> str:
        """Return the name of the value-sum feature of ``window``."""
        return f"{self.prefix}_{self.value_column}_sum_{window}"

    @property
    def since_previous_column(self) -> str:
        """Return the name of the seconds-since-previous-event feature."""
        return f"{self.prefix}_seconds_since_previous"

    @property
    def vs_mean_column(self) -> str:
        """Return the name of the value-relative-to-recent-mean feature."""
        return f"{self.prefix}_{self.value_column}_vs_mean_{self.longest_window}"

    def columns(self) -> list[str]:
        """Return the history feature names in output order."""
        names = [c for w in self.windows for c in (self.count_column(w), self.sum_column(w))]
        names += [self.since_previous_column] if self.time_since_previous else []
        names += [self.vs_mean_column] if self.value_vs_mean else []
        return names


class FeatureSpec(BaseModel):
    """A versioned declaration of the features built from a validated batch (training and serving)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    numeric: list[str] = Field(default_factory=list)
    log1p: list[str] = Field(default_factory=list)
    calendar: list[CalendarPart] = Field(default_factory=list)
    categorical: dict[str, list[str]] = Field(default_factory=dict)
    history: HistorySpec | None = None

    @field_validator("categorical")
    @classmethod
    def _vocabularies_are_sets(cls, categorical: dict[str, list[str]]) -> dict[str, list[str]]:
        for column, vocabulary in categorical.items():
            if not vocabulary:
                raise ValueError(f"categorical {column!r} declares no vocabulary; list its known values")
            if len(set(vocabulary)) != len(vocabulary):
                raise ValueError(f"categorical {column!r} repeats a value in its vocabulary")
            if UNKNOWN_CATEGORY in vocabulary:
                raise ValueError(f"categorical {column!r}: {UNKNOWN_CATEGORY!r} is reserved for unknowns")
        return categorical

    @model_validator(mode="after")
    def _names_are_unique(self) -> FeatureSpec:
        names = feature_columns(self)
        if not names:
            raise ValueError("the feature spec declares no features")
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"feature names {duplicated} occur twice; rename a column or the history prefix")
        return self

    def input_columns(self) -> list[str]:
        """Return the columns of the validated frame the features read (besides key and time)."""
        wanted = [*self.numeric, *self.log1p, *self.categorical]
        if self.history is not None:
            wanted += [self.history.entity_column, self.history.value_column]
        return list(dict.fromkeys(wanted))

    def fingerprint(self) -> str:
        """Return the sha256 of the spec's JSON in declaration order (catches an edit without a version bump).

        Order is kept on purpose: the order of columns and vocabularies is part of the output.
        """
        text = json.dumps(self.model_dump(mode="json"), separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def feature_columns(spec: FeatureSpec) -> list[str]:
    """Return the feature column names ``build_features`` outputs, in their stable order."""
    names = list(spec.numeric)
    names += [f"log1p_{column}" for column in spec.log1p]
    names += list(spec.calendar)
    names += spec.history.columns() if spec.history is not None else []
    names += list(spec.categorical)
    return names
