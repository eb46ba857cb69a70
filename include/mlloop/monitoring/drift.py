"""Data drift of the feature columns: Evidently's per-column tests, fast enough for million-row windows.

``check_drift`` runs Evidently 0.7 (``Report`` of one ``ValueDrift`` per column, with its tests) and
returns each column's method, score, threshold and verdict, the share of drifted columns and, on
request, Evidently's HTML report. ``evidently_drift`` is the plain peer: ``DataDriftPreset`` on the
full frames. Both use Evidently's default method choice (``get_stattest`` in
``evidently/legacy/calculations/stattests/registry.py``): with more than 1000 reference rows a numeric
column with more than 5 distinct values (reference and current together) gets the Wasserstein
distance normed by the reference's standard deviation, any other column the Jensen-Shannon distance,
both drifting at a score >= 0.1; with 1000 reference rows or fewer it is K-S (numeric, > 5 values),
chi-squared (> 2 values) or the Z-test (2 values), drifting at a p-value < 0.05.

Where the time goes (cProfile, 1M + 1M rows, 23 columns, ``DataDriftPreset``): every column is
computed three times (``ValueDrift``, the ``DriftedColumnsCount``/``DatasetDriftMetric`` pass and the
``DataDriftTable`` the preset renders), and each pass copies the frames, sorts both full columns
for SciPy's Wasserstein distance, bins them (Doane widths), counts distinct values to pick the
method and correlates all numeric columns again for every numeric column.

What ``check_drift`` does instead, keeping Evidently's statistics and report:

1. One pass: a ``ValueDrift`` per column; the share of drifted columns is counted from their verdicts
   (what ``DriftedColumnsCount`` reports).
2. Quantile sketch of each side larger than ``sample_rows`` (m rows, default 50,000): every column of
   the sketch holds the m mid-quantiles of the full column's finite values (``x[(2j+1)n // 2m]`` of
   the sorted column; for a categorical, the same on its sorted codes, i.e. its counts to within one
   row in m), placed by rank onto a seeded random sample of m rows, so the row order and the joint
   ranks in the report's plots stay those of real rows. Missing values stay where the sampled rows
   have them (Evidently drops them). The reference's sketch is computed once in a
   ``ReferenceProfile`` and reused for every batch checked against the same champion.
3. The method of every column is the one Evidently picks on the *full* frames (distinct values are
   counted on the sorted full columns) and is passed explicitly with its default threshold, so a
   sketch never changes the test (e.g. K-S for Wasserstein).
4. A guaranteed error bound per column, computed from the full columns: the sketch moves a column by
   ``e = W1(column, sketch)`` (computed exactly from the sorted column), and the Wasserstein distance
   is a metric, so the full-data distance lies within ``W_sketch +- (e_ref + e_cur)``; it is divided
   by the full reference's standard deviation (known exactly), giving an interval for the full-data
   score. The Jensen-Shannon distance is a metric too: the full-data score lies within
   ``JS_sketch +- (JS(ref, ref_sketch) + JS(cur, cur_sketch))``. A column whose interval straddles
   the threshold, or whose sketch verdict disagrees with it, is recomputed exactly on the full
   columns with Evidently's own stat test, so every verdict equals the full-data verdict by
   construction (``ColumnDrift.exact``, ``error_bound`` and ``DriftResult.method_note`` say which).

Error: each ``ColumnDrift.error_bound`` bounds ``|score - full-data score|``. Measured by
``bench/drift.py`` (1M reference + 1M current rows, the generated use case's 23 feature columns, the six drift
scenarios, m = 50,000): bounds at most 0.011 (heavy-tailed amount sums), actual ``|score - peer
score|`` at most 0.008, verdicts equal to the peer's on 138 of 138 columns, nothing recomputed; the
full-data scores closest to the 0.1 threshold were 0.067 to 0.079 below it and 0.146 above. A plain
seeded random sample of the same 50,000 rows moved the normed Wasserstein score by up to 0.044 (3
seeds; its error falls only as 1/sqrt(m), and one sampled extreme value moves the reference's standard
deviation), which is why sketches are used. Time: 31-40 s for the peer, 1.3-2.3 s for
``check_drift`` (1.1-1.9 s reusing a ``ReferenceProfile``); the check itself allocates about 60 MiB
over the two frames. The HTML report holds Evidently's ``ValueDrift`` widgets and tests per column,
computed on the sketches (the ``DriftedColumnsCount`` summary is left out: it would compute every
column again). A reference with 1000 or fewer values in a column (Evidently's p-value tests, whose
scores depend on the row counts) is never sketched: both frames are checked whole.

``drift_verdicts`` returns the same full-data verdicts without building a Report (each column's
Evidently stat test on its full values; no HTML), for callers that check many windows.

Thresholds from the data (``calibrate_drift``): Evidently's per-column thresholds are fixed, so a fixed
share of drifted columns fires on every small window of one dataset and never on another. The
threshold of the share (or of one column's score, e.g. the champion's scores for prediction drift) is
instead read off its spread on reference-vs-reference splits of the champion's training data: K
pseudo-windows of the monitored window's row count (at most half the reference), consecutive rows in
time order (so that they carry the day-to-day variation a clean window has) or random rows, each
checked against the rest of the reference with ``drift_verdicts``. The threshold is the
``ceil((1 - a)(K + 1))``-th least drift-like of the K values: a window exchangeable with the splits
exceeds it with probability at most ``(K + 1 - rank) / (K + 1) <= a``. Time-ordered splits overlap:
the reference holds only ``DriftCalibration.disjoint_blocks`` disjoint ones, so their spread
understates the tail; K splits of random rows are independent but leave the day-to-day variation out.
By default both run and the more conservative threshold is kept; ``describe`` states both, the
disjoint blocks and the rate. A column's score gets a third threshold that does not understate that
tail: each disjoint block held out against the rest gives one of k exchangeable values, and the
threshold is Student's one-sided prediction bound of one more (on the log scale), which stays wide
while the reference holds few days. Measured on the demo's four-day champion (2026-12-01): clean days
scored 0.0219 and 0.0136 against a time-split threshold of 0.0175 (a false alarm); the four blocks
scored 0.009-0.017, for a bound of about 0.023; the covariate day scored 0.0475.

Each column against its own spread (``calibrate_column_bounds``, ``judge_window``): a share of drifted
columns saturates when the reference itself moves from day to day (weather: in a month of it, most
columns differ between any few days and the rest, so the share's threshold ends at the top of its range
and no season change can pass it). Instead each column's distance is judged against the distances of the
reference's disjoint window-sized blocks, each held out of the rest: the one-sided prediction bound of
one more block, with the family's false-alarm rate split evenly over its columns (Bonferroni), and a
column must also reach Evidently's own threshold. The bound is taken on the square-root scale: a column
whose level moves from day to day has block distances of about |normal| shape, for which the log scale
(right for one column's sampling noise, as the score above) gives a bound far too wide to ever fire. The
measured rates of both scales are in docs/closed-loop.md.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from mlloop.monitoring.sketch import (
    FEW_VALUES,
    ColumnSketch,
    full_score_interval,
    sample_positions,
    sketch_frame,
)

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_ROWS = 50_000
MIN_SAMPLE_ROWS = 1_000
EVIDENTLY_SMALL_REFERENCE = 1_000  # Evidently picks p-value tests at or below this many reference rows
Kind = Literal["numeric", "categorical"]
SplitsBy = Literal["both", "time", "random"]
BoundScale = Literal["log", "sqrt"]
DRIFT_SHARE = "drift_share"  # calibrate_drift's statistic: the share of drifted columns
DEFAULT_SPLITS = 30
DEFAULT_FALSE_ALARM = 0.05
# Disjoint blocks a column score's prediction bound needs: with fewer, Student's t has under 2 df.
MIN_BLOCKS = 3
# A feature column's block distances mostly follow its level moving from day to day (about |normal|), so its
# bound is taken on the square-root scale; a score's stays log-normal (sampling noise of one column).
BOUND_SCALE: BoundScale = "sqrt"
# Which way each of Evidently's default stat tests points: a distance drifts when high, a p-value when low.
_HIGHER_IS_DRIFT = {"wasserstein": True, "jensenshannon": True, "ks": False, "chisquare": False, "z": False}


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift verdict as Evidently computed it."""

    column: str
    kind: Kind
    method: str  # Evidently's stat test name: wasserstein, jensenshannon, ks, chisquare, z, ...
    score: float  # a distance (drifted when >= threshold) or a p-value (drifted when < threshold)
    threshold: float
    drifted: bool
    exact: bool = True  # score computed on the full columns (False: on the quantile sketch)
    error_bound: float = 0.0  # guaranteed bound on |score - score on the full columns|


@dataclass(frozen=True)
class DriftResult:
    """Per-column verdicts and the share of drifted columns of one drift check."""

    columns: list[ColumnDrift]
    drift_share: float
    drifted_columns: int
    rows_reference: int
    rows_current: int
    method_note: str
    seconds: float
    report_path: str | None = None  # Evidently's HTML report, when one was asked for
    recomputed: list[str] = field(default_factory=list)  # sketch undecided: recomputed on the full columns

    @classmethod
    def from_columns(
        cls,
        columns: list[ColumnDrift],
        *,
        rows_reference: int,
        rows_current: int,
        method_note: str,
        started: float,
        report_path: str | None = None,
        recomputed: list[str] | None = None,
    ) -> DriftResult:
        """Return a check's result from its column verdicts, timed from ``started`` (perf_counter)."""
        drifted = sum(c.drifted for c in columns)
        return cls(
            columns=columns,
            drift_share=drifted / len(columns),
            drifted_columns=drifted,
            rows_reference=rows_reference,
            rows_current=rows_current,
            method_note=method_note,
            seconds=round(time.perf_counter() - started, 3),
            report_path=report_path,
            recomputed=list(recomputed or []),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the result as plain JSON-ready types."""
        return asdict(self)

    def drifted(self, column: str) -> bool:
        """Return whether ``column`` drifted; raise KeyError naming the checked columns otherwise."""
        for item in self.columns:
            if item.column == column:
                return item.drifted
        raise KeyError(f"column {column!r} was not checked; checked: {[c.column for c in self.columns]}")

    @property
    def drifted_names(self) -> list[str]:
        """Return the names of the drifted columns, in check order."""
        return [c.column for c in self.columns if c.drifted]


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    """The reference side of a drift check, built once per champion snapshot and reused for every batch."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    rows: int
    sample_rows: int | None
    seed: int
    sketched: bool  # whether ``frame`` is a quantile sketch (False: the reference columns themselves)
    small_reference: bool  # a column has too few values for sketches: Evidently's p-value tests, no sketch
    frame: pd.DataFrame = field(repr=False)  # what Evidently sees as the reference
    sketches: dict[str, ColumnSketch] = field(repr=False)
    source: pd.DataFrame = field(repr=False)  # the full reference, for exact recomputation

    @classmethod
    def build(
        cls,
        reference: pd.DataFrame,
        *,
        numeric: Sequence[str],
        categorical: Sequence[str],
        seed: int = 0,
        sample_rows: int | None = DEFAULT_SAMPLE_ROWS,
    ) -> ReferenceProfile:
        """Validate the reference and sketch it to ``sample_rows`` rows (None: keep it whole).

        Raises:
            ValueError: naming a missing, mistyped or empty column, an empty frame, or bad arguments.
        """
        numeric, categorical = _check_columns(numeric, categorical)
        if sample_rows is not None and (isinstance(sample_rows, bool) or sample_rows < MIN_SAMPLE_ROWS):
            raise ValueError(
                f"check_drift: sample_rows={sample_rows!r} is too small for stable verdicts; pass an "
                f"integer >= {MIN_SAMPLE_ROWS} (default {DEFAULT_SAMPLE_ROWS}) or None to use all rows."
            )
        _check_frame(reference, "reference", numeric, categorical)
        started = time.perf_counter()
        small = _small_columns(reference, numeric, categorical)
        if small:
            log.warning(
                "Drift: columns %s have %d or fewer reference values, so Evidently uses p-value tests "
                "whose scores depend on the row counts; checking full frames without sketches.",
                small,
                EVIDENTLY_SMALL_REFERENCE,
            )
        sketched = sample_rows is not None and not small and len(reference) > sample_rows
        rows = sample_positions(len(reference), sample_rows, seed, stream=0) if sketched else None
        frame, sketches = sketch_frame(reference, numeric, categorical, rows)
        log.info(
            "Drift reference profile: %d rows, %d columns, %s in %.2fs",
            len(reference),
            len(numeric) + len(categorical),
            f"sketched to {sample_rows} rows" if sketched else "kept whole",
            time.perf_counter() - started,
        )
        return cls(
            numeric=numeric,
            categorical=categorical,
            rows=len(reference),
            sample_rows=sample_rows,
            seed=seed,
            sketched=sketched,
            small_reference=bool(small),
            frame=frame,
            sketches=sketches,
            source=reference,
        )


def check_drift(
    reference: pd.DataFrame | ReferenceProfile,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    seed: int = 0,
    sample_rows: int | None = DEFAULT_SAMPLE_ROWS,
    html_path: str | Path | None = None,
) -> DriftResult:
    """Run Evidently's per-column drift tests on quantile sketches and return full-data verdicts.

    Args:
        reference: the reference features (the champion's training window) or its ``ReferenceProfile``
            (then its seed and sample_rows apply, and numeric/categorical must match it).
        current: the features of the window checked.
        numeric: numeric feature columns; categorical: categorical feature columns.
        seed: seed of the row sample the sketches are placed on (verdicts do not depend on it).
        sample_rows: rows of each side's sketch; a side with at most this many rows is used whole,
            None uses both frames whole.
        html_path: where to write Evidently's HTML report, if anywhere.

    Raises:
        ValueError: naming a missing, mistyped or empty column, an empty frame, or bad arguments.
    """
    started = time.perf_counter()
    profile = _reference_profile(reference, numeric, categorical, seed=seed, sample_rows=sample_rows)
    numeric, categorical = profile.numeric, profile.categorical
    _check_frame(current, "current", numeric, categorical)
    small = profile.small_reference
    sketch_current = profile.sample_rows is not None and not small and len(current) > profile.sample_rows
    rows = (
        sample_positions(len(current), profile.sample_rows, profile.seed, stream=1)
        if sketch_current
        else None
    )
    current_frame, current_sketches = sketch_frame(current, numeric, categorical, rows)
    sketched = profile.sketched or sketch_current
    log.info(
        "Drift check: %d reference rows, %d current rows, %d columns%s",
        profile.rows,
        len(current),
        len(numeric) + len(categorical),
        f"; Evidently runs on sketches of {profile.sample_rows} rows" if sketched else "",
    )

    methods = _column_methods(profile, current_sketches)
    thresholds = {c: _default_threshold(m, c in numeric) if m else None for c, m in methods.items()}
    evidently_started = time.perf_counter()
    snapshot = _run_value_drift(profile.frame, current_frame, numeric, categorical, methods, thresholds)
    log.info(
        "Drift: Evidently computed %d columns in %.2fs", len(methods), time.perf_counter() - evidently_started
    )

    verdicts = _snapshot_verdicts(snapshot, numeric)
    if sketched:
        columns, recomputed, max_bound = _full_data_verdicts(verdicts, profile, current, current_sketches)
    else:
        columns, recomputed, max_bound = verdicts, [], 0.0

    report_path = None
    if html_path is not None:
        report_path = _save_html(snapshot, html_path)
    result = DriftResult.from_columns(
        columns,
        rows_reference=profile.rows,
        rows_current=len(current),
        method_note=_method_note(profile, len(current), sketched, max_bound, recomputed),
        started=started,
        report_path=report_path,
        recomputed=recomputed,
    )
    log.info(
        "Drift: %d of %d columns drifted (share %.2f) in %.2fs: %s",
        result.drifted_columns,
        len(columns),
        result.drift_share,
        result.seconds,
        result.drifted_names or "none",
    )
    return result


def _reference_profile(
    reference: pd.DataFrame | ReferenceProfile,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    seed: int,
    sample_rows: int | None,
) -> ReferenceProfile:
    """Return the reference's profile: the one given (checked against the columns) or one built now."""
    if not isinstance(reference, ReferenceProfile):
        return ReferenceProfile.build(
            reference, numeric=numeric, categorical=categorical, seed=seed, sample_rows=sample_rows
        )
    if (list(numeric), list(categorical)) != (list(reference.numeric), list(reference.categorical)):
        raise ValueError(
            f"check_drift: the reference profile was built for numeric={list(reference.numeric)} and "
            f"categorical={list(reference.categorical)}, not numeric={list(numeric)} and "
            f"categorical={list(categorical)}; rebuild it with ReferenceProfile.build for these columns."
        )
    return reference


def _column_methods(
    profile: ReferenceProfile, current_sketches: dict[str, ColumnSketch]
) -> dict[str, str | None]:
    """Return the stat test Evidently picks for each column on the full frames (None: let it pick)."""
    methods: dict[str, str | None] = dict.fromkeys([*profile.numeric, *profile.categorical])
    if not profile.small_reference:
        for column in methods:
            methods[column] = _default_method(
                "numeric" if column in profile.numeric else "categorical",
                profile.sketches[column],
                current_sketches[column],
            )
    return methods


def _full_data_verdicts(
    verdicts: list[ColumnDrift],
    profile: ReferenceProfile,
    current: pd.DataFrame,
    current_sketches: dict[str, ColumnSketch],
) -> tuple[list[ColumnDrift], list[str], float]:
    """Turn verdicts on sketches into full-data verdicts: bound each score, recompute the undecided.

    Returns the columns (with their error bounds), the recomputed columns and the largest bound kept.
    """
    columns: list[ColumnDrift] = []
    recomputed: list[str] = []
    max_bound = 0.0
    for verdict in verdicts:
        ref_sketch, cur_sketch = profile.sketches[verdict.column], current_sketches[verdict.column]
        low, high = full_score_interval(verdict.method, verdict.score, ref_sketch, cur_sketch)
        bound = max(abs(verdict.score - low), abs(high - verdict.score))
        if (low >= verdict.threshold) == (high >= verdict.threshold) == verdict.drifted:
            max_bound = max(max_bound, bound)
            columns.append(replace(verdict, exact=bound == 0.0, error_bound=bound))
            continue
        score, drifted = _exact_score(profile.source[verdict.column], current[verdict.column], verdict)
        log.info(
            "Drift: %s sketch score %.4f +- %.4f straddles the threshold %.3g; recomputed on the full "
            "columns: %.4f",
            verdict.column,
            verdict.score,
            bound,
            verdict.threshold,
            score,
        )
        recomputed.append(verdict.column)
        columns.append(replace(verdict, score=score, drifted=drifted))
    return columns, recomputed, max_bound


def evidently_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    html_path: str | Path | None = None,
) -> DriftResult:
    """Run Evidently's ``DataDriftPreset`` on the full frames (the plain peer of ``check_drift``).

    Raises:
        ValueError: naming a missing, mistyped or empty column, or an empty frame.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    started = time.perf_counter()
    numeric, categorical = _check_columns(numeric, categorical)
    _check_frame(reference, "reference", numeric, categorical)
    _check_frame(current, "current", numeric, categorical)
    names = [*numeric, *categorical]
    definition = DataDefinition(numerical_columns=list(numeric), categorical_columns=list(categorical))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # correlations of constant columns divide by 0
        snapshot = Report([DataDriftPreset(columns=names)], include_tests=True).run(
            Dataset.from_pandas(current[names], data_definition=definition),
            Dataset.from_pandas(reference[names], data_definition=definition),
        )
    columns = _snapshot_verdicts(snapshot, numeric)
    report_path = _save_html(snapshot, html_path) if html_path is not None else None
    return DriftResult.from_columns(
        columns,
        rows_reference=len(reference),
        rows_current=len(current),
        method_note=f"Evidently {_evidently_version()} DataDriftPreset on the full frames",
        started=started,
        report_path=report_path,
    )


def drift_verdicts(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    methods: Mapping[str, str] | None = None,
) -> DriftResult:
    """Return the full-data verdicts ``check_drift`` reproduces, from Evidently's stat tests alone.

    Each column's stat test (Evidently's default pick, or ``methods[column]``) runs on its full values with
    its default threshold, as ``get_one_column_drift`` runs it; no ``Report`` is built, so there is no HTML
    and none of its plots (most of a Report's time). For callers that need verdicts only, such as
    ``calibrate_drift``'s many splits.

    Raises:
        ValueError: naming a missing, mistyped or empty column, an empty frame, or a method for an
            undeclared column.
    """
    started = time.perf_counter()
    numeric, categorical = _check_columns(numeric, categorical)
    _check_frame(reference, "reference", numeric, categorical)
    _check_frame(current, "current", numeric, categorical)
    methods = dict(methods or {})
    stray = sorted(set(methods) - {*numeric, *categorical})
    if stray:
        raise ValueError(
            f"drift_verdicts: methods name {stray}, which are not declared columns; declared: "
            f"{[*numeric, *categorical]}. Fix the methods mapping or the column lists."
        )
    with warnings.catch_warnings():
        # Silenced as check_drift's report silences them (e.g. chi-square on empty bins).
        warnings.simplefilter("ignore", RuntimeWarning)
        columns = [
            _column_test(c, _kind(c, numeric), reference[c], current[c], methods.get(c), None)
            for c in [*numeric, *categorical]
        ]
    picked = "methods fixed by the caller" if methods else "default methods"
    return DriftResult.from_columns(
        columns,
        rows_reference=len(reference),
        rows_current=len(current),
        method_note=(
            f"Evidently {_evidently_version()} stat test per column on the full columns, {picked} and "
            "default thresholds (no report)"
        ),
        started=started,
    )


# --- calibration -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftCalibration:
    """A drift statistic's threshold, from reference-vs-reference splits of the champion's training data."""

    statistic: str  # DRIFT_SHARE, or the column whose stat-test score is calibrated (e.g. "score")
    threshold: float  # the most conservative of ``thresholds``; a window fires beyond it (``fires``)
    higher_is_drift: bool  # True for a share or a distance, False for a p-value
    nulls: dict[str, tuple[float, ...]]  # per kind ("time", "random", "blocks"): the statistic on each split
    thresholds: dict[str, float]  # per kind: its rank-th least drift-like null value ("blocks": see below)
    rank: int
    false_alarm: float  # the target rate
    false_alarm_bound: float  # (splits + 1 - rank) / (splits + 1): at most false_alarm
    rows_reference: int
    rows_window: int  # rows of the monitored window the threshold is for
    rows_split: int  # rows of each pseudo-window: rows_window, at most half the reference
    methods: dict[str, str]  # the stat test each column ran on every split
    seconds: float

    @property
    def splits(self) -> int:
        """Return the number of reference-vs-reference splits of each ranked kind (time, random)."""
        return len(next(values for kind, values in self.nulls.items() if kind != "blocks"))

    @property
    def set_by(self) -> str:
        """Return the kind of split whose threshold is the threshold."""
        return next(kind for kind, value in self.thresholds.items() if value == self.threshold)

    @property
    def disjoint_blocks(self) -> int:
        """Return how many non-overlapping pseudo-windows the reference holds (independent time splits)."""
        return self.rows_reference // self.rows_split

    def fires(self, value: float) -> bool:
        """Return whether a monitored window's statistic is beyond the threshold."""
        return value > self.threshold if self.higher_is_drift else value < self.threshold

    def describe(self) -> str:
        """Return one line for the monitor's record: the threshold, how it was derived, its rate."""
        capped = (
            f" (capped at half the reference; the window has {self.rows_window:,}: a smaller "
            "pseudo-window is noisier, so the threshold is conservative)"
            if self.rows_split < self.rows_window
            else ""
        )
        kinds = []
        for kind, values in self.nulls.items():
            ordered = sorted(values)
            if kind == "blocks":
                kinds.append(
                    f"the {1 - self.false_alarm:g} prediction bound of {len(values)} disjoint time-ordered "
                    f"blocks each held out of the rest (log scale, t with {len(values) - 1} df) "
                    f"{self.thresholds[kind]:.4g} (null median {ordered[len(ordered) // 2]:.4g}, "
                    f"max {ordered[-1]:.4g})"
                )
                continue
            label = (
                f"time-ordered blocks ({self.disjoint_blocks} disjoint)" if kind == "time" else "random rows"
            )
            kinds.append(
                f"{label} {self.thresholds[kind]:.4g} (null median {ordered[len(ordered) // 2]:.4g}, "
                f"max {ordered[-1]:.4g})"
            )
        more = "the more conservative of " if len(kinds) > 1 else ""
        return (
            f"{self.statistic} threshold {self.threshold:.4g} (fires "
            f"{'above' if self.higher_is_drift else 'below'}): {more}the {self.rank}th least drift-like of "
            f"{self.splits} reference-vs-reference splits of {self.rows_split:,} rows{capped} out of "
            f"{self.rows_reference:,} reference rows, by {' and by '.join(kinds)}; false alarms <= "
            f"{self.false_alarm_bound:.3f} for a window exchangeable with the splits (target "
            f"{self.false_alarm:g})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the calibration as plain JSON-ready types, with its one-line description."""
        return asdict(self) | {
            "splits": self.splits,
            "set_by": self.set_by,
            "disjoint_blocks": self.disjoint_blocks,
            "note": self.describe(),
        }


def calibrate_drift(
    reference: pd.DataFrame,
    window_rows: int,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    statistic: str = DRIFT_SHARE,
    splits: int = DEFAULT_SPLITS,
    false_alarm: float = DEFAULT_FALSE_ALARM,
    splits_by: SplitsBy = "both",
    time_column: str | None = None,
    seed: int = 0,
) -> DriftCalibration:
    """Derive a drift statistic's threshold from its spread on reference-vs-reference splits.

    Each split holds out a pseudo-window of ``window_rows`` rows (at most half the reference) and checks it
    against the rest of the reference with the monitor's per-column tests (``drift_verdicts``: the verdicts
    ``check_drift`` returns), each column's method picked once on the full reference. Two kinds of split,
    each wrong in its own way: "time" holds out consecutive rows in time order at evenly spaced offsets, so
    the pseudo-windows carry the day-to-day variation a clean window has, but they overlap and the
    reference holds only a few disjoint ones, so their spread understates the tail; "random" draws random
    rows (seeded): independent draws, but without the day-to-day variation. Per kind the threshold is the
    ``ceil((1 - false_alarm) (splits + 1))``-th least drift-like null value (a window exchangeable with the
    splits goes beyond it with probability at most ``(splits + 1 - rank) / (splits + 1)``; ties lower it);
    "both" (the default) keeps the more conservative of the two. For a column's score (prediction drift)
    a third kind, "blocks", guards the tail the overlapping time splits understate: the reference is cut
    into its disjoint time-ordered blocks of the window's rows (about its days, when the window is a
    day), each is checked against the rest, and the threshold is the one-sided (1 - false_alarm)
    prediction bound of one more such block, log-normal with Student's t on k - 1 degrees of freedom, so
    a reference of four days gives a wide bound and a long one a tight bound (needs >= 3 blocks; used
    with "both" and "time"; for a distance only: a p-value's -log is about exponential under no change,
    where a log-normal bound would be far too wide, so a p-value keeps the ranked splits).

    Args:
        reference: the champion's training data (its features, or its scores for prediction drift).
        window_rows: rows of the monitored window the threshold is for.
        numeric: numeric columns checked; categorical: categorical columns checked (the monitor's lists,
            drift_exclude already left out).
        statistic: DRIFT_SHARE (share of drifted columns) or a column whose stat-test score is calibrated.
        splits: reference-vs-reference splits of each kind; at least ``ceil(1 / false_alarm) - 1``.
        false_alarm: the target rate of windows without change that fire.
        splits_by: "both", "time" (consecutive rows) or "random" (random rows).
        time_column: orders the rows; None takes the frame's row order as time order.
        seed: seed of the random splits (time splits do not use it).

    Raises:
        ValueError: naming the bad argument or column and the fix (too few splits for the rate, a
            statistic that is no declared column, a reference too small to split).
    """
    started = time.perf_counter()
    numeric, categorical = _check_columns(numeric, categorical)
    rank = _calibration_rank(splits, false_alarm)
    if statistic != DRIFT_SHARE and statistic not in (*numeric, *categorical):
        raise ValueError(
            f"calibrate_drift: statistic {statistic!r} is neither {DRIFT_SHARE!r} nor a declared column "
            f"({[*numeric, *categorical]})."
        )
    if splits_by not in ("both", "time", "random"):
        raise ValueError(f"calibrate_drift: splits_by={splits_by!r}; pass 'both', 'time' or 'random'.")
    order = _reference_order(reference, window_rows, numeric, categorical, time_column, "calibrate_drift")

    methods = {c: _default_test_name(reference[c], _kind(c, numeric)) for c in [*numeric, *categorical]}
    higher = True if statistic == DRIFT_SHARE else _higher_is_drift(methods[statistic], statistic)
    checked = reference[[*numeric, *categorical]]
    size = min(window_rows, len(reference) // 2)
    tests = _SplitTests(
        checked, numeric, methods, [*numeric, *categorical] if statistic == DRIFT_SHARE else [statistic]
    )
    nulls: dict[str, tuple[float, ...]] = {}
    thresholds: dict[str, float] = {}
    for kind in ("time", "random") if splits_by == "both" else (splits_by,):
        null = []
        for block, rest in _splits(order, size, splits, kind, seed):
            columns = tests.verdicts(block, rest)
            null.append(
                float(
                    sum(c.drifted for c in columns) / len(columns)
                    if statistic == DRIFT_SHARE
                    else columns[0].score
                )
            )
        nulls[kind] = tuple(null)
        thresholds[kind] = sorted(null, reverse=not higher)[rank - 1]
    blocks_apply = statistic != DRIFT_SHARE and higher and splits_by in ("both", "time")
    if blocks_apply and len(reference) // size >= MIN_BLOCKS:
        blocks = [columns[0].score for columns in (tests.verdicts(b, r) for b, r in _blocks(order, size))]
        if all(v is not None and math.isfinite(v) for v in blocks):  # else the ranked splits decide alone
            nulls["blocks"] = tuple(float(v) for v in blocks)
            thresholds["blocks"] = prediction_bound(nulls["blocks"], false_alarm)
    calibration = DriftCalibration(
        statistic=statistic,
        threshold=max(thresholds.values()) if higher else min(thresholds.values()),
        higher_is_drift=higher,
        nulls=nulls,
        thresholds=thresholds,
        rank=rank,
        false_alarm=false_alarm,
        false_alarm_bound=(splits + 1 - rank) / (splits + 1),
        rows_reference=len(reference),
        rows_window=window_rows,
        rows_split=size,
        methods=methods,
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info("Drift calibration in %.1fs: %s", calibration.seconds, calibration.describe())
    return calibration


# --- each column against its own block-to-block spread ------------------------------------------------


@dataclass(frozen=True)
class ColumnJudgement:
    """One column of a window judged against its own spread: beyond its bound and Evidently's threshold."""

    column: str
    score: float  # the window's distance to the reference (Evidently's default method)
    bound: float  # the prediction bound of one more block's distance, at the column's share of the rate
    margin: float  # Evidently's default threshold of the method: a distance must also reach it
    beyond: bool  # score > bound and score >= margin


@dataclass(frozen=True)
class ColumnBounds:
    """Each column's distance on the reference's disjoint window-sized blocks, each held out of the rest.

    A window's distance of one column is judged against that column's own block values: the one-sided
    prediction bound of one more block (``bound``), with the family's false-alarm rate split evenly over the
    columns judged together (Bonferroni). ``fallback`` says why these bounds cannot judge (too few blocks,
    a p-value test); the ranked-split share threshold (``calibrate_drift``) judges instead.
    """

    nulls: dict[str, tuple[float, ...]]  # per column: its distance for each block held out of the rest
    methods: dict[str, str]  # Evidently's default stat test per column
    margins: dict[str, float]  # Evidently's default threshold per column
    rows_reference: int
    rows_window: int
    rows_block: int  # the window's rows, at most half the reference
    seconds: float
    fallback: str = ""

    @property
    def blocks(self) -> int:
        """Return how many disjoint blocks the reference holds."""
        return self.rows_reference // self.rows_block

    def bound(self, column: str, false_alarm: float) -> float:
        """Return the (1 - false_alarm) prediction bound of ``column``'s distance (square-root scale)."""
        return prediction_bound(self.nulls[column], false_alarm, scale=BOUND_SCALE)

    def judge(self, scores: Mapping[str, float], false_alarm: float) -> list[ColumnJudgement]:
        """Judge each column of ``scores`` at ``false_alarm / len(scores)`` (the family rate, Bonferroni)."""
        if self.fallback:
            raise ValueError(
                f"ColumnBounds.judge: these bounds cannot judge ({self.fallback}); judge the window with "
                "the ranked-split share threshold (calibrate_drift) instead."
            )
        rate = false_alarm / max(len(scores), 1)
        judged = []
        for column, score in scores.items():
            bound, margin = self.bound(column, rate), self.margins[column]
            judged.append(ColumnJudgement(column, score, bound, margin, score > bound and score >= margin))
        return judged

    def describe(self, false_alarm: float, columns: int) -> str:
        """Return one line for the monitor's record: how the bounds were derived and their rate."""
        if self.fallback:
            return f"own-spread column bounds not used: {self.fallback}"
        return (
            f"each column's distance judged against its own spread over the reference's {self.blocks} "
            f"disjoint time-ordered blocks of {self.rows_block:,} rows (of {self.rows_reference:,}), each "
            "held out of the rest: Student's one-sided prediction bound of one more block on the "
            f"square-root scale (t with {self.blocks - 1} df) at {false_alarm:g}/{columns} per column "
            "(Bonferroni: a window without change puts some column beyond its bound with probability about "
            f"{false_alarm:g} or less, exact for normal square roots); a column also needs Evidently's own "
            "threshold of its method"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the bounds as plain JSON-ready types."""
        return asdict(self) | {"blocks": self.blocks}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnBounds:
        """Return bounds stored by ``to_dict``."""
        stored = {k: v for k, v in data.items() if k != "blocks"}
        return cls(**stored | {"nulls": {c: tuple(v) for c, v in data["nulls"].items()}})


def calibrate_column_bounds(
    reference: pd.DataFrame,
    window_rows: int,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    time_column: str | None = None,
) -> ColumnBounds:
    """Return each column's distance on the reference's disjoint window-sized blocks, each against the rest.

    The reference is cut in time order into its disjoint blocks of the window's rows (at most half the
    reference), and each block is checked against the rest with the monitor's per-column distances
    (``_SplitTests``: Evidently's normed Wasserstein or Jensen-Shannon, as ``drift_verdicts`` computes
    them). A column whose level moves from day to day has large block distances of its own, so a window
    is judged against the spread that column has by itself, not against a fixed 0.1 or a share of columns.
    With fewer than ``MIN_BLOCKS`` blocks, or a column whose test is a p-value (1,000 reference values or
    fewer), ``fallback`` says why and the bounds do not judge.

    Raises:
        ValueError: naming a bad window size, column or time column and the fix.
    """
    started = time.perf_counter()
    numeric, categorical = _check_columns(numeric, categorical)
    order = _reference_order(
        reference, window_rows, numeric, categorical, time_column, "calibrate_column_bounds"
    )
    columns = [*numeric, *categorical]
    methods = {c: _default_test_name(reference[c], _kind(c, numeric)) for c in columns}
    size = min(window_rows, len(reference) // 2)
    nulls: dict[str, list[float]] = {c: [] for c in columns}
    margins: dict[str, float] = {}
    p_values = sorted(c for c in columns if not _higher_is_drift(methods[c], c))
    fallback = ""
    if p_values:
        fallback = (
            f"columns {p_values} run p-value tests (1,000 reference values or fewer), which a distance "
            "bound cannot judge"
        )
    elif len(reference) // size < MIN_BLOCKS:
        fallback = (
            f"the reference holds {len(reference) // size} disjoint blocks of {size:,} rows, the bound "
            f"needs {MIN_BLOCKS}"
        )
    else:
        tests = _SplitTests(reference[columns], numeric, methods, columns)
        for block, rest in _blocks(order, size):
            for verdict in tests.verdicts(block, rest):
                nulls[verdict.column].append(verdict.score)
                margins[verdict.column] = verdict.threshold
        broken = sorted(c for c, values in nulls.items() if not all(math.isfinite(v) for v in values))
        if broken:
            fallback = f"columns {broken} have no finite distance on some block"
    bounds = ColumnBounds(
        nulls={c: tuple(float(v) for v in values) for c, values in nulls.items()} if not fallback else {},
        methods=methods,
        margins=margins if not fallback else {},
        rows_reference=len(reference),
        rows_window=window_rows,
        rows_block=size,
        seconds=round(time.perf_counter() - started, 3),
        fallback=fallback,
    )
    log.info(
        "Column bounds in %.1fs: %s", bounds.seconds, bounds.fallback or f"{bounds.blocks} blocks per column"
    )
    return bounds


@dataclass(frozen=True)
class OwnSpreadVerdict:
    """A window's columns judged against their own spread: all as one family, the top features as another."""

    columns: list[ColumnJudgement]
    top: list[ColumnJudgement]

    @property
    def drifted(self) -> list[str]:
        """Return the columns beyond their own bound and Evidently's threshold, in check order."""
        return [j.column for j in self.columns if j.beyond]

    @property
    def top_drifted(self) -> list[str]:
        """Return the top features beyond their own bound (judged as their own family) and the threshold."""
        return [j.column for j in self.top if j.beyond]

    @staticmethod
    def figures(judged: Sequence[ColumnJudgement]) -> dict[str, tuple[float, float, float]]:
        """Return each judged column's (distance, bound, Evidently's threshold), for the record."""
        return {j.column: (j.score, j.bound, j.margin) for j in judged}


def judge_window(
    bounds: ColumnBounds,
    result: DriftResult,
    false_alarm: float,
    *,
    top: Sequence[str],
    reference: pd.DataFrame,
    current: pd.DataFrame,
) -> OwnSpreadVerdict:
    """Judge a drift check's columns, and apart from them its ``top`` ones, each family at ``false_alarm``.

    A score computed on quantile sketches (``check_drift``) whose error bound straddles its column's bound
    is recomputed on the full columns first, so every verdict is the full-data verdict.
    """
    checked = {c.column: c for c in result.columns}

    def family(columns: Sequence[str]) -> list[ColumnJudgement]:
        rate = false_alarm / max(len(columns), 1)
        scores = {}
        for column in columns:
            verdict = checked[column]
            scores[column] = verdict.score
            if (
                verdict.error_bound > 0
                and abs(verdict.score - bounds.bound(column, rate)) <= verdict.error_bound
            ):
                scores[column], _ = _exact_score(reference[column], current[column], verdict)
        return bounds.judge(scores, false_alarm)

    return OwnSpreadVerdict(family(list(checked)), family(list(top)) if top else [])


def _reference_order(
    reference: pd.DataFrame,
    window_rows: int,
    numeric: Sequence[str],
    categorical: Sequence[str],
    time_column: str | None,
    caller: str,
) -> np.ndarray:
    """Check a calibration's reference and window size; return the reference's row positions in time order.

    Raises:
        ValueError: naming a bad window size, a reference too small to split or an unknown time column.
    """
    _check_frame(reference, "reference", numeric, categorical)
    if isinstance(window_rows, bool) or not isinstance(window_rows, int) or window_rows < 1:
        raise ValueError(f"{caller}: window_rows={window_rows!r}; pass the monitored window's row count.")
    if len(reference) < 2:
        raise ValueError(
            f"{caller}: the reference has {len(reference)} row; splitting it needs at least 2. "
            "Calibrate on the champion's training data."
        )
    if time_column is None:
        return np.arange(len(reference))
    if time_column not in reference.columns:
        raise ValueError(
            f"{caller}: time_column {time_column!r} is not a column of the reference "
            f"({list(reference.columns)}); pass the snapshot's time column or None for row order."
        )
    return np.argsort(reference[time_column].to_numpy(), kind="stable")


def _calibration_rank(splits: int, false_alarm: float) -> int:
    """Return the rank of the null value that bounds false alarms at ``false_alarm`` with ``splits``."""
    if not 0 < false_alarm < 1:
        raise ValueError(
            f"calibrate_drift: false_alarm={false_alarm!r}; pass a rate between 0 and 1, e.g. 0.05."
        )
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"calibrate_drift: splits={splits!r}; pass a positive number of splits.")
    rank = math.ceil((1 - false_alarm) * (splits + 1) - 1e-9)
    if rank > splits:
        raise ValueError(
            f"calibrate_drift: {splits} splits cannot bound false alarms at {false_alarm:g}: even their "
            f"largest value is exceeded by chance with probability 1/{splits + 1}. Use splits >= "
            f"{math.ceil(1 / false_alarm - 1 - 1e-9)} or a larger false_alarm."
        )
    return rank


class _SplitTests:
    """The monitor's per-column stat tests of pseudo-windows against the rest of one reference.

    A split's pseudo-window and rest are complementary subsets of the reference, so a Wasserstein column
    (Evidently's pick for a numeric column of more than 1,000 rows) is sorted once: the distance between
    the two empirical distributions is the integral of the difference of their CDFs, read off the sorted
    column by cumulative counts, O(n) per split instead of two sorts in each call of scipy's
    ``wasserstein_distance``. It is the statistic of Evidently's ``wasserstein`` test (normed by the
    rest's standard deviation, drifted at its default threshold), equal to it up to rounding
    (``tests/unit/test_drift_calibration.py`` compares them). Likewise a Jensen-Shannon column that
    Evidently bins by value (categorical, or numeric with at most 20 values) is coded once, and each
    split's distance comes from value counts. Every other test runs through Evidently.
    """

    def __init__(
        self, frame: pd.DataFrame, numeric: Sequence[str], methods: Mapping[str, str], columns: Sequence[str]
    ) -> None:
        self.frame, self.numeric, self.methods, self.columns = frame, numeric, methods, list(columns)
        self.sorted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for column in self.columns:
            if column not in numeric or methods[column] != "wasserstein":
                continue
            series = frame[column]
            if not pd.api.types.is_float_dtype(series.dtype) and not pd.api.types.is_integer_dtype(
                series.dtype
            ):
                continue  # e.g. an object column of numbers: Evidently's own test handles what it holds
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            clean = np.flatnonzero(np.isfinite(values))  # as _clean: infinities and missing values out
            rows = clean[np.argsort(values[clean], kind="stable")]
            self.sorted[column] = (rows, values[rows])
        # Jensen-Shannon on a column Evidently bins by value (every categorical one; a numeric one of at
        # most 20 values): the distance of the two sides' value shares, from per-split value counts.
        self.codes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for column in self.columns:
            if methods[column] != "jensenshannon":
                continue
            kind = _kind(column, numeric)
            series = frame[column]
            if kind == "numeric":
                series = series.replace([-np.inf, np.inf], np.nan)  # as _clean
            present = series.notna().to_numpy()
            if kind == "numeric" and series[present].nunique() > 20:
                continue  # Evidently bins such a column by histogram: its own test handles it
            codes = pd.factorize(series[present])[0]  # missing values dropped, as _clean drops them
            self.codes[column] = (np.flatnonzero(present), codes, np.bincount(codes))
        self.thresholds = {
            "wasserstein": _default_threshold("wasserstein", True),
            "jensenshannon": _default_threshold("jensenshannon", False),
        }

    def verdicts(self, block: np.ndarray, rest: np.ndarray) -> list[ColumnDrift]:
        """Return each column's verdict of the rows ``block`` (a window) against ``rest`` (the reference)."""
        in_block = np.zeros(len(self.frame), dtype=bool)
        in_block[block] = True
        verdicts = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # as drift_verdicts
            for column in self.columns:
                kind, method = _kind(column, self.numeric), self.methods[column]
                if column in self.sorted:
                    score = self._wasserstein(column, in_block)
                elif column in self.codes:
                    score = self._jensenshannon(column, in_block)
                else:
                    score = None
                if score is None:
                    series = self.frame[column]
                    verdicts.append(
                        _column_test(column, kind, series.iloc[rest], series.iloc[block], method, None)
                    )
                    continue
                threshold = self.thresholds[method]
                verdicts.append(ColumnDrift(column, kind, method, score, threshold, score >= threshold))
        return verdicts

    def _wasserstein(self, column: str, in_block: np.ndarray) -> float | None:
        """Return the normed Wasserstein distance of the block's values to the rest's (None: a side empty)."""
        rows, values = self.sorted[column]
        block = in_block[rows]
        in_window = int(block.sum())
        in_rest = len(rows) - in_window
        if in_window == 0 or in_rest == 0:
            return None
        window_cdf = np.cumsum(block)[:-1] / in_window
        rest_cdf = (np.arange(1, len(rows)) - np.cumsum(block)[:-1]) / in_rest
        distance = float(np.sum(np.abs(window_cdf - rest_cdf) * np.diff(values)))
        return distance / max(float(np.std(values[~block])), 0.001)

    def _jensenshannon(self, column: str, in_block: np.ndarray) -> float | None:
        """Return the Jensen-Shannon distance of the block's value shares to the rest's (None: one empty)."""
        from scipy.spatial import distance

        rows, codes, total = self.codes[column]
        block = np.bincount(codes[in_block[rows]], minlength=len(total))
        rest = total - block
        if block.sum() == 0 or rest.sum() == 0:
            return None
        return float(distance.jensenshannon(rest / rest.sum(), block / block.sum()))


def _blocks(order: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (block rows, rest of the reference) for each disjoint time-ordered block of ``size`` rows."""
    for start in range(0, len(order) - size + 1, size):
        yield order[start : start + size], np.concatenate([order[:start], order[start + size :]])


def prediction_bound(nulls: Sequence[float], false_alarm: float, scale: BoundScale = "log") -> float:
    """Return the one-sided (1 - false_alarm) prediction bound of one more value exchangeable with ``nulls``.

    On the chosen scale (the log, or the square root, of the distance) a new window's value lies below
    mean + t(1 - false_alarm, k - 1) * sd * sqrt(1 + 1/k) with probability 1 - false_alarm, for k values
    (Student's prediction interval, exact for normal values on that scale); the bound is mapped back.
    """
    from scipy.stats import t

    values = np.clip(np.asarray(nulls, dtype=np.float64), 1e-12, None)
    scaled = np.log(values) if scale == "log" else np.sqrt(values)
    k = len(scaled)
    edge = scaled.mean() + t.ppf(1 - false_alarm, k - 1) * scaled.std(ddof=1) * math.sqrt(1 + 1 / k)
    return float(math.exp(edge) if scale == "log" else max(edge, 0.0) ** 2)


def _splits(
    order: np.ndarray, size: int, splits: int, kind: str, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (pseudo-window rows, rest of the reference rows) per split of one kind, each in time order."""
    n = len(order)
    if kind == "random":
        rng = np.random.default_rng(seed)
        for _ in range(splits):
            drawn = rng.permutation(n)
            yield np.sort(drawn[:size]), np.sort(drawn[size:])
        return
    for start in np.linspace(0, n - size, splits).round().astype(np.int64):
        yield order[start : start + size], np.concatenate([order[:start], order[start + size :]])


def _default_test_name(series: pd.Series, kind: Kind) -> str:
    """Return the stat test Evidently picks for a column against a window from its own distribution."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    values = _clean(series, kind)
    column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
    return str(get_stattest(values, values, column_type, None).name)


def _higher_is_drift(method: str, column: str) -> bool:
    """Return whether a larger score of ``method`` means more drift (a distance) or less (a p-value)."""
    if method not in _HIGHER_IS_DRIFT:
        raise ValueError(
            f"calibrate_drift: column {column!r} runs stat test {method!r}, whose direction is not known; "
            f"calibrate one of {sorted(_HIGHER_IS_DRIFT)} (Evidently's defaults)."
        )
    return _HIGHER_IS_DRIFT[method]


def _kind(column: str, numeric: Sequence[str]) -> Kind:
    """Return whether a declared column is numeric or categorical."""
    return "numeric" if column in numeric else "categorical"


# --- checks ------------------------------------------------------------------------------------------


def _check_columns(
    numeric: Sequence[str], categorical: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Return the declared columns as tuples; reject none, duplicates and a column declared twice."""
    if isinstance(numeric, str) or isinstance(categorical, str):
        raise ValueError("check_drift: numeric and categorical are lists of column names, not one string.")
    numeric, categorical = tuple(numeric), tuple(categorical)
    names = [*numeric, *categorical]
    if not names:
        raise ValueError("check_drift: no columns declared; pass numeric=[...] and/or categorical=[...].")
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise ValueError(
            f"check_drift: columns {repeated} are declared more than once; list each column once, as "
            "numeric or as categorical."
        )
    return numeric, categorical


def _check_frame(frame: pd.DataFrame, side: str, numeric: Sequence[str], categorical: Sequence[str]) -> None:
    """Raise a ValueError naming the column and the fix when ``frame`` cannot be checked for drift."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"check_drift: the {side} data must be a pandas DataFrame, got {type(frame).__name__}"
        )
    missing = [c for c in [*numeric, *categorical] if c not in frame.columns]
    if missing:
        raise ValueError(
            f"check_drift: the {side} frame lacks the declared columns {missing}; it has "
            f"{list(frame.columns)}. Build both frames with the same feature spec "
            "(mlloop.features.build_features) or fix the numeric/categorical lists."
        )
    if len(frame) == 0:
        raise ValueError(
            f"check_drift: the {side} frame has no rows; drift needs data on both sides. Check the "
            f"{side} window (its dates and source) or skip the check for an empty window."
        )
    for column in numeric:
        dtype = frame[column].dtype
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raise ValueError(
                f"check_drift: numeric column {column!r} of the {side} frame has dtype {dtype}, not a "
                "number; cast it (pd.to_numeric) or declare it categorical."
            )
        values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isfinite(values).any():
            raise ValueError(
                f"check_drift: numeric column {column!r} of the {side} frame has no finite values "
                f"({len(values)} rows, all missing or infinite); Evidently cannot measure drift on it. "
                "Fix the feature upstream or leave the column out of the check."
            )
    for column in categorical:
        series = frame[column]
        if pd.api.types.is_datetime64_any_dtype(series.dtype) or pd.api.types.is_timedelta64_dtype(
            series.dtype
        ):
            raise ValueError(
                f"check_drift: categorical column {column!r} of the {side} frame has dtype {series.dtype}; "
                "times are not categories. Derive calendar features (hour_of_day, day_of_week) instead."
            )
        if not series.notna().any():
            raise ValueError(
                f"check_drift: categorical column {column!r} of the {side} frame is entirely missing "
                f"({len(series)} rows); Evidently cannot measure drift on it. Fix the feature upstream or "
                "leave the column out of the check."
            )


def _small_columns(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> list[str]:
    """Return the columns with at most EVIDENTLY_SMALL_REFERENCE usable reference values."""
    small = [
        c
        for c in numeric
        if np.isfinite(frame[c].to_numpy(dtype=np.float64, na_value=np.nan)).sum()
        <= EVIDENTLY_SMALL_REFERENCE
    ]
    return small + [c for c in categorical if frame[c].notna().sum() <= EVIDENTLY_SMALL_REFERENCE]


# --- Evidently ---------------------------------------------------------------------------------------


def _default_method(kind: Kind, reference: ColumnSketch, current: ColumnSketch) -> str | None:
    """Return the stat test Evidently picks for a column on the full frames (None: let Evidently pick)."""
    if reference.clean_rows <= EVIDENTLY_SMALL_REFERENCE:
        return None
    if kind == "categorical":
        return "jensenshannon"
    if reference.few_values is None or current.few_values is None:
        return "wasserstein"
    return "jensenshannon" if len(reference.few_values | current.few_values) <= FEW_VALUES else "wasserstein"


def _default_threshold(method: str, numeric: bool) -> float:
    """Return Evidently's default threshold of a stat test."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    kind = ColumnType.Numerical if numeric else ColumnType.Categorical
    return float(get_registered_stattest(method, kind).default_threshold)


def _run_value_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    methods: dict[str, str | None],
    thresholds: dict[str, float | None],
) -> Snapshot:
    """Run one Evidently Report of a ValueDrift (with its test) per column."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=list(numeric), categorical_columns=list(categorical))
    metrics = [ValueDrift(column=c, method=methods[c], threshold=thresholds[c]) for c in methods]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # correlations of constant columns divide by 0
        return Report(metrics, include_tests=True).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )


def _snapshot_verdicts(snapshot: Snapshot, numeric: Sequence[str]) -> list[ColumnDrift]:
    """Read each ValueDrift's method, score, threshold and test status out of an Evidently snapshot."""
    data = snapshot.dict()
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL" for t in data["tests"]}
    names = _stattest_names()
    verdicts = []
    for metric in data["metrics"]:
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        if metric["id"] not in failed:
            raise RuntimeError(
                f"Evidently returned no drift test for column {config['column']!r}; the report must run "
                "with include_tests=True."
            )
        verdicts.append(
            ColumnDrift(
                column=config["column"],
                kind="numeric" if config["column"] in numeric else "categorical",
                method=names.get(config["method"], config["method"]),
                score=float(metric["value"]),
                threshold=float(config["threshold"]),
                drifted=failed[metric["id"]],
            )
        )
    return verdicts


def _stattest_names() -> dict[str, str]:
    """Map Evidently's stat test display names ('K-S p_value') to their names ('ks')."""
    from evidently.legacy.calculations import stattests
    from evidently.legacy.calculations.stattests.registry import StatTest

    return {t.display_name: t.name for t in vars(stattests).values() if isinstance(t, StatTest)}


def _exact_score(reference: pd.Series, current: pd.Series, verdict: ColumnDrift) -> tuple[float, bool]:
    """Return the column's score and verdict on the full columns, with Evidently's own stat test."""
    exact = _column_test(verdict.column, verdict.kind, reference, current, verdict.method, verdict.threshold)
    return exact.score, exact.drifted


def _column_test(
    column: str,
    kind: Kind,
    reference: pd.Series,
    current: pd.Series,
    method: str | None,
    threshold: float | None,
) -> ColumnDrift:
    """Run Evidently's stat test of one column on its full values (its default pick when method is None).

    The values are cleaned as ``get_one_column_drift`` cleans them (``_clean``).
    """
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
    reference, current = _clean(reference, kind), _clean(current, kind)
    test = get_stattest(reference, current, column_type, method)
    result = test(reference, current, column_type, threshold)
    return ColumnDrift(
        column=column,
        kind=kind,
        method=test.name,
        score=float(result.drift_score),
        threshold=float(result.actual_threshold),
        drifted=bool(result.drifted),
    )


def _clean(series: pd.Series, kind: Kind) -> pd.Series:
    """Return a column's values as Evidently tests them: infinities missing (numeric), missing dropped."""
    if kind == "numeric":
        series = series.replace([-np.inf, np.inf], np.nan)
    return series.dropna()


def _save_html(snapshot: Snapshot, html_path: str | Path) -> str:
    """Write Evidently's HTML report and return its path."""
    path = Path(html_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))  # Snapshot.save_html writes only when given a str
    log.info("Drift: Evidently report written to %s", path)
    return str(path)


def _evidently_version() -> str:
    """Return the installed Evidently version."""
    from evidently import __version__

    return str(__version__)


def _method_note(
    profile: ReferenceProfile, current_rows: int, sketched: bool, max_bound: float, recomputed: list[str]
) -> str:
    """Return one line saying how the verdicts were computed and how close they are to full-data ones."""
    note = f"Evidently {_evidently_version()} ValueDrift per column, default methods and thresholds"
    if not sketched:
        return f"{note}, on the full frames ({profile.rows} reference rows, {current_rows} current rows)"
    note += (
        f", methods picked on the full frames; run on quantile sketches of {profile.sample_rows} rows "
        f"(reference {profile.rows} rows, current {current_rows} rows, seed {profile.seed}); "
        f"scores within {max_bound:.2g} of the full-data scores"
    )
    if recomputed:
        note += f"; recomputed on the full columns (bound straddled the threshold): {recomputed}"
    return note
