"""Label-free performance estimate (CBPE-style): matches realised metrics when calibrated, not otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit
from scipy.stats import binom

from mlloop.monitoring.estimate import ESTIMABLE, estimate_performance
from mlloop.monitoring.performance import performance_value
from mlloop.promotion.metrics import pr_auc
from mlloop.training.calibration import fit_calibration

CONFIDENCE = 0.95


def probabilities(seed: int, rows: int = 3_000) -> np.ndarray:
    """Return calibrated rare-event probabilities (about 3% positives)."""
    return expit(np.random.default_rng(seed).normal(-4.2, 1.6, rows))


def draw(p: np.ndarray, seed: int) -> np.ndarray:
    """Return labels drawn from ``p``: what the window's labels will be if ``p`` is calibrated."""
    return (np.random.default_rng(seed).random(p.size) < p).astype(np.int8)


def realised(metric: str, labels: np.ndarray, scores: np.ndarray) -> float:
    """Return the metric the monitor computes once labels land."""
    return pr_auc(labels, scores) if metric == "pr_auc" else performance_value(metric, labels, scores)


def distorted(p: np.ndarray) -> np.ndarray:
    """Return scores as a class-weighted, over-confident model gives them: same ranking, odds inflated."""
    return expit(1.6 * logit(p) + 2.0)


def least_covered(windows: int) -> float:
    """Return the binomial 0.1% quantile of windows covered when each is covered with CONFIDENCE."""
    return float(binom.ppf(0.001, windows, CONFIDENCE))


def test_realised_metrics_fall_inside_the_band_at_its_confidence() -> None:
    windows, metrics = 20, ("roc_auc", "pr_auc")
    covered = dict.fromkeys((*metrics, "base_rate"), 0)
    for w in range(windows):
        p = probabilities(w)
        labels = draw(p, 1000 + w)
        estimate = estimate_performance(p, metrics, draws=100, confidence=CONFIDENCE, seed=w)
        for metric in metrics:
            covered[metric] += estimate.metrics[metric].covers(realised(metric, labels, p))
        covered["base_rate"] += estimate.base_rate_lower <= labels.mean() <= estimate.base_rate_upper
    assert min(covered.values()) >= least_covered(windows), covered


def test_band_with_the_maps_error_covers_when_the_map_was_fitted_on_few_positives() -> None:
    windows, covered, widths = 20, 0, []
    for w in range(windows):
        # A champion calibrated on ~100 validation positives, then a window of its calibrated scores.
        fit_p, p = probabilities(300 + w, rows=3_000), probabilities(400 + w)
        calibration = fit_calibration(draw(fit_p, 500 + w), distorted(fit_p))
        scores, labels = calibration.apply(distorted(p)), draw(p, 600 + w)
        with_map = estimate_performance(scores, calibration=calibration, draws=100, seed=w)
        labels_only = estimate_performance(scores, draws=100, seed=w)
        covered += with_map.metrics["roc_auc"].covers(realised("roc_auc", labels, scores))
        widths.append(
            [m.metrics["roc_auc"].upper - m.metrics["roc_auc"].lower for m in (with_map, labels_only)]
        )
        assert with_map.map_uncertainty and not labels_only.map_uncertainty
    assert covered >= least_covered(windows)
    assert np.all(np.diff(widths, axis=1) < 0)  # the map's error only ever widens the band


def test_estimate_is_the_expected_value_of_the_realised_metric() -> None:
    p = probabilities(7, rows=5_000)
    estimate = estimate_performance(p, ("roc_auc",), draws=200, seed=1)
    values = [realised("roc_auc", draw(p, 500 + i), p) for i in range(60)]
    roc = estimate.metrics["roc_auc"]
    spread = (roc.upper - roc.lower) / (2 * 1.96)  # the band's standard deviation
    assert abs(np.mean(values) - roc.estimate) <= 4 * spread / np.sqrt(len(values))
    assert estimate.base_rate == pytest.approx(p.mean()) and estimate.expected_positives == pytest.approx(
        p.sum()
    )
    assert estimate.rows == p.size and roc.undefined == 0


def test_miscalibrated_scores_are_visibly_off() -> None:
    p = probabilities(3, rows=5_000)
    labels = draw(p, 33)
    overconfident = distorted(p)
    right = estimate_performance(p, ("roc_auc",), draws=200, seed=0)
    wrong = estimate_performance(overconfident, ("roc_auc",), draws=200, seed=0)
    value = realised("roc_auc", labels, p)  # the ranking is the same, so the realised value is too

    assert right.metrics["roc_auc"].covers(value)
    assert not wrong.metrics["roc_auc"].covers(value)
    assert not wrong.base_rate_lower <= labels.mean() <= wrong.base_rate_upper


def test_every_monitored_metric_is_estimable_and_seeded() -> None:
    p = probabilities(4)
    first = estimate_performance(p, ESTIMABLE, draws=30, seed=5)
    assert first == estimate_performance(p, ESTIMABLE, draws=30, seed=5)
    assert set(first.metrics) == set(ESTIMABLE)
    entropy = -np.mean(p * np.log(p) + (1 - p) * np.log1p(-p))
    assert first.metrics["log_loss"].estimate == pytest.approx(entropy, rel=0.05)
    assert first.metrics["pr_auc_lift"].estimate > 1 and 0.5 < first.metrics["roc_auc"].estimate < 1
    assert "estimated ROC-AUC" in first.summary() and f"{p.size} unlabelled rows" in first.summary()
    assert "too narrow" in first.summary()  # no calibration given: the band lacks the map's error
    assert first.to_dict()["metrics"]["roc_auc"]["metric"] == "roc_auc"


def test_too_few_expected_positives_is_a_result_not_an_error() -> None:
    estimate = estimate_performance(np.full(50, 1e-4), ("roc_auc",), draws=50)
    roc = estimate.metrics["roc_auc"]
    assert roc.undefined == 50 and np.isnan(roc.estimate) and not roc.covers(0.5)
    assert estimate.expected_positives == pytest.approx(0.005)


@pytest.mark.parametrize(
    ("scores", "metrics", "match"),
    [
        (np.array([0.1, 1.7]), ("roc_auc",), "probabilities in \\[0, 1\\]"),
        (np.array([0.1, np.nan]), ("roc_auc",), "1 non-finite"),
        (np.array([]), ("roc_auc",), "non-empty"),
        (np.array([0.1, 0.2]), ("accuracy",), "estimable metrics"),
    ],
)
def test_bad_inputs_name_the_cause(scores: np.ndarray, metrics: tuple[str, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        estimate_performance(scores, metrics)
