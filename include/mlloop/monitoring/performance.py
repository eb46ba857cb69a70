"""The evidence of the decay and label-shift rules, from arrays: no MLflow, no storage, no Airflow.

``reference_band`` says what the monitored metric of an unchanged window would be, and how much it would
vary by chance: the champion's holdout (its labels and the champion's scores on it) resampled, stratified,
at the window's labelled positive and negative counts, plus the holdout value's own error (resampled at
its own counts). ``maturity_matched_base_rate`` says what base rate the window's labelled rows would show
if the champion's days' rate held, given that labels arrive late and at class-dependent speed.
``decision.decide`` turns both into rules. A regression champion's band (``regression_band``) resamples its
holdout's rows at the window's labelled row count, for the window's RMSE or MAE.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mlloop.monitoring.decision import BaseRateReference, PerformanceBand, PerformanceMetric
from mlloop.promotion.metrics import log_loss, no_skill_pr_auc, pr_auc, roc_auc

HIGHER_IS_BETTER: dict[str, bool] = {
    "roc_auc": True,
    "pr_auc_lift": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
}


def performance_value(metric: PerformanceMetric, labels: ArrayLike, scores: ArrayLike) -> float:
    """Return ``metric`` of ``scores`` on ``labels``; NaN where it is undefined (a class missing).

    Raises:
        ValueError: for an unknown metric (naming the valid ones), or log loss on scores that are not
            probabilities.
    """
    y = np.asarray(labels, dtype=np.float64)
    if metric == "roc_auc":
        return roc_auc(y, scores)
    if metric == "pr_auc_lift":
        expected = float(no_skill_pr_auc(np.array([y.size]), np.array([y.sum()]))[0])
        return pr_auc(y, scores) / expected if expected > 0 else float("nan")
    if metric == "log_loss":
        return log_loss(y, scores) if 0 < y.sum() < y.size else float("nan")
    if metric in ERRORS:
        return float(ERRORS[metric](np.asarray(scores, dtype=np.float64) - y)) if y.size else float("nan")
    raise ValueError(f"unknown performance_metric {metric!r}; valid: {sorted(HIGHER_IS_BETTER)}")


def no_skill_value(metric: PerformanceMetric, base_rate: float) -> float:
    """Return ``metric`` of a model without skill: ROC-AUC 0.5, lift 1, log loss of the base rate itself."""
    if metric == "log_loss":
        p = min(max(base_rate, 1e-12), 1 - 1e-12)
        return float(-(p * np.log(p) + (1 - p) * np.log1p(-p)))
    return 0.5 if metric == "roc_auc" else 1.0


def reference_band(
    metric: PerformanceMetric,
    holdout_labels: ArrayLike,
    holdout_scores: ArrayLike,
    *,
    window_positives: int,
    window_negatives: int,
    resamples: int,
    seed: int,
) -> PerformanceBand:
    """Return the champion's reference for a window with ``window_positives`` / ``window_negatives``.

    Stratified bootstrap: each resample draws that many positives and negatives (with replacement) from
    the holdout; their mean is the expected value at the window's counts (for PR-AUC lift this follows the
    window's base rate) and their standard deviation the window's chance spread. The holdout resampled at
    its own counts gives the holdout value's estimation error. Deterministic for a given ``seed``.

    Raises:
        ValueError: when the holdout lacks a class or the window has no positive or no negative.
    """
    y = np.asarray(holdout_labels).astype(np.int8)
    s = np.asarray(holdout_scores, dtype=np.float64)
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if positives.size == 0 or negatives.size == 0:
        raise ValueError(
            f"the champion's holdout has {positives.size} positives and {negatives.size} negatives: a "
            "reference band needs both; retrain the champion on a window holding both classes"
        )
    if window_positives < 1 or window_negatives < 1:
        raise ValueError(
            f"a window of {window_positives} labelled positives and {window_negatives} negatives has no "
            "value to judge; wait for labels of both classes"
        )
    rng = np.random.default_rng(seed)
    holdout = _resampled(metric, s, positives, negatives, positives.size, negatives.size, resamples, rng)
    window = _resampled(metric, s, positives, negatives, window_positives, window_negatives, resamples, rng)
    return PerformanceBand(
        metric=metric,
        higher_is_better=HIGHER_IS_BETTER[metric],
        holdout_value=performance_value(metric, y, s),
        holdout_rows=int(y.size),
        holdout_positives=int(positives.size),
        holdout_se=float(np.nanstd(holdout, ddof=1)),
        expected=float(np.nanmean(window)),
        window_se=float(np.nanstd(window, ddof=1)),
        window_rows=int(window_positives + window_negatives),
        window_positives=int(window_positives),
        no_skill=no_skill_value(metric, positives.size / y.size),
        resamples=resamples,
    )


def regression_band(
    metric: PerformanceMetric,
    holdout_values: ArrayLike,
    holdout_predictions: ArrayLike,
    *,
    window_rows: int,
    resamples: int,
    seed: int,
) -> PerformanceBand:
    """Return a regression champion's reference (RMSE or MAE) for a window of ``window_rows`` labelled rows.

    The holdout's rows are resampled with replacement at the window's size and at their own: the mean and
    spread of the first are what an unchanged window shows, the spread of the second the holdout value's
    own error. No skill is predicting the holdout's mean. The band counts rows where a binary one counts
    positives.

    Raises:
        ValueError: for a metric that is not an error (rmse, mae), or a window without rows.
    """
    if metric not in ERRORS:
        raise ValueError(
            f"a regression band judges rmse or mae, not {metric!r}; set monitor.performance_metric"
        )
    y = np.asarray(holdout_values, dtype=np.float64)
    errors = np.asarray(holdout_predictions, dtype=np.float64) - y
    if window_rows < 1 or y.size < 2:
        raise ValueError(
            f"a window of {window_rows} labelled rows against a holdout of {y.size} rows has no value to "
            "judge; wait for labels"
        )
    holdout = _resampled_errors(metric, errors, y.size, resamples, seed)
    window = _resampled_errors(metric, errors, window_rows, resamples, seed + 1)
    return PerformanceBand(
        metric=metric,
        higher_is_better=False,
        holdout_value=float(ERRORS[metric](errors)),
        holdout_rows=int(y.size),
        holdout_positives=int(y.size),
        holdout_se=float(np.std(holdout, ddof=1)),
        expected=float(np.mean(window)),
        window_se=float(np.std(window, ddof=1)),
        window_rows=int(window_rows),
        window_positives=int(window_rows),
        no_skill=float(ERRORS[metric](y - y.mean())),
        resamples=resamples,
        counted="rows",
    )


def _resampled_errors(
    metric: PerformanceMetric, errors: NDArray[np.float64], rows: int, resamples: int, seed: int
) -> NDArray[np.float64]:
    """Return ``metric`` of ``resamples`` draws of ``rows`` errors (with replacement) from ``errors``."""
    rng = np.random.default_rng(seed)
    return np.array([ERRORS[metric](errors[rng.integers(0, errors.size, rows)]) for _ in range(resamples)])


def _resampled(
    metric: PerformanceMetric,
    scores: NDArray[np.float64],
    positives: NDArray[np.intp],
    negatives: NDArray[np.intp],
    n_positive: int,
    n_negative: int,
    resamples: int,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Return ``metric`` on ``resamples`` draws of ``n_positive`` positives and ``n_negative`` negatives.

    ROC-AUC is the Mann-Whitney statistic, so the holdout's scores are ranked once and each draw counts
    drawn negatives per rank (``_roc_auc_of_draw``) instead of sorting every resample; equal to
    ``promotion.metrics.roc_auc`` on the same draw (``tests/unit/test_monitor_performance.py``).
    """
    labels = np.concatenate([np.ones(n_positive), np.zeros(n_negative)])
    ranks = np.unique(scores, return_inverse=True)[1] if metric == "roc_auc" else None
    values = np.empty(resamples)
    for i in range(resamples):
        drawn_positives = positives[rng.integers(0, positives.size, n_positive)]
        drawn_negatives = negatives[rng.integers(0, negatives.size, n_negative)]
        if ranks is not None:
            values[i] = _roc_auc_of_draw(ranks, drawn_positives, drawn_negatives)
            continue
        rows = np.concatenate([drawn_positives, drawn_negatives])
        values[i] = performance_value(metric, labels, scores[rows])
    return values


def _roc_auc_of_draw(
    ranks: NDArray[np.intp], positives: NDArray[np.intp], negatives: NDArray[np.intp]
) -> float:
    """Return the ROC-AUC of drawn rows from their score ranks: the share of (positive, negative) pairs
    the positive outranks, ties counting half."""
    per_rank = np.bincount(ranks[negatives], minlength=int(ranks.max()) + 1)
    below = np.cumsum(per_rank) - per_rank  # drawn negatives scored strictly lower than each rank
    at = ranks[positives]
    wins = below[at].sum() + 0.5 * per_rank[at].sum()
    return float(wins / (positives.size * negatives.size))


def _rmse(errors: NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(errors**2)))


def _mae(errors: NDArray[np.float64]) -> float:
    return float(np.mean(np.abs(errors)))


ERRORS = {"rmse": _rmse, "mae": _mae}


def maturity_matched_base_rate(
    reference_labels: ArrayLike, reference_delays: ArrayLike, window_ages: ArrayLike
) -> BaseRateReference:
    """Return the champion's days' base rate as the window's labelled rows would show it, if unchanged.

    A row of the window is labelled now when its label's delay is at most its age (the time from its
    event to the label cut-off). So each reference row with a known label counts with the share of window
    rows old enough to have it by now (``reference_delays`` and ``window_ages`` in one unit, e.g. seconds;
    reference rows whose label is still unknown are left out by the caller). Chargebacks take longer than
    confirmations of genuine payments: unweighted, a recent window would look like a drop of the base rate.

    Raises:
        ValueError: when the labels and delays differ in length.
    """
    labels = np.asarray(reference_labels, dtype=np.float64)
    delays = np.asarray(reference_delays, dtype=np.float64)
    if labels.shape != delays.shape:
        raise ValueError(f"reference labels {labels.shape} and delays {delays.shape} must have one length")
    ages = np.sort(np.asarray(window_ages, dtype=np.float64))
    if ages.size == 0 or labels.size == 0:
        return BaseRateReference(rate=float("nan"), rows=int(labels.size), effective_rows=0.0)
    weights = (ages.size - np.searchsorted(ages, delays, side="left")) / ages.size
    total = float(weights.sum())
    if total <= 0:
        return BaseRateReference(rate=float("nan"), rows=int(labels.size), effective_rows=0.0)
    return BaseRateReference(
        rate=float(weights @ labels / total),
        rows=int(labels.size),
        effective_rows=total**2 / float(weights @ weights),
    )
