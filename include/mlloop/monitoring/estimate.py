"""Performance estimated without labels, from calibrated probabilities: confidence-based estimation (CBPE).

NannyML's CBPE (https://nannyml.readthedocs.io, "Confidence-based Performance Estimation") reads a
calibrated probability ``p`` as the chance that the row is positive, so a window's unknown labels are
distributed as independent ``Bernoulli(p)`` draws and any metric has an expected value without a single
label. NannyML computes the metric from expected confusion-matrix counts and takes its band from the
metric's spread over reference chunks; here both come from the draws themselves: labels are drawn
``draws`` times from the probabilities, the monitored metric (``performance.performance_value``, the
function that scores realised labels) is computed on each draw, and the estimate is the draws' mean with
their percentile band.

The calibration map was itself fitted on a few hundred validation positives, so it is only known up to
its own error. Given the champion's ``Calibration``, each draw first takes a plausible map from the fit's
covariance and re-maps the window's scores with it before drawing labels; the band then covers both the
labels' chance and the map's error. Without it the band covers the labels' chance only, which on
generated data proved too narrow. A model logged before calibration has no fitted map: its scores are not
probabilities (XGBoost's class weighting inflates them), and estimating from them would mislead.

When labels land the realised value falls inside the band at its confidence as long as two assumptions
hold: the scores are calibrated on the window, and the relation between features and labels has not
changed (a concept shift is what a realised value outside the band reveals). Covariate shift is what the
estimate is for: it follows the scores wherever they move.

Pure: arrays in, a record out; the runner reads the window's scores and logs the record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import cast

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

from mlloop.monitoring.decision import PerformanceMetric
from mlloop.monitoring.performance import HIGHER_IS_BETTER, performance_value
from mlloop.promotion.metrics import pr_auc
from mlloop.training.calibration import Calibration

ESTIMABLE = (*HIGHER_IS_BETTER, "pr_auc")
METRIC_NAMES = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "pr_auc_lift": "PR-AUC lift",
    "log_loss": "log loss",
}


@dataclass(frozen=True)
class EstimatedMetric:
    """One metric's expected value over label draws and its percentile band."""

    metric: str
    estimate: float  # mean over the draws where the metric is defined (NaN when it never is)
    lower: float
    upper: float
    undefined: int  # draws where the metric was undefined (no positive or no negative drawn)

    def covers(self, realised: float) -> bool:
        """Return whether a realised value of the metric lies inside the band."""
        return bool(self.lower <= realised <= self.upper)


@dataclass(frozen=True)
class PerformanceEstimate:
    """A window's estimated performance from calibrated scores: base rate, metrics, bands, rows."""

    rows: int
    expected_positives: float  # sum of the probabilities
    base_rate: float  # mean probability: the expected share of positives
    base_rate_lower: float  # band of the share of positives over the draws
    base_rate_upper: float
    confidence: float
    draws: int
    seed: int
    map_uncertainty: bool  # whether the band includes the calibration map's own error
    metrics: dict[str, EstimatedMetric] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Return the estimate as JSON-ready types."""
        return asdict(self)

    def summary(self) -> str:
        """Return one line stating each estimate, its band and the rows it rests on."""
        parts = [
            f"estimated {METRIC_NAMES.get(m.metric, m.metric)} {m.estimate:.3f} "
            f"({self.confidence:.0%} band {m.lower:.3f}-{m.upper:.3f})"
            for m in self.metrics.values()
        ]
        return (
            f"{', '.join(parts)}; base rate {self.base_rate:.4f} ({self.base_rate_lower:.4f}-"
            f"{self.base_rate_upper:.4f}); from calibrated scores of {self.rows} unlabelled rows, "
            f"{self.expected_positives:.0f} expected positives, {self.draws} label draws"
            + ("" if self.map_uncertainty else " (band without the calibration map's error: too narrow)")
        )


def estimate_performance(
    probabilities: ArrayLike,
    metrics: Sequence[str] = ("roc_auc",),
    *,
    calibration: Calibration | None = None,
    draws: int = 300,
    confidence: float = 0.95,
    seed: int = 0,
) -> PerformanceEstimate:
    """Return the expected ``metrics`` and base rate of a window from its calibrated ``probabilities``.

    Each draw labels every row positive with its probability; a metric's estimate is its mean over the
    draws, its band the central ``confidence`` share of them. The same draws serve every metric, and a
    given ``seed`` gives the same result. Undefined draws (a single class drawn) are left out and counted.

    Args:
        probabilities: calibrated P(positive) per row, as ``load_model``'s ``predict_proba`` returns it.
        metrics: any of ``ESTIMABLE`` (``roc_auc``, ``pr_auc``, ``pr_auc_lift``, ``log_loss``).
        calibration: the map that produced ``probabilities`` (``load_model(...).calibration``); when it
            was fitted, each draw re-maps the scores with a plausible map from its covariance first.

    Raises:
        ValueError: for an unknown metric, no rows, or scores that are not probabilities.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    unknown = [m for m in metrics if m not in ESTIMABLE]
    if unknown:
        raise ValueError(f"cannot estimate {unknown}; estimable metrics: {ESTIMABLE}")
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"estimate_performance needs a non-empty 1-D array of probabilities, got {p.shape}")
    if not (np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1):
        raise ValueError(
            f"estimate_performance needs probabilities in [0, 1]; the scores span [{np.nanmin(p):.4g}, "
            f"{np.nanmax(p):.4g}] with {int((~np.isfinite(p)).sum())} non-finite. Score with a calibrated "
            "model (training.model_io.load_model) and drop rows without a score."
        )
    if draws < 2 or not 0 < confidence < 1:
        raise ValueError(f"draws={draws} must be >= 2 and confidence={confidence} inside (0, 1)")
    rng = np.random.default_rng(seed)
    fitted = calibration if calibration is not None and calibration.fitted else None
    maps = fitted.plausible_maps(draws, rng) if fitted else None
    logits = fitted.logits(p) if fitted else p
    values = np.full((len(metrics), draws), np.nan)
    shares = np.empty(draws)
    for d in range(draws):
        chance = p if maps is None else expit(maps[d, 0] * logits + maps[d, 1])
        labels = (rng.random(p.size) < chance).astype(np.int8)
        shares[d] = labels.mean()
        for i, metric in enumerate(metrics):
            values[i, d] = _metric(metric, labels, p)
    tail = (1 - confidence) / 2
    base_lower, base_upper = np.quantile(shares, [tail, 1 - tail])
    return PerformanceEstimate(
        rows=int(p.size),
        expected_positives=float(p.sum()),
        base_rate=float(p.mean()),
        base_rate_lower=float(base_lower),
        base_rate_upper=float(base_upper),
        confidence=confidence,
        draws=draws,
        seed=seed,
        map_uncertainty=maps is not None,
        metrics={metric: _band(metric, values[i], tail) for i, metric in enumerate(metrics)},
    )


def _metric(metric: str, labels: np.ndarray, scores: np.ndarray) -> float:
    """Return ``metric`` of ``scores`` on drawn ``labels``; NaN where a class is missing."""
    if metric == "pr_auc":
        return pr_auc(labels, scores) if 0 < labels.sum() < labels.size else float("nan")
    return performance_value(cast("PerformanceMetric", metric), labels, scores)


def _band(metric: str, values: np.ndarray, tail: float) -> EstimatedMetric:
    """Return the mean and percentile band of a metric's defined draws."""
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        nan = float("nan")
        return EstimatedMetric(metric, nan, nan, nan, undefined=int(values.size))
    lower, upper = np.quantile(defined, [tail, 1 - tail])
    return EstimatedMetric(
        metric,
        estimate=float(defined.mean()),
        lower=float(lower),
        upper=float(upper),
        undefined=int(values.size - defined.size),
    )
