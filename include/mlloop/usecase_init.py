"""Draft a use case from a sample: profile it, then write the declaration and both GX suites for review.

``mlloop use-cases init NAME --sample FILE --key K --time T --target Y`` reads a sample (Parquet, or CSV
through the reader deliveries use), profiles every column with pandas and writes ``NAME.yaml`` (a files
source, the schema, key/time/target, features and a training policy, with REVIEW comments),
``<dataset>_raw.json`` (the contract of one day's delivery) and ``<dataset>_features.json`` (profiled on
``build_features`` of the sample with the drafted feature spec, so it matches what training builds).

GX 1.x has no profiler to do this (the 0.x UserConfigurableProfiler and Data Assistants were removed;
only an experimental metric repository for GX Cloud is left), so pandas profiles and the suites are
written as GX 1.x JSON that ``mlloop use-cases check`` then loads and runs with GX.

How the profile becomes expectations (the constants below; every one is a starting point to review):

- **types**: the column's kind (string, datetime, float, integer, boolean) as the suite's type names.
- **nulls**: a column without nulls in the sample must have none; one whose nulls reach a share ``p``
  of some day's rows may have up to ``NULL_SHARE_FACTOR * p + NULL_SHARE_SLACK`` of a batch's rows
  (GX ``mostly``; no expectation when that reaches 1). A suite runs on one day: the worst day counts.
- **ranges**: the sample's [min, max] widened on each side by ``RANGE_MARGIN`` times its span (a few
  days rarely show a column's whole range), never across zero when the sample does not cross it.
- **value sets**: a string column with at most ``CATEGORY_MAX_VALUES`` distinct values, each seen on
  average ``CATEGORY_MIN_ROWS_PER_VALUE`` times or more, is categorical: its values become the raw
  suite's allowed set and a categorical feature's vocabulary.
- **rows**: a day's delivery holds between the sample's smallest day / ``ROW_COUNT_FACTOR`` and its
  largest day * ``ROW_COUNT_FACTOR`` rows (an empty, truncated or runaway delivery, not a quiet day).
- **key**: must be unique and never null in the sample (else init stops and says so).
- **task**: a 0/1 target drafts ``task: binary`` (its window sized by positives), any other number
  ``task: regression`` (sized by labelled rows, a ``-regressor`` model name, no operating point).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from mlloop.features.build import build_features
from mlloop.features.spec import UNKNOWN_CATEGORY, FeatureSpec
from mlloop.ingestion.batches import read_delivery
from mlloop.tasks import Task, task_spec
from mlloop.usecase import ColumnKind, SourceSpec, TrainingPolicy, UseCase, usecases_dir
from mlloop.validation.suite import expectations_dir
from mlloop.versioned_config import safe_load_yaml

log = logging.getLogger(__name__)

RANGE_MARGIN = 1.0
NULL_SHARE_FACTOR = 2.0
NULL_SHARE_SLACK = 0.05
CATEGORY_MAX_VALUES = 30
CATEGORY_MIN_ROWS_PER_VALUE = 10
ROW_COUNT_FACTOR = 10
# A window should hold about this many labelled positives, so that its holdout (the last fifth) holds
# ~100: the gate's bootstrap intervals on fewer are too wide to tell a model from no skill.
WINDOW_POSITIVES = 500
# A window trains once it holds this share of a typical window's rows and positives (labels still arriving).
WINDOW_SHARE_TO_TRAIN = 0.8
MAX_WINDOW_DAYS = next(m.le for m in TrainingPolicy.model_fields["window_days"].metadata if hasattr(m, "le"))
CALENDAR_MAX = {"hour_of_day": 23, "day_of_week": 6}
DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,59}$")
SAMPLE_FORMATS = {".parquet": "parquet", ".csv": "csv"}
# Type names the suites accept per kind (GX compares a typed column's dtype name, an object column's values).
KIND_TYPE_NAMES: dict[str, list[str]] = {
    "string": ["str", "StringDtype"],
    "float": ["float64", "float32"],
    "integer": ["int64", "int32", "int16", "int8"],
    "boolean": ["bool"],
}
_CSV_PROBES: tuple[ColumnKind, ...] = ("integer", "boolean", "datetime")  # integer also finds floats


class DraftError(ValueError):
    """A sample or an option init cannot draft from; the message names the column or option and the fix."""


@dataclass(frozen=True)
class ColumnProfile:
    """What the sample shows of one column: kind, nulls, numeric range, categorical values."""

    name: str
    kind: ColumnKind
    type_name: str  # the dtype name GX sees (e.g. float64, Int64Dtype, StringDtype)
    rows: int
    nulls: int
    distinct: int
    minimum: float | None = None
    maximum: float | None = None
    values: tuple[str, ...] | None = None  # set for a low-cardinality string column
    worst_day_null_share: float = 0.0  # the largest share of nulls on one UTC day

    @property
    def null_share(self) -> float:
        """Return the share of null rows."""
        return self.nulls / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class SampleProfile:
    """A profiled sample: its delivery columns (target left out), rows and counted labels per UTC day.

    ``task`` is what the target showed: ``binary`` (0/1) or ``regression`` (any other number). What is
    counted per day is what the training floors count (``TaskSpec.counted``): positives for a binary target,
    labelled rows for a numeric one.
    """

    source: Path
    format: str
    key: str
    time: str
    target: str
    columns: tuple[ColumnProfile, ...]
    rows_per_day: dict[str, int]
    positives_per_day: dict[str, int]
    task: Task = "binary"

    @property
    def rows(self) -> int:
        """Return the sample's row count."""
        return sum(self.rows_per_day.values())

    @property
    def positives(self) -> int:
        """Return the sample's counted labels: positives (binary) or labelled rows (regression)."""
        return sum(self.positives_per_day.values())

    @property
    def counted_word(self) -> str:
        """Return what ``positives`` counts, in words."""
        return task_spec(self.task).counted_word

    def column(self, name: str) -> ColumnProfile:
        """Return the profile of column ``name``."""
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True)
class Draft:
    """What init wrote: the files, the declaration it drafted and the profile behind it."""

    declaration_path: Path
    raw_suite_path: Path
    features_suite_path: Path
    use_case: UseCase
    profile: SampleProfile

    def summary(self) -> list[str]:
        """Return what was profiled, drafted and written, for the person who runs init."""
        profile, use_case = self.profile, self.use_case
        days = list(profile.rows_per_day)
        kinds = pd.Series([c.kind for c in profile.columns]).value_counts()
        spec, training = use_case.features, use_case.training
        categorical = ", ".join(f"{c} ({len(v)} values)" for c, v in spec.categorical.items()) or "none"
        return [
            f"Profiled {profile.source}: {profile.rows} rows over {len(days)} day(s) {days[0]}..{days[-1]}; "
            f"{len(profile.columns)} columns ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
            f"{profile.target} ({profile.task}): {profile.positives} {profile.counted_word} "
            f"({profile.positives / profile.rows:.1%}).",
            f"Features (version {spec.version}): numeric {spec.numeric}, calendar {spec.calendar}, "
            f"categorical {categorical}.",
            f"Training: window_days={training.window_days} min_rows={training.min_rows} "
            f"min_positives={training.min_positives}.",
            "Wrote:",
            f"  declaration     {self.declaration_path}",
            f"  raw suite       {self.raw_suite_path}",
            f"  features suite  {self.features_suite_path}",
        ]


def sample_format(path: Path) -> str:
    """Return a sample's format from its file name ending (``parquet`` or ``csv``).

    Raises:
        DraftError: for any other ending, naming the ones read.
    """
    fmt = SAMPLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DraftError(
            f"sample {path}: cannot tell its format from {path.suffix or 'no ending'!r}; name it "
            "*.parquet or *.csv (the formats deliveries may have)."
        )
    return fmt


def reading_use_case(fmt: str, schema: dict[str, ColumnKind]) -> UseCase:
    """Return an unvalidated UseCase holding only what ``read_delivery`` reads: format and schema."""
    source = SourceSpec(kind="files", uri="sample", format=fmt)  # type: ignore[arg-type]
    return UseCase.model_construct(schema_=schema, source=source)


def read_sample(path: Path) -> tuple[pd.DataFrame, str]:
    """Return the sample as deliveries are read, and its format; a CSV's kinds are inferred first.

    Raises:
        DraftError: when the file is missing or its format unknown.
    """
    if not path.is_file():
        raise DraftError(f"sample {path} does not exist; pass --sample with a Parquet or CSV file.")
    fmt = sample_format(path)
    data = path.read_bytes()
    schema = infer_csv_kinds(data) if fmt == "csv" else {}
    frame = read_delivery(data, reading_use_case(fmt, schema))
    log.info("Read the sample %s: %d rows x %d columns (%s)", path, len(frame), frame.shape[1], fmt)
    return frame, fmt


def infer_csv_kinds(data: bytes) -> dict[str, ColumnKind]:
    """Return each CSV column's kind: the first of integer (or float), boolean, datetime it reads as.

    Each probe reads the file with ``read_delivery`` declaring every undecided column of one kind: the
    typing deliveries get is the typing inferred here, so the draft's kinds read back the same way.
    """
    text = read_delivery(data, reading_use_case("csv", {}))
    kinds: dict[str, ColumnKind] = {}
    with _quiet_csv_typing():
        for probe in _CSV_PROBES:
            undecided = [c for c in text.columns if c not in kinds]
            typed = read_delivery(data, reading_use_case("csv", dict.fromkeys(undecided, probe)))
            for column in undecided:
                dtype = typed[column].dtype
                if pd.api.types.is_integer_dtype(dtype):
                    kinds[column] = "integer"
                elif pd.api.types.is_float_dtype(dtype):
                    kinds[column] = "float"
                elif pd.api.types.is_bool_dtype(dtype):
                    kinds[column] = "boolean"
                elif isinstance(dtype, pd.DatetimeTZDtype):
                    kinds[column] = "datetime"
    return {column: kinds.get(column, "string") for column in text.columns}


@contextlib.contextmanager
def _quiet_csv_typing() -> Iterator[None]:
    """Silence the delivery reader's "kept as text" warnings: a probe that does not convert is expected."""
    reader_log = logging.getLogger("mlloop.ingestion.batches")
    previous = reader_log.level
    reader_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        reader_log.setLevel(previous)


def column_kind(series: pd.Series) -> ColumnKind:
    """Return the declared kind of a typed column.

    Raises:
        DraftError: for a column of mixed or unsupported values, naming it and the fix.
    """
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    if inferred in ("string", "empty") and not isinstance(dtype, pd.CategoricalDtype):
        return "string"
    raise DraftError(
        f"sample column {series.name!r} has dtype {dtype} ({inferred} values); a delivery column must be "
        "text, a number, a boolean or a timestamp. Write it as one of those in the sample."
    )


def gx_type_name(dtype: Any) -> str:
    """Return the type name GX compares for a column's dtype (``float64``, ``Int64Dtype``, ...)."""
    return str(dtype) if isinstance(dtype, np.dtype) else type(dtype).__name__


def profile_column(series: pd.Series, kind: ColumnKind, days: pd.Series) -> ColumnProfile:
    """Profile one column of a known kind; ``days`` holds each row's UTC day (one delivery each)."""
    present = series.dropna()
    distinct = int(present.nunique())
    common = {
        "name": str(series.name),
        "kind": kind,
        "type_name": gx_type_name(series.dtype),
        "rows": len(series),
        "nulls": len(series) - len(present),
        "distinct": distinct,
        "worst_day_null_share": float(series.isna().groupby(days).mean().max()) if len(series) else 0.0,
    }
    if kind in ("float", "integer") and len(present):
        return ColumnProfile(**common, minimum=float(present.min()), maximum=float(present.max()))
    if kind == "string" and is_categorical(distinct, len(present)):
        return ColumnProfile(**common, values=tuple(sorted(str(v) for v in present.unique())))
    return ColumnProfile(**common)


def is_categorical(distinct: int, present: int) -> bool:
    """Return whether a string column with ``distinct`` values in ``present`` rows reads as categorical."""
    return 0 < distinct <= CATEGORY_MAX_VALUES and distinct * CATEGORY_MIN_ROWS_PER_VALUE <= present


def profile_sample(
    frame: pd.DataFrame, source: Path, fmt: str, key: str, time: str, target: str
) -> SampleProfile:
    """Profile a sample whose ``target`` column holds the labels (0/1, or numbers); check key, time, target.

    Raises:
        DraftError: for a missing column, a key that is null or repeated, a time that is not a
            timezone-aware timestamp, or a target that is neither 0/1 nor numeric (naming the fix).
    """
    missing = [
        f"{option} {name!r}"
        for option, name in (("--key", key), ("--time", time), ("--target", target))
        if name not in frame.columns
    ]
    if missing:
        raise DraftError(
            f"sample {source} has no column {', '.join(missing)}; "
            f"its columns are {[str(c) for c in frame.columns]}."
        )
    if len({key, time, target}) < 3:
        raise DraftError(
            f"--key, --time and --target must be three different columns; got {key}, {time}, {target}."
        )
    delivery = frame.drop(columns=[target])
    kinds = {str(column): column_kind(delivery[column]) for column in delivery.columns}
    _check_key(delivery[key], kinds[key])
    times = _event_times(delivery[time], kinds[time], fmt)
    task, counted = target_task(frame[target])
    days = utc_days(times)
    profile = SampleProfile(
        source=source,
        format=fmt,
        key=key,
        time=time,
        target=target,
        columns=tuple(profile_column(delivery[c], kinds[str(c)], days) for c in delivery.columns),
        rows_per_day={d: int(n) for d, n in days.value_counts().sort_index().items()},
        positives_per_day={d: int(n) for d, n in counted.groupby(days).sum().sort_index().items()},
        task=task,
    )
    log.info(
        "Profiled %d columns over %d rows and %d day(s); a %s target, %d %s",
        len(profile.columns),
        profile.rows,
        len(profile.rows_per_day),
        task,
        profile.positives,
        profile.counted_word,
    )
    return profile


def utc_days(times: pd.Series) -> pd.Series:
    """Return each timezone-aware time's UTC day as ``YYYY-MM-DD`` (the day whose delivery holds it)."""
    return times.dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")


def _check_key(keys: pd.Series, kind: ColumnKind) -> None:
    """Refuse a key that is not text or whole numbers, is null, or repeats in the sample."""
    if kind not in ("string", "integer"):
        raise DraftError(
            f"--key {keys.name!r} is a {kind} column; a key is text or whole numbers. Pick another."
        )
    if keys.isna().any():
        raise DraftError(
            f"--key {keys.name!r} is null in {int(keys.isna().sum())} sample rows; a key identifies every "
            "row. Pick a column that is always set, or fill it in the sample."
        )
    repeated = keys[keys.duplicated(keep=False)]
    if len(repeated):
        raise DraftError(
            f"--key {keys.name!r} is not unique: {repeated.nunique()} values repeat (e.g. "
            f"{repeated.unique()[:3].tolist()}); a key identifies one row. Pick or build a unique column."
        )


def _event_times(times: pd.Series, kind: ColumnKind, fmt: str) -> pd.Series:
    """Return the time column; refuse one that is not a timezone-aware timestamp or is null."""
    if kind != "datetime":
        written = "ISO 8601 text (e.g. 2026-11-20T08:15:00Z)" if fmt == "csv" else "a timestamp column"
        raise DraftError(
            f"--time {times.name!r} does not read as a timestamp ({kind}); write it as {written}."
        )
    if times.dt.tz is None:
        raise DraftError(
            f"--time {times.name!r} is a timestamp without a time zone; write it timezone-aware (UTC) in the "
            "Parquet sample, as deliveries must be."
        )
    if times.isna().any():
        raise DraftError(
            f"--time {times.name!r} is null in {int(times.isna().sum())} sample rows; every row needs one."
        )
    return times


def target_task(target: pd.Series) -> tuple[Task, pd.Series]:
    """Return the task a target's known values call for and what the floors count per row.

    0/1 (or true/false) is ``binary``, counting positives; any other number is ``regression``, counting
    labelled rows.

    Raises:
        DraftError: for a text target, a binary one with a single class, or a constant number.
    """
    known = target.dropna()
    numeric = pd.api.types.is_numeric_dtype(known.dtype) or pd.api.types.is_bool_dtype(known.dtype)
    if not numeric:
        shown = sorted(map(str, known.unique()[:5].tolist()))
        raise DraftError(
            f"--target {target.name!r} is text (values such as {shown}); a target is 0/1 (task: binary) or "
            "a number (task: regression). Write a yes/no outcome as 0/1 in the sample."
        )
    values = set(known.astype(float).unique().tolist())
    if values <= {0.0, 1.0}:
        return "binary", _binary_target(target, values).eq(1)
    if len(values) < 2:
        raise DraftError(
            f"--target {target.name!r} is {next(iter(values), float('nan')):g} in every known row of the "
            "sample; a model needs a target that varies. Take a sample where it does."
        )
    return "regression", target.notna()


def _binary_target(target: pd.Series, values: set[float]) -> pd.Series:
    """Return the known 0/1 labels as floats; refuse a sample that holds a single class."""
    known = target.dropna()
    if values != {0.0, 1.0}:
        raise DraftError(
            f"--target {target.name!r} holds only {int(next(iter(values), 0))}s in the sample (of "
            f"{len(known)} known labels); a model needs both classes. Take a sample with some 1s and some 0s."
        )
    return target.astype(float)


def draft_features(profile: SampleProfile) -> FeatureSpec:
    """Return version 1 of the features: numeric columns, categorical low-cardinality strings, hour_of_day."""
    roles = {profile.key, profile.time}
    numeric = [
        c.name
        for c in profile.columns
        if c.kind in ("float", "integer") and c.name not in roles and c.minimum is not None
    ]
    categorical = {c.name: list(c.values) for c in profile.columns if c.values and c.name not in roles}
    calendar = [] if "hour_of_day" in {c.name for c in profile.columns} else ["hour_of_day"]
    return FeatureSpec(version="1", numeric=numeric, calendar=calendar, categorical=categorical)  # type: ignore[arg-type]


def draft_policy(profile: SampleProfile) -> TrainingPolicy:
    """Return a training window sized to hold ``WINDOW_POSITIVES`` counted labels at the sample's rates.

    Counted: positives (binary) or labelled rows (regression), as the training floors count them.

    Never shorter than the platform's default window, nor longer than ``MAX_WINDOW_DAYS``.
    """
    days = len(profile.rows_per_day)
    rows_per_day, positives_per_day = profile.rows / days, profile.positives / days
    needed = math.ceil(WINDOW_POSITIVES / positives_per_day)
    window = min(MAX_WINDOW_DAYS, max(TrainingPolicy().window_days, needed))
    return TrainingPolicy(
        window_days=window,
        min_rows=max(1, math.floor(WINDOW_SHARE_TO_TRAIN * rows_per_day * window)),
        min_positives=max(1, math.floor(WINDOW_SHARE_TO_TRAIN * positives_per_day * window)),
    )


def widened_range(column: ColumnProfile) -> tuple[float, float]:
    """Return the column's sample range widened by ``RANGE_MARGIN`` spans, rounded outwards (whole: int)."""
    low, high = float(column.minimum), float(column.maximum)  # type: ignore[arg-type]
    span = high - low
    pad = RANGE_MARGIN * (span if span > 0 else max(abs(high), 1.0))
    lower, upper = low - pad, high + pad
    if low >= 0:
        lower = max(lower, 0.0)
    if high <= 0:
        upper = min(upper, 0.0)
    digits = 0 if column.kind == "integer" else 1 - math.floor(math.log10(pad))  # two significant digits
    step = 10.0**-digits
    bounds = (math.floor(lower / step) * step, math.ceil(upper / step) * step)
    return tuple(int(b) if float(b).is_integer() else round(b, max(digits, 0)) for b in bounds)  # type: ignore[return-value]


def allowed_null_share(column: ColumnProfile) -> float:
    """Return the share of nulls the suites tolerate: none when the sample has none."""
    if column.nulls == 0:
        return 0.0
    return min(1.0, NULL_SHARE_FACTOR * column.worst_day_null_share + NULL_SHARE_SLACK)


def _expectation(kind: str, group: str, notes: str, **kwargs: Any) -> dict[str, Any]:
    """Return one GX 1.x expectation document (critical, with the house's group and notes)."""
    return {"type": kind, "kwargs": kwargs, "meta": {"group": group, "notes": notes}, "severity": "critical"}


def _type_expectation(column: str, kind: ColumnKind, type_name: str) -> dict[str, Any]:
    """Return the type expectation of a column of ``kind`` whose sample dtype GX names ``type_name``."""
    if kind == "datetime":
        return _expectation(
            "expect_column_values_to_be_of_type",
            "types",
            "Timezone-aware timestamp.",
            column=column,
            type_="Timestamp",
        )
    names = KIND_TYPE_NAMES[kind]
    names = names if type_name in names or kind == "string" else [*names, type_name]
    return _expectation(
        "expect_column_values_to_be_in_type_list",
        "types",
        f"{kind} (profiled dtype {type_name}).",
        column=column,
        type_list=names,
    )


def _column_expectations(
    column: ColumnProfile, *, value_set: list[str] | None = None, set_note: str = ""
) -> list[dict[str, Any]]:
    """Return a column's not-null, range and value-set expectations from its profile (type excluded)."""
    found = []
    allowed = allowed_null_share(column)
    observed = (
        f"{column.nulls} of {column.rows} sample rows null ({column.null_share:.1%}; at most "
        f"{column.worst_day_null_share:.1%} of a day's)"
    )
    if allowed == 0.0:
        found.append(
            _expectation(
                "expect_column_values_to_not_be_null", "nullability", f"{observed}.", column=column.name
            )
        )
    elif allowed < 1.0:
        found.append(
            _expectation(
                "expect_column_values_to_not_be_null",
                "nullability",
                f"{observed}; up to {allowed:.1%} allowed.",
                column=column.name,
                mostly=round(1.0 - allowed, 4),
            )
        )
    if column.minimum is not None:
        low, high = widened_range(column)
        found.append(
            _expectation(
                "expect_column_values_to_be_between",
                "ranges",
                f"Sample range {column.minimum:g}..{column.maximum:g}, widened by {RANGE_MARGIN:g} span(s) "
                "each side.",
                column=column.name,
                min_value=low,
                max_value=high,
            )
        )
    if value_set:
        found.append(
            _expectation(
                "expect_column_values_to_be_in_set",
                "allowed_sets",
                set_note,
                column=column.name,
                value_set=value_set,
            )
        )
    return found


def _suite(
    name: str, contract: str, profile: SampleProfile, expectations: list[dict[str, Any]], **meta: Any
) -> dict[str, Any]:
    """Return a GX 1.x suite document: ``expectations``, then the key's uniqueness; notes on its origin."""
    days = list(profile.rows_per_day)
    notes = (
        f"Profiled from {profile.source.name} ({profile.rows} rows, {len(days)} day(s) {days[0]}..{days[-1]})"
        " by mlloop use-cases init: review the ranges, null shares and value sets against what your data "
        "may hold."
    )
    unique = _expectation("expect_column_values_to_be_unique", "keys", "One row per key.", column=profile.key)
    return {
        "name": name,
        "id": None,
        "expectations": [*expectations, unique],
        "meta": {
            "contract": contract,
            **meta,
            "notes": notes,
            "great_expectations_version": importlib.metadata.version("great_expectations"),
        },
        "notes": None,
    }


def raw_suite(name: str, profile: SampleProfile, use_case_name: str) -> dict[str, Any]:
    """Return the raw suite: one day's delivery as the sample shows it (columns, rows, types, values, key)."""
    day_rows = profile.rows_per_day.values()
    columns = profile.columns
    expectations = [
        _expectation(
            "expect_table_columns_to_match_ordered_list",
            "schema",
            "The delivery's columns, in order (the declaration's schema).",
            column_list=[c.name for c in columns],
        ),
        _expectation(
            "expect_table_row_count_to_be_between",
            "volume",
            f"Sample days held {min(day_rows)}..{max(day_rows)} rows; an empty, truncated or runaway "
            "delivery is a fault.",
            min_value=max(1, min(day_rows) // ROW_COUNT_FACTOR),
            max_value=max(day_rows) * ROW_COUNT_FACTOR,
        ),
        *(_type_expectation(c.name, c.kind, c.type_name) for c in columns),
    ]
    for column in columns:
        expectations += _column_expectations(
            column,
            value_set=list(column.values) if column.values else None,
            set_note=f"The {len(column.values or ())} values of the sample; a new value is refused. Remove "
            "this set if a new value is drift, not a fault (the feature maps it to __unknown__).",
        )
    contract = f"one day's delivery of use case {use_case_name} (drafted by mlloop use-cases init)"
    return _suite(name, contract, profile, expectations, pii_columns=[])


def features_suite(
    name: str, frame: pd.DataFrame, profile: SampleProfile, spec: FeatureSpec, use_case_name: str
) -> dict[str, Any]:
    """Return the features suite, profiled on ``build_features`` of the sample with ``spec``.

    Raises:
        DraftError: when the features cannot be built from the sample (naming why).
    """
    try:
        built = build_features(
            frame.drop(columns=[profile.target]), spec, key_column=profile.key, time_column=profile.time
        )
    except ValueError as exc:
        raise DraftError(f"the drafted features do not build from the sample: {exc}") from exc
    key = profile.column(profile.key)
    days = utc_days(built[profile.time])
    most_rows = max(profile.rows_per_day.values()) * ROW_COUNT_FACTOR * MAX_WINDOW_DAYS
    expectations = [
        _expectation(
            "expect_table_columns_to_match_ordered_list",
            "schema",
            "build_features' output order: key, time, numeric, calendar, categorical.",
            column_list=[str(c) for c in built.columns],
        ),
        _expectation(
            "expect_table_row_count_to_be_between",
            "volume",
            f"Up to {MAX_WINDOW_DAYS} days of the sample's largest day, {ROW_COUNT_FACTOR} times over.",
            min_value=1,
            max_value=most_rows,
        ),
        _type_expectation(key.name, key.kind, key.type_name),
        _type_expectation(profile.time, "datetime", "datetime64"),
    ]
    checks = [
        _expectation(
            "expect_column_values_to_not_be_null", "nullability", "Passed through; never null.", column=column
        )
        for column in (profile.key, profile.time)
    ]
    for column in spec.numeric:
        expectations.append(
            _expectation(
                "expect_column_values_to_be_in_type_list",
                "types",
                "Numeric features are float64 (build_features casts them).",
                column=column,
                type_list=["float64"],
            )
        )
        checks += _column_expectations(profile_column(built[column], "float", days))
    for part in spec.calendar:
        expectations.append(
            _expectation(
                "expect_column_values_to_be_in_type_list",
                "types",
                "Calendar parts are int64.",
                column=part,
                type_list=["int64"],
            )
        )
        checks += [
            _expectation(
                "expect_column_values_to_not_be_null", "nullability", "From the event time.", column=part
            ),
            _expectation(
                "expect_column_values_to_be_between",
                "ranges",
                f"The range of {part} (UTC).",
                column=part,
                min_value=0,
                max_value=CALENDAR_MAX[part],
            ),
        ]
    for column, vocabulary in spec.categorical.items():
        expectations.append(
            _expectation(
                "expect_column_values_to_be_of_type",
                "types",
                "A category over the declared vocabulary.",
                column=column,
                type_="CategoricalDtypeType",
            )
        )
        checks += _column_expectations(
            profile_column(built[column], "string", days),
            value_set=[*vocabulary, UNKNOWN_CATEGORY],
            set_note=f"The declared vocabulary, and {UNKNOWN_CATEGORY} for any other value.",
        )
    contract = f"model inputs of use case {use_case_name} (build_features output)"
    return _suite(name, contract, profile, expectations + checks)


def declaration_text(name: str, dataset: str, profile: SampleProfile, spec: FeatureSpec) -> str:
    """Return the commented YAML draft of the declaration; every line to check says REVIEW."""
    policy = draft_policy(profile)
    days = list(profile.rows_per_day)
    rate = profile.positives / profile.rows
    per_day = profile.rows / len(days)
    regression = profile.task == "regression"
    model_name = f"{name.replace('_', '-')}-{'regressor' if regression else 'classifier'}"
    counted = profile.counted_word
    window_positives = profile.positives / len(days) * policy.window_days
    roles = {profile.key: "key", profile.time: "event time"}
    entries = [f"  {_yaml(c.name)}: {c.kind}" for c in profile.columns]
    width = max(len(entry) for entry in entries) + 2
    schema = [
        f"{entry:<{width}}# {roles[c.name] + '; ' if c.name in roles else ''}{_column_note(c)}"
        for entry, c in zip(entries, profile.columns, strict=True)
    ]
    description = (
        f"REVIEW: what {name} predicts: how much will {profile.target} be for a row of {dataset}?"
        if regression
        else f"REVIEW: what {name} predicts: will {profile.target} be 1 for a row of {dataset}?"
    )
    target_note = (
        f"# A number (task: regression), delivered apart from the rows as a label feed (key, target, "
        f"label_time); {rate:.1%} of the sample's rows have one."
        if regression
        else "# 0/1, delivered apart from the rows as a label feed (key, target, label_time); "
        f"{rate:.1%} of the sample's rows are 1."
    )
    lines = [
        f"# Use-case declaration drafted by `mlloop use-cases init` from {profile.source.name}:",
        f"# {profile.rows} rows, {len(days)} day(s) {days[0]}..{days[-1]}.",
        "# A draft: check every line marked REVIEW below, then run",
        f"#   mlloop use-cases check {name} --sample {profile.source}",
        f"# Its suites, {dataset}_raw.json and {dataset}_features.json, were profiled from the same sample.",
        f"name: {name}",
        f"description: {_yaml(description)}",
        f"dataset: {dataset}",
        f"key_column: {_yaml(profile.key)}",
        f"time_column: {_yaml(profile.time)}",
        *(["task: regression"] if regression else []),
        target_note,
        f"target_column: {_yaml(profile.target)}",
        "# REVIEW: columns holding personal data; they are tokenised at ingestion and may not be features.",
        "pii_columns: []",
        "# Columns in the order deliveries have them, with their kind (what the sample showed).",
        "schema:",
        *schema,
        "suites:",
        f"  raw: {dataset}_raw",
        f"  features: {dataset}_features",
        f"model_name: {model_name}",
        "# REVIEW: days after an event by which most of its labels are known; a default training window ends",
        "# this many days before its run.",
        "label_maturity_days: 1",
        f"# Sized from the sample (~{per_day:,.0f} rows and ~{profile.positives / len(days):,.1f} "
        f"{counted} a day): a window of {policy.window_days} day(s)",
        f"# holds ~{window_positives:,.0f} {counted} (aimed at: {WINDOW_POSITIVES}), "
        f"~{window_positives / 5:,.0f} in its holdout (the last fifth); it trains once it holds "
        f"{WINDOW_SHARE_TO_TRAIN:.0%} of that.",
        "# REVIEW: a longer window if your outcome comes in episodes of several days.",
        "training:",
        f"  window_days: {policy.window_days}",
        f"  min_rows: {policy.min_rows}",
        *([] if regression else [f"  min_positives: {policy.min_positives}"]),
        "drift_exclude: []",
        "# REVIEW: remove every column known only after the event time (it would leak the outcome) and",
        "# any identifier-like number. Categorical vocabularies are the sample's values; any other value",
        f"# reads as {UNKNOWN_CATEGORY}. Bump version on any change: snapshots and models record it.",
        "features:",
        '  version: "1"',
        f"  numeric: {_yaml(spec.numeric)}",
        f"  calendar: {_yaml(spec.calendar)}",
        *(["  categorical:"] if spec.categorical else []),
        *(f"    {_yaml(column)}: {_yaml(values)}" for column, values in spec.categorical.items()),
        "source:",
        "  kind: files",
        f"  # REVIEW: where deliveries land: <uri>/{dataset}/date=YYYY-MM-DD/*.{profile.format} (one or",
        f"  # more files a day), and labels: <uri>/labels/{dataset}/date=<day delivered>/*.{profile.format}",
        "  # (key, target, label_time). A folder, an s3:// URI or a path relative to MLLOOP_DATA_ROOT.",
        f"  uri: inbox/{name}",
        f"  format: {profile.format}",
        *(
            ["  # REVIEW: csv: {delimiter, encoding, decimal, timezone} if not ',', utf-8, '.', UTC."]
            if profile.format == "csv"
            else []
        ),
        "# Gate and monitoring policy: overrides of include/mlloop/promotion/gate_defaults.yaml and",
        "# include/mlloop/monitoring/monitor_defaults.yaml (same keys).",
        *(
            [
                "# A regression is judged by RMSE against predicting the training mean, and decay on RMSE",
                "# (docs/design.md, 'Task types').",
            ]
            if regression
            else [
                "# REVIEW gate.fixed_precision (default 0.20), the precision the served threshold is chosen",
                f"# at: set it well above the base rate ({rate:.1%}).",
            ]
        ),
        "gate: {}",
        "monitor: {}",
    ]
    return "\n".join(lines) + "\n"


def _column_note(column: ColumnProfile) -> str:
    """Return what the sample showed of a column, for the schema's comment."""
    nulls = f"{column.null_share:.1%} null" if column.nulls else "no nulls"
    if column.minimum is not None:
        return f"{nulls}, {column.minimum:g}..{column.maximum:g}"
    if column.values is not None:
        return f"{nulls}, {len(column.values)} values: categorical"
    return f"{nulls}, {column.distinct} distinct"


def _yaml(value: Any) -> str:
    """Return ``value`` as inline YAML (quoted where YAML needs it)."""
    return (
        yaml.safe_dump(value, default_flow_style=True, width=1_000_000, sort_keys=False)
        .removesuffix("\n...\n")
        .strip()
    )


def init_use_case(
    name: str,
    sample: Path,
    *,
    key: str,
    time: str,
    target: str,
    dataset: str | None = None,
    out: Path | None = None,
    force: bool = False,
) -> Draft:
    """Profile ``sample`` and write ``name``'s declaration and raw and features suites.

    They go to the use-case folder and the suites' folder (``MLLOOP_USECASES_DIR``,
    ``MLLOOP_EXPECTATIONS_DIR``), or all three to ``out``.

    Raises:
        DraftError: for a sample, column or option init cannot draft from, or a file that exists
            (without ``force``), naming the fix.
    """
    dataset = dataset or name
    if not DATASET_NAME.fullmatch(dataset):
        raise DraftError(
            f"dataset {dataset!r} goes into storage paths and suite file names: use lower_snake_case "
            "(a letter, then letters, digits or _); pass --dataset."
        )
    paths = (
        (out or usecases_dir()) / f"{name}.yaml",
        (out or expectations_dir()) / f"{dataset}_raw.json",
        (out or expectations_dir()) / f"{dataset}_features.json",
    )
    existing = [str(path) for path in paths if path.exists()]
    if existing and not force:
        raise DraftError(
            f"{', '.join(existing)} already exist(s); pass --force to overwrite, or choose another "
            "NAME or --dataset (or --out DIR)."
        )
    frame, fmt = read_sample(sample)
    profile = profile_sample(frame, sample, fmt, key, time, target)
    spec = draft_features(profile)
    text = declaration_text(name, dataset, profile, spec)
    try:
        use_case = UseCase.model_validate(safe_load_yaml(text), context={"file_stem": name})
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise DraftError(f"the drafted declaration of {name!r} is not valid: {problems}") from exc
    suites = (
        raw_suite(f"{dataset}_raw", profile, name),
        features_suite(f"{dataset}_features", frame, profile, spec, name),
    )
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    paths[0].write_text(text)
    for path, suite in zip(paths[1:], suites, strict=True):
        path.write_text(json.dumps(suite, indent=2) + "\n")
    log.info("Wrote %s", ", ".join(map(str, paths)))
    return Draft(*paths, use_case=use_case, profile=profile)
