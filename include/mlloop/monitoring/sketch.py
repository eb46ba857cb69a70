"""Quantile sketches of feature columns, and how far a drift score on sketches can be from the full data.

A sketch keeps m rows of a column: the m mid-quantiles of its finite values (``x[(2j+1)n // 2m]`` of the
sorted column; for a categorical, the same on its sorted codes), placed by rank onto a seeded random
sample of m rows. ``ColumnSketch`` records what the error bounds need: the full column's size and
spread and the sketch's exact distance to it (Wasserstein-1 for numeric, Jensen-Shannon for few
values). Both distances are metrics, so ``full_score_interval`` bounds the full-data score from the
score on the sketches. ``monitoring/drift.py`` runs Evidently on the sketches and recomputes a column
whose interval straddles its threshold; the reasoning and measured errors are in its docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

FEW_VALUES = 5  # numeric columns with at most this many distinct values get Jensen-Shannon
MIN_STD = 0.001  # Evidently's floor for the Wasserstein normalisation
ROUNDING = 1e-6  # relative slack on the bounds for float rounding (float32 columns included)


@dataclass(frozen=True)
class ColumnSketch:
    """What the bounds need of one column on one side: sizes, spreads and the sketch's distance to it."""

    clean_rows: int  # non-missing (finite) values of the full column
    std: float = 0.0  # population std of the full column's finite values (numeric)
    sketch_std: float = 0.0  # the same of the sketch
    w1_error: float = 0.0  # Wasserstein-1 distance between the full column and its sketch (numeric)
    js_error: float = 0.0  # Jensen-Shannon distance between their value distributions (few values)
    few_values: frozenset[Any] | None = None  # the distinct values when there are at most FEW_VALUES


def sample_positions(n: int, m: int | None, seed: int, *, stream: int) -> np.ndarray:
    """Return ``m`` distinct row positions out of ``n``, ascending (so row order is kept), for a seed."""
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.choice(n, size=m, replace=False))


def sketch_frame(
    frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str], rows: np.ndarray | None
) -> tuple[pd.DataFrame, dict[str, ColumnSketch]]:
    """Return the frame Evidently sees (the declared columns, sketched onto ``rows`` if given), sketches."""
    out: dict[str, Any] = {}
    sketches: dict[str, ColumnSketch] = {}
    for column in numeric:
        out[column], sketches[column] = numeric_sketch(frame[column], rows)
    for column in categorical:
        out[column], sketches[column] = categorical_sketch(frame[column], rows)
    return pd.DataFrame(out), sketches


def mid_quantile_positions(n: int, m: int) -> np.ndarray:
    """Return the positions of the m mid-quantiles of n sorted values: (2j + 1) n // 2m."""
    return (2 * np.arange(m, dtype=np.int64) + 1) * n // (2 * m)


def numeric_sketch(series: pd.Series, rows: np.ndarray | None) -> tuple[Any, ColumnSketch]:
    """Return a numeric column (or its sketch on ``rows``) and what the bounds need of it."""
    values = series.to_numpy()
    if values.dtype.kind not in "iuf":
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values) if values.dtype.kind == "f" else np.ones(len(values), dtype=bool)
    ordered = np.sort(values[finite])
    n = len(ordered)
    std = float(np.std(ordered, dtype=np.float64))
    few = few_distinct(ordered)
    if rows is None:
        return series.reset_index(drop=True), ColumnSketch(n, std=std, sketch_std=std, few_values=few)
    sketch = values[rows].copy()
    slots = np.flatnonzero(finite[rows])
    if len(slots) == 0:  # every sampled row is missing: give the sketch one value so it is not empty
        slots = np.array([0])
    positions = mid_quantile_positions(n, len(slots))
    picked = ordered[positions]
    sketch[slots[np.argsort(sketch[slots], kind="stable")]] = picked
    js_error = js_distance(*value_shares(ordered, picked, few)) if few is not None else 0.0
    return sketch, ColumnSketch(
        n,
        std=std,
        sketch_std=float(np.std(picked, dtype=np.float64)),
        w1_error=w1_to_sketch(ordered, positions),
        js_error=js_error,
        few_values=few,
    )


def categorical_sketch(series: pd.Series, rows: np.ndarray | None) -> tuple[Any, ColumnSketch]:
    """Return a categorical column (or its sketch on ``rows``) and what the bounds need of it."""
    is_category = isinstance(series.dtype, pd.CategoricalDtype)
    if is_category:
        codes = series.cat.codes.to_numpy().astype(np.int64)
        levels = len(series.cat.categories)
        uniques = None
    else:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
        levels = len(uniques)
    counts = np.bincount(codes[codes >= 0], minlength=levels)
    n = int(counts.sum())
    if rows is None:
        return series.reset_index(drop=True), ColumnSketch(n)
    sketch_codes = codes[rows].copy()
    slots = np.flatnonzero(sketch_codes >= 0)
    if len(slots) == 0:
        slots = np.array([0])
    picked = np.searchsorted(np.cumsum(counts), mid_quantile_positions(n, len(slots)), side="right")
    sketch_codes[slots[np.argsort(sketch_codes[slots], kind="stable")]] = picked
    error = js_distance(counts / n, np.bincount(picked, minlength=levels) / len(picked))
    if is_category:
        sketch: Any = pd.Categorical.from_codes(sketch_codes, dtype=series.dtype)
    else:
        sketch = series.iloc[rows].reset_index(drop=True)
        sketch.iloc[slots] = np.asarray(uniques)[sketch_codes[slots]]
    return sketch, ColumnSketch(n, js_error=error)


def few_distinct(ordered: np.ndarray) -> frozenset[Any] | None:
    """Return the distinct values of a sorted array when there are at most FEW_VALUES, else None."""
    if len(ordered) == 0:
        return frozenset()
    starts = np.flatnonzero(ordered[1:] != ordered[:-1])
    if len(starts) >= FEW_VALUES:
        return None
    return frozenset(ordered[np.concatenate(([0], starts + 1))].tolist())


def value_shares(
    ordered: np.ndarray, picked: np.ndarray, few: frozenset[Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Return the shares of each of a few distinct values in the full sorted column and in its sketch."""
    values = np.array(sorted(few), dtype=ordered.dtype)
    full = np.diff(np.searchsorted(ordered, values, side="left"), append=len(ordered))
    sketch = np.diff(np.searchsorted(picked, values, side="left"), append=len(picked))  # picked is sorted
    return full / len(ordered), sketch / len(picked)


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Return the Jensen-Shannon distance (natural log, as Evidently computes it) of two distributions."""
    from scipy.spatial import distance

    return float(distance.jensenshannon(p, q))


def w1_to_sketch(ordered: np.ndarray, positions: np.ndarray) -> float:
    """Return the exact Wasserstein-1 distance between n sorted values and their m picked mid-quantiles.

    Both quantile functions are steps: value i holds u in [i/n, (i+1)/n), sketch value j holds u in
    [j/m, (j+1)/m); in units of 1/(n m) these are [i m, (i+1) m) and [j n, (j+1) n). Each value is
    first charged in full to the sketch interval it starts in; a value whose interval holds a sketch
    boundary (m <= n, so at most one) then moves its part beyond the boundary to the next sketch value.
    """
    n, m = len(ordered), len(positions)
    if m >= n:
        return 0.0
    x = ordered.astype(np.float64, copy=False)
    picked = x[positions]
    j = np.arange(m + 1, dtype=np.int64)
    first_value = -((-j * n) // m)  # ceil(j n / m): the first value starting in sketch interval j
    total = m * float(np.abs(x - np.repeat(picked, np.diff(first_value))).sum())
    boundary = j[1:-1] * n
    crossing = boundary % m != 0
    boundary, right = boundary[crossing], j[1:-1][crossing]
    value = boundary // m  # the value whose interval holds the boundary
    beyond = (value + 1) * m - boundary
    total += float((beyond * (np.abs(x[value] - picked[right]) - np.abs(x[value] - picked[right - 1]))).sum())
    return total / (float(n) * m)


def full_score_interval(
    method: str, score: float, reference: ColumnSketch, current: ColumnSketch
) -> tuple[float, float]:
    """Return bounds of a column's score on the full frames, given the score ``method`` gave on sketches."""
    if method == "wasserstein":
        distance = score * max(reference.sketch_std, MIN_STD)  # W1 between the sketches
        error = reference.w1_error + current.w1_error + ROUNDING * (distance + 1.0)
        norm = max(reference.std, MIN_STD)
        return max(distance - error, 0.0) / norm, (distance + error) / norm
    if method == "jensenshannon":
        error = reference.js_error + current.js_error + ROUNDING
        return max(score - error, 0.0), score + error
    raise ValueError(f"no error bound for sketched drift method {method!r}")  # never sketched
