"""The gate and the holdout metrics of a regression use case (``task: regression``): pure, on numpy arrays.

A regression model is judged by its errors, against a model without skill: predicting the training mean for
every row (the no-skill RMSE). Every interval is a bootstrap of the holdout's rows with the same resampling
as the binary metrics (``metrics.resample_counts``: each resample is a vector of row counts, so a statistic
of all resamples is one matrix product with the rows' errors).

The rules, each stating its estimate, interval and rows:

- ``skill_rmse``: the upper end of the challenger's RMSE interval must be below the no-skill RMSE on the
  same holdout, so a constant or random predictor passes with probability about (1 - confidence) / 2.
- ``non_inferiority``: against a champion, paired bootstrap of the relative change of the mean squared
  error, (challenger MSE - champion MSE) / champion MSE, on the same resampled rows; its upper end must be
  below ``non_inferiority_margin`` (0.02: at most 2% more squared error, at the gate's confidence).
  The margin is relative because squared errors carry the target's units.
- ``slice_no_regression.<column>``: no judged slice's RMSE may be worse than the champion's by more than
  ``slice_margin`` (relative); ``min_slice_positives`` does not apply.
- the budgets, as for binary models. The operating-point rules (a precision target, recall there) are
  binary-only and are recorded as not applicable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from mlloop.promotion.gate_config import GateConfig
from mlloop.promotion.metrics import (
    BootstrapInterval,
    MetricInterval,
    _percentile_interval,
    resample_counts,
)
from mlloop.promotion.report import RuleResult, SliceResult, SliceStatus

if TYPE_CHECKING:
    from mlloop.promotion.gate import ScoredModel

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class RegressionMetrics:
    """A regression model's holdout metrics, with bootstrap intervals, and the no-skill RMSE beside them."""

    rmse: float
    rmse_lower: float
    rmse_upper: float
    mae: float
    mae_lower: float
    mae_upper: float
    no_skill_rmse: float  # RMSE of predicting the training mean for every holdout row
    rows: int

    def to_dict(self) -> dict[str, float | None]:
        """Return the metrics as a JSON-serialisable dict (NaN as None)."""
        return {key: None if math.isnan(value) else float(value) for key, value in asdict(self).items()}


def rmse(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Return the root mean squared error of ``predictions``."""
    errors = np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64)
    return float(np.sqrt(np.mean(errors**2)))


def mae(labels: ArrayLike, predictions: ArrayLike) -> float:
    """Return the mean absolute error of ``predictions``."""
    errors = np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.abs(errors)))


def error_intervals(
    labels: ArrayLike, predictions: ArrayLike, *, resamples: int, confidence: float, seed: int
) -> dict[str, MetricInterval]:
    """Return the RMSE and MAE of ``predictions`` with bootstrap percentile intervals (deterministic by seed).

    Raises:
        ValueError: when labels and predictions are empty or differ in length.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} must be non-empty 1-D of one length")
    squared, absolute = (p - y) ** 2, np.abs(p - y)
    means = _resampled_means(np.stack([squared, absolute]), resamples, seed)
    values = {"rmse": (np.sqrt(means[0]), rmse(y, p)), "mae": (means[1], mae(y, p))}
    intervals = {}
    for metric, (drawn, estimate) in values.items():
        lower, upper, undefined = _percentile_interval(drawn, confidence, metric)
        intervals[metric] = MetricInterval(metric, estimate, lower, upper, confidence, resamples, undefined)
    return intervals


def regression_metrics(
    labels: ArrayLike, predictions: ArrayLike, training_mean: float, config: GateConfig
) -> RegressionMetrics:
    """Return a model's holdout RMSE and MAE with intervals (the gate's resampling) and the no-skill RMSE."""
    y = np.asarray(labels, dtype=np.float64)
    intervals = error_intervals(
        y, predictions, resamples=config.bootstrap_resamples, confidence=config.confidence, seed=config.seed
    )
    root, absolute = intervals["rmse"], intervals["mae"]
    return RegressionMetrics(
        rmse=root.estimate,
        rmse_lower=root.lower,
        rmse_upper=root.upper,
        mae=absolute.estimate,
        mae_lower=absolute.lower,
        mae_upper=absolute.upper,
        no_skill_rmse=rmse(y, np.full(y.size, training_mean)),
        rows=int(y.size),
    )


def paired_squared_error(
    labels: ArrayLike,
    challenger: ArrayLike,
    champion: ArrayLike,
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> BootstrapInterval:
    """Return the percentile interval of (challenger MSE - champion MSE) / champion MSE over paired resamples.

    Both models' squared errors are averaged over the same resampled rows. A resample where the champion's
    MSE is zero is undefined and left out.

    Raises:
        ValueError: when the champion is exact on every resample (the change is undefined everywhere).
    """
    y = np.asarray(labels, dtype=np.float64)
    errors = np.stack([(np.asarray(m, dtype=np.float64) - y) ** 2 for m in (challenger, champion)])
    means = _resampled_means(errors, resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        changes = np.where(means[1] > 0, (means[0] - means[1]) / means[1], np.nan)
    lower, upper, undefined = _percentile_interval(changes, confidence, "relative MSE change")
    point = errors.mean(axis=1)
    return BootstrapInterval(
        metric="relative_mse_change",
        delta=float((point[0] - point[1]) / point[1]) if point[1] > 0 else float("nan"),
        lower=lower,
        upper=upper,
        confidence=confidence,
        resamples=resamples,
        undefined=undefined,
        deltas=changes,
    )


def skill_rule(metrics: RegressionMetrics, config: GateConfig) -> RuleResult:
    """Return the skill floor: the upper end of the RMSE interval below the no-skill RMSE."""
    return RuleResult(
        name="skill_rmse",
        passed=metrics.rmse_upper < metrics.no_skill_rmse,
        observed=metrics.rmse_upper,
        threshold=metrics.no_skill_rmse,
        comparison="<",
        detail=f"challenger RMSE {metrics.rmse:.4g}, {config.confidence:.0%} interval "
        f"[{metrics.rmse_lower:.4g}, {metrics.rmse_upper:.4g}] over {config.bootstrap_resamples} resamples "
        f"of {metrics.rows:,} holdout rows (MAE {metrics.mae:.4g}); predicting the training mean reaches "
        f"RMSE {metrics.no_skill_rmse:.4g}, which the interval's upper end must be below",
        evidence=metrics.to_dict(),
    )


def not_applicable_rule() -> RuleResult:
    """Return the record of the binary-only operating-point rules, which a regression model skips."""
    return RuleResult(
        name="operating_point",
        passed=True,
        observed=None,
        threshold=None,
        comparison="n/a",
        detail="not applicable: the precision target and recall there judge a score threshold, and a "
        "regression model serves its predicted value without one (fixed_precision and the costs are unused)",
    )


def regression_non_inferiority_rule(
    challenger: ScoredModel, champion: ScoredModel, labels: FloatArray, config: GateConfig
) -> RuleResult:
    """Return whether the challenger's squared error is not worse than the champion's beyond the margin."""
    interval = paired_squared_error(
        labels,
        challenger.scores,
        champion.scores,
        resamples=config.bootstrap_resamples,
        confidence=config.confidence,
        seed=config.seed,
    )
    margin = config.non_inferiority_margin
    detail = (
        f"(challenger MSE - champion MSE) / champion MSE = {interval.delta:+.4f}, {config.confidence:.0%} "
        f"interval [{interval.lower:+.4f}, {interval.upper:+.4f}] over {interval.resamples} paired "
        f"resamples of {labels.size:,} rows (seed {config.seed}); its upper end must be below +{margin}"
    )
    return RuleResult(
        name="non_inferiority",
        passed=interval.upper < margin,
        observed=interval.upper,
        threshold=margin,
        comparison="<",
        detail=detail,
        evidence=interval.to_dict(),
    )


def regression_slices(
    challenger: ScoredModel,
    champion: ScoredModel,
    holdout: pd.DataFrame,
    labels: FloatArray,
    config: GateConfig,
) -> list[SliceResult]:
    """Return both models' RMSE on every value of every slice column, and the relative change.

    ``delta`` is (champion RMSE - challenger RMSE) / champion RMSE: negative when the challenger is worse,
    regressed below ``-slice_margin``, as the binary slices' metric differences are read.

    The caller has checked that the slice columns are holdout columns (``gate.evaluate_gate``).
    """
    results = []
    for column in config.slice_columns:
        values = holdout[column].astype(object)
        for value, rows in values.groupby(values, dropna=False, sort=True).indices.items():
            name = "<null>" if pd.isna(value) else str(value)
            results.append(_slice(column, name, rows, challenger, champion, labels, config))
    return results


def _slice(
    column: str,
    name: str,
    rows: NDArray[np.intp],
    challenger: ScoredModel,
    champion: ScoredModel,
    labels: FloatArray,
    config: GateConfig,
) -> SliceResult:
    """Return one slice's RMSE for both models, or why it is skipped."""
    if rows.size < config.min_slice_rows:
        note = f"{rows.size} rows < min_slice_rows {config.min_slice_rows}"
        return SliceResult(column, name, int(rows.size), 0, None, None, None, "too_small", note)
    ours, theirs = (rmse(labels[rows], model.scores[rows]) for model in (challenger, champion))
    if theirs == 0:
        note = "the champion is exact on this slice: a relative change is undefined"
        return SliceResult(column, name, int(rows.size), 0, ours, theirs, None, "undefined", note)
    delta = (theirs - ours) / theirs
    status: SliceStatus = "regressed" if delta < -config.slice_margin else "ok"
    return SliceResult(column, name, int(rows.size), 0, ours, theirs, delta, status)


def _resampled_means(values: FloatArray, resamples: int, seed: int) -> FloatArray:
    """Return the mean of each row of ``values`` (k, n) over ``resamples`` bootstrap draws: (k, resamples)."""
    n_rows = values.shape[-1]
    chunks = [
        values @ counts.T.astype(np.float64) / n_rows for counts in resample_counts(n_rows, resamples, seed)
    ]
    return np.concatenate(chunks, axis=-1)
