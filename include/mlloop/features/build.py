"""Build model features from a validated frame: one pure function for training and serving alike.

Point-in-time correctness: a history feature of a row uses only the entity's events *strictly
before* the row's event time (``[t - window, t)``), never the row itself, events at the same instant
or anything later. It is computed without a Python loop over entities:

1. rows are sorted by (entity, time); the first position of a row's (entity, time) tie run marks the
   entity's events strictly before it;
2. each window start ``(entity, t - window)`` is placed among the sorted events by one binary search
   over (entity, time) packed into one ascending int64, a start sorting before an event at the same
   instant (so an event exactly ``window`` ago is inside ``[t - window, t)``);
3. counts are differences of positions, sums differences of the entity's own prefix sums.

Adding or changing a later event, or another entity's events, leaves a row's features bit-for-bit
unchanged. Events older than the longest window do not count either; they enter the window sums
only through float rounding of the prefix sums, which rounding sums to ``SUM_DECIMALS`` removes.
The longest window is also the horizon of the other history features: seconds since the previous
event are capped at it (no earlier event within it reads as the cap) and the value is compared with
the entity's mean over it (missing when there is no such event).

Calendar features are taken in UTC. Categoricals become pandas ``category`` columns over the spec's
declared vocabulary plus ``UNKNOWN_CATEGORY``: an unseen value maps to it, a null stays null.

``build_features`` (frames: training, monitoring) and the scoring service share one core,
``feature_arrays``, over plain numpy arrays; the service calls it directly because for a request of a
few rows pandas' set-up would cost more than the features themselves.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlloop.features.spec import UNKNOWN_CATEGORY, FeatureSpec, HistorySpec, feature_columns, window_length

if TYPE_CHECKING:
    from mlloop.usecase import UseCase

log = logging.getLogger(__name__)
_NS_PER_S = 1_000_000_000
_SMALL_FRAME = 256  # rows up to which categoricals are mapped by a dict lookup (same codes, less set-up)
_LOOP_ROWS = 2048  # events up to which per-entity prefix sums run in a Python loop (same bits as pandas)
SUM_DECIMALS = 6  # window sums are rounded to strip float noise of the prefix sums
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class HistoryEvents:
    """Earlier events that count as history but are not output: entity, time (int64 ns UTC) and value."""

    entities: np.ndarray
    times_ns: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        """Return the number of events."""
        return len(self.times_ns)


def build_features(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    *,
    key_column: str,
    time_column: str,
    entity_column: str | None = None,
    target_column: str | None = None,
    context: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Return ``key, time, [target], *feature_columns(spec)`` per row of ``frame`` (same order and index).

    Args:
        frame: a validated frame (PII tokenised) holding the key, time and the spec's input columns.
        spec: the feature spec (usually ``use_case.features``).
        key_column: the row identifier, passed through.
        time_column: the timezone-aware event time; history features look strictly before it.
        entity_column: the entity history features are grouped by; defaults to the spec's.
        target_column: passed through after the time column when ``frame`` has it.
        context: earlier events that count as history but are not output (the scoring service passes
            the entities' recent events): columns entity, ``time_column`` and the history value column.
            The same as prepending them to ``frame`` and dropping their rows from the result.

    Raises:
        ValueError: naming missing columns, a timezone-naive or null time, or a non-numeric column.
    """
    started = time.perf_counter()
    history = spec.history
    if history is not None and entity_column is not None and entity_column != history.entity_column:
        history = history.model_copy(update={"entity_column": entity_column})
    needed = [key_column, time_column, *spec.input_columns()]
    if history is not None:
        needed.append(history.entity_column)
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"build_features: the frame lacks columns {missing} that the key/time or feature spec "
            f"version {spec.version!r} needs; it has {list(frame.columns)}. Pass a validated frame of the "
            "use case, or fix the spec's column names."
        )
    event_ns = _utc_nanoseconds(frame[time_column], time_column)
    inputs: dict[str, Any] = {}
    for column in dict.fromkeys([*spec.numeric, *spec.log1p]):
        inputs[column] = _numeric(frame, column)
    for column in spec.categorical:
        inputs[column] = frame[column]  # a Series: one already mapped onto the vocabulary is kept
    events = None
    if history is not None:
        if history.value_column not in inputs:
            inputs[history.value_column] = _numeric(frame, history.value_column)
        inputs[history.entity_column] = frame[history.entity_column].to_numpy(dtype=object)
        if context is not None and len(context):
            events = HistoryEvents(
                entities=context[history.entity_column].to_numpy(dtype=object),
                times_ns=_utc_nanoseconds(context[time_column], time_column),
                values=_numeric(context, history.value_column),
            )
    arrays = feature_arrays(spec, inputs, event_ns, history=history, context=events)

    # One construction, already in output order (arrays, so nothing is aligned on the index again).
    out: dict[str, object] = {key_column: frame[key_column].array, time_column: frame[time_column].array}
    if target_column is not None and target_column in frame.columns:
        out[target_column] = frame[target_column].array
    out.update(_frame_columns(arrays, spec))
    result = pd.DataFrame(out, index=frame.index)
    log.info(
        "Built %d features (spec version %s) for %d rows in %.2fs",
        len(feature_columns(spec)),
        spec.version,
        len(result),
        time.perf_counter() - started,
    )
    return result


def feature_arrays(
    spec: FeatureSpec,
    inputs: Mapping[str, Any],
    event_ns: np.ndarray,
    *,
    history: HistorySpec | None,
    context: HistoryEvents | None = None,
) -> dict[str, np.ndarray]:
    """Return every feature of ``spec`` as a numpy array, in output order (the core of ``build_features``).

    Args:
        spec: the feature spec.
        inputs: ``spec.input_columns()`` as arrays: numeric ones float64 (NaN for missing), categorical
            and entity ones any sequence pandas can read (object arrays, Series).
        event_ns: event times as int64 nanoseconds since the epoch (UTC).
        history: the history spec to use (``spec.history``, or a copy with another entity column).
        context: earlier events that count as history but are not output.

    Categorical features are returned as codes of ``categorical_dtype(vocabulary)`` (-1: null).
    """
    built: dict[str, np.ndarray] = {}
    for column in spec.numeric:
        built[column] = np.asarray(inputs[column], dtype=np.float64)
    for column in spec.log1p:
        built[f"log1p_{column}"] = np.log1p(np.asarray(inputs[column], dtype=np.float64))
    if spec.calendar:  # UTC, from the epoch nanoseconds (1970-01-01 was a Thursday, day_of_week 3)
        parts = {
            "hour_of_day": (event_ns // (3600 * _NS_PER_S)) % 24,
            "day_of_week": (event_ns // (86_400 * _NS_PER_S) + 3) % 7,
        }
        for part in spec.calendar:
            built[part] = parts[part].astype(np.int64)
    if history is not None:
        built.update(
            _history_features(
                inputs[history.entity_column],
                np.asarray(inputs[history.value_column], dtype=np.float64),
                event_ns,
                history,
                context,
            )
        )
    for column, vocabulary in spec.categorical.items():
        built[column] = categorical_codes(inputs[column], vocabulary)
    return {column: built[column] for column in feature_columns(spec)}


def feature_frame(arrays: Mapping[str, np.ndarray], spec: FeatureSpec) -> pd.DataFrame:
    """Return ``feature_arrays``' output as the frame ``build_features`` would hold (categoricals typed)."""
    return pd.DataFrame(_frame_columns(arrays, spec))


def _frame_columns(arrays: Mapping[str, np.ndarray], spec: FeatureSpec) -> dict[str, Any]:
    """Return the feature columns with categorical codes turned into pandas categoricals."""
    return {
        column: pd.Categorical.from_codes(arrays[column], dtype=categorical_dtype(spec.categorical[column]))
        if column in spec.categorical
        else arrays[column]
        for column in feature_columns(spec)
    }


def build_use_case_features(frame: pd.DataFrame, use_case: UseCase) -> pd.DataFrame:
    """Build the use case's features, taking key, time, target and entity from its declaration."""
    return build_features(
        frame,
        use_case.features,
        key_column=use_case.key_column,
        time_column=use_case.time_column,
        target_column=use_case.target_column,
    )


def categorical_dtype(vocabulary: list[str]) -> pd.CategoricalDtype:
    """Return the category dtype of a declared vocabulary: its values in order, then the unknown marker."""
    return _categorical_dtype(tuple(vocabulary))


@functools.lru_cache(maxsize=256)
def _categorical_dtype(vocabulary: tuple[str, ...]) -> pd.CategoricalDtype:
    """Build (once per vocabulary: serving builds features per request) the category dtype."""
    return pd.CategoricalDtype([*vocabulary, UNKNOWN_CATEGORY], ordered=False)


def categorical_column(values: pd.Series, vocabulary: list[str]) -> pd.Series:
    """Map values onto the declared vocabulary; unseen values become ``UNKNOWN_CATEGORY``, nulls stay null."""
    dtype = categorical_dtype(vocabulary)
    if isinstance(values.dtype, pd.CategoricalDtype) and values.dtype.categories.equals(dtype.categories):
        return values  # already mapped, in the vocabulary's order (model_matrix over built features)
    codes = categorical_codes(values, vocabulary)
    return pd.Series(pd.Categorical.from_codes(codes, dtype=dtype), index=values.index, name=values.name)


def model_matrix(frame: pd.DataFrame, spec: FeatureSpec, columns: list[str]) -> pd.DataFrame:
    """Return the model's input: categoricals with the spec's vocabulary, everything else float32.

    The one conversion from built features to what a model sees, for training, the gate, serving and
    monitoring alike.
    """
    out = {}
    for column in columns:
        values = frame[column]
        if column in spec.categorical:
            out[column] = categorical_column(values, spec.categorical[column])
        elif pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
            out[column] = values.to_numpy(dtype="float32", na_value=float("nan"))
        else:
            out[column] = pd.to_numeric(values, errors="raise").astype("float32")
    return pd.DataFrame(out, index=frame.index)


def categorical_codes(values: Any, vocabulary: list[str]) -> np.ndarray:
    """Return the codes of ``values`` in ``categorical_dtype(vocabulary)``: unseen -> unknown, null -> -1."""
    dtype = categorical_dtype(vocabulary)
    mapped = isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype)
    if mapped and values.dtype.categories.equals(dtype.categories):
        return values.cat.codes.to_numpy()
    if len(values) <= _SMALL_FRAME:  # a scoring request: a dict lookup beats pandas' set-up cost
        index, unknown = _vocabulary_index(tuple(vocabulary)), len(vocabulary)
        cells = values.to_numpy(dtype=object) if isinstance(values, pd.Series) else values
        return np.fromiter(
            (-1 if _is_null(v) else index.get(v, unknown) for v in cells),
            dtype=np.int8 if unknown < 127 else np.int32,
            count=len(values),
        )
    codes = pd.Categorical(values, categories=dtype.categories).codes.copy()
    codes[(codes < 0) & pd.notna(np.asarray(values, dtype=object))] = len(vocabulary)  # seen nowhere
    return codes


@functools.lru_cache(maxsize=256)
def _vocabulary_index(vocabulary: tuple[str, ...]) -> dict[str, int]:
    """Return each declared value's category code."""
    return {value: code for code, value in enumerate(vocabulary)}


def _is_null(value: object) -> bool:
    """Return whether a cell is null the way pandas reads it (None, NaN, NA, NaT)."""
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)


def _utc_nanoseconds(times: pd.Series, column: str) -> np.ndarray:
    """Return event times as int64 nanoseconds since the epoch (UTC); reject naive or null times."""
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        raise ValueError(
            f"build_features: time column {column!r} has dtype {times.dtype}, not a timezone-aware "
            "datetime; point-in-time features need unambiguous instants. Localise it (tz_localize('UTC'))."
        )
    if times.isna().any():
        raise ValueError(
            f"build_features: time column {column!r} has {int(times.isna().sum())} null values; "
            "validate the batch first (the raw suite rejects null times)."
        )
    return pd.DatetimeIndex(times).as_unit("ns").asi8


def epoch_nanoseconds(instants: Sequence[dt.datetime]) -> np.ndarray:
    """Return timezone-aware datetimes as int64 nanoseconds since the epoch (UTC), by arithmetic.

    For Python datetimes (validated requests, served rows) this is far cheaper than pandas' inference
    value by value; datetimes carry microseconds, so nothing finer is lost.
    """
    return np.array([(t - _EPOCH) // _MICROSECOND for t in instants], dtype=np.int64) * 1000


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Return a column as float64; raise naming it when it is not numeric."""
    series = frame[column]
    if not (pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)):
        raise ValueError(
            f"build_features: column {column!r} has dtype {series.dtype}, not numeric; the feature spec "
            "lists it as numeric. Fix the source type or move it to 'categorical'."
        )
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _entity_cumsum(code_s: np.ndarray, v_s: np.ndarray) -> np.ndarray:
    """Return each entity's running sum over rows sorted by entity (pandas' Kahan-compensated cumsum).

    Few events (a scoring request with its entities' history) take a Python loop that performs the very
    same float operations as pandas' ``groupby().cumsum()``, without its set-up cost.
    """
    if len(v_s) > _LOOP_ROWS:
        return pd.Series(v_s).groupby(code_s, sort=False).cumsum().to_numpy()
    out = np.empty(len(v_s), dtype=np.float64)
    accum = compensation = 0.0
    previous = None
    for i, (code, value) in enumerate(zip(code_s.tolist(), v_s.tolist(), strict=True)):
        if code != previous:
            accum = compensation = 0.0
            previous = code
        y = value - compensation
        t = accum + y
        compensation = t - accum - y
        accum = t
        out[i] = t
    return out


def _entity_codes(entities: Any) -> np.ndarray:
    """Return int64 entity codes; each null entity gets a code of its own (it shares no history)."""
    codes, uniques = pd.factorize(entities, use_na_sentinel=True)
    codes = codes.astype(np.int64)
    nulls = codes < 0
    if nulls.any():
        codes[nulls] = len(uniques) + np.arange(int(nulls.sum()), dtype=np.int64)
    return codes


def _history_features(
    entities: Any,
    values: np.ndarray,
    event_ns: np.ndarray,
    history: HistorySpec,
    context: HistoryEvents | None = None,
) -> dict[str, np.ndarray]:
    """Return the history features of every row, in row order (see the module docstring)."""
    if context is not None and len(context):
        features = _history_features(
            np.concatenate([np.asarray(context.entities, dtype=object), np.asarray(entities, dtype=object)]),
            np.concatenate([np.asarray(context.values, dtype=np.float64), values]),
            np.concatenate([np.asarray(context.times_ns, dtype=np.int64), event_ns]),
            history,
        )
        return {name: column[len(context) :] for name, column in features.items()}
    n = len(event_ns)
    codes = _entity_codes(entities)
    values = np.nan_to_num(values, nan=0.0)
    rel_ns = event_ns - (event_ns.min() if n else 0)  # small non-negative times: doubling cannot overflow

    order = np.lexsort((rel_ns, codes))  # stable: ties keep frame order
    code_s, t_s, v_s = codes[order], rel_ns[order], values[order]
    position = np.arange(n, dtype=np.int64)
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = code_s[1:] != code_s[:-1]
    new_run = new_group.copy()
    new_run[1:] |= t_s[1:] != t_s[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, position, 0)) if n else position
    run_start = np.maximum.accumulate(np.where(new_run, position, 0)) if n else position
    # The entity's value sum before each sorted position (its own prefix sums, reset per entity).
    inclusive = _entity_cumsum(code_s, v_s)
    before = np.zeros(n, dtype=np.float64)
    before[1:] = inclusive[:-1]
    before[new_group] = 0.0

    sorted_t = np.sort(t_s)
    event_keys = _event_keys(code_s, t_s, sorted_t)
    sorted_out: dict[str, np.ndarray] = {}
    for window in history.windows:
        start = _window_starts(code_s, event_keys, sorted_t, t_s - history_window_ns(window))
        sorted_out[history.count_column(window)] = run_start - start
        sums = np.round(before[run_start] - before[start], SUM_DECIMALS)
        sorted_out[history.sum_column(window)] = sums + 0.0  # no negative zeros
    lookback_s = history.lookback.total_seconds()
    if history.time_since_previous:
        has_previous = run_start > group_start
        previous_t = t_s[np.maximum(run_start - 1, 0)]
        since = np.where(has_previous, (t_s - previous_t) / _NS_PER_S, lookback_s)
        sorted_out[history.since_previous_column] = np.minimum(since, lookback_s)
    if history.value_vs_mean:
        longest = history.longest_window
        count = sorted_out[history.count_column(longest)].astype(np.float64)
        total = sorted_out[history.sum_column(longest)]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan)
            ratio = np.where(mean > 0, v_s / np.where(mean > 0, mean, 1.0), np.nan)
        sorted_out[history.vs_mean_column] = ratio

    result: dict[str, np.ndarray] = {}
    for name, sorted_values in sorted_out.items():
        unsorted = np.empty_like(sorted_values)
        unsorted[order] = sorted_values
        result[name] = unsorted
    return result


def history_window_ns(window: str) -> int:
    """Return a history window's length in nanoseconds."""
    return int(window_length(window).total_seconds() * _NS_PER_S)


def _window_starts(
    code_s: np.ndarray, event_keys: np.ndarray, sorted_t: np.ndarray, query_t: np.ndarray
) -> np.ndarray:
    """Return, per sorted row, the first sorted position of its entity with time >= ``query_t``.

    See ``_event_keys``: a window start is keyed (entity, 2 * number of event times before it), so it
    sorts after every earlier event of its entity and before any event at the same instant or later.
    """
    stride = 2 * len(sorted_t) + 2
    start_keys = code_s * stride + 2 * np.searchsorted(sorted_t, query_t)
    return np.searchsorted(event_keys, start_keys).astype(np.int64)


def _event_keys(code_s: np.ndarray, t_s: np.ndarray, sorted_t: np.ndarray) -> np.ndarray:
    """Pack each (entity, time)-sorted event into one ascending int64: (entity, 2 * times before it + 1)."""
    stride = 2 * len(sorted_t) + 2
    return code_s * stride + 2 * np.searchsorted(sorted_t, t_s) + 1
