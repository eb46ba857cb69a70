"""The decay rule's reference band and the label-shift rule's reference rate, on synthetic scores.

Scores are drawn from a known model (binormal: positives N(shift, 1), negatives N(0, 1)), so the spread a
window really has can be measured by drawing many windows, and compared with what the band says.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlloop.monitoring.decision import MonitorEvidence, load_monitor_config, performance_rule
from mlloop.monitoring.performance import (
    maturity_matched_base_rate,
    no_skill_value,
    performance_value,
    reference_band,
)


def draw(rng: np.random.Generator, positives: int, negatives: int, shift: float = 2.0):
    """Return labels and scores of ``positives`` + ``negatives`` rows from the binormal model."""
    labels = np.r_[np.ones(positives), np.zeros(negatives)]
    scores = np.r_[rng.normal(shift, 1, positives), rng.normal(0, 1, negatives)]
    return labels, scores


def test_the_band_matches_the_spread_of_real_windows_of_that_size() -> None:
    rng = np.random.default_rng(0)
    labels, scores = draw(rng, 400, 8000)
    band = reference_band(
        "roc_auc", labels, scores, window_positives=100, window_negatives=5000, resamples=400, seed=1
    )
    windows = [performance_value("roc_auc", *draw(rng, 100, 5000)) for _ in range(300)]
    assert band.window_se == pytest.approx(np.std(windows), rel=0.2)
    assert band.expected == pytest.approx(band.holdout_value, abs=3 * band.window_se / 20)
    assert band.window_rows == 5100 and band.window_positives == 100 and band.holdout_positives == 400
    # A window of a quarter of the positives spreads about twice as wide.
    smaller = reference_band(
        "roc_auc", labels, scores, window_positives=25, window_negatives=5000, resamples=400, seed=1
    )
    assert smaller.window_se == pytest.approx(2 * band.window_se, rel=0.25)


def test_the_band_is_deterministic_for_a_seed() -> None:
    labels, scores = draw(np.random.default_rng(3), 50, 1000)
    first = reference_band(
        "roc_auc", labels, scores, window_positives=40, window_negatives=900, resamples=100, seed=7
    )
    again = reference_band(
        "roc_auc", labels, scores, window_positives=40, window_negatives=900, resamples=100, seed=7
    )
    assert first == again


def test_decay_fires_at_about_the_false_alarm_rate_without_change_and_catches_a_real_drop() -> None:
    # The test alone (no practical margin), at 5% so that 600 windows can tell 5% from 12% (what
    # leaving out the holdout's own error gives) and from 0%.
    config = load_monitor_config(
        {"decay_margin": 0, "false_alarm_rate": 0.05, "bootstrap_resamples": 200, "min_labelled_rows": 100}
    )
    rng = np.random.default_rng(11)
    quiet, caught = [], []
    for holdout in range(30):
        band = reference_band(
            "roc_auc", *draw(rng, 150, 3000), window_positives=150, window_negatives=3000, resamples=200,
            seed=holdout,
        )  # fmt: skip
        for shift, outcomes in ((2.0, quiet), (1.4, caught)):  # ROC-AUC 0.92 unchanged, 0.84 decayed
            for _ in range(10):
                value = performance_value("roc_auc", *draw(rng, 150, 3000, shift))
                evidence = MonitorEvidence(
                    drift_share=0.0, drifted_columns=[], top_features=[], performance=value,
                    performance_band=band, labelled_rows=3150, labelled_positives=150,
                )  # fmt: skip
                outcomes.append(performance_rule(evidence, config).fired)
    assert 0.005 <= np.mean(quiet) <= 0.10, np.mean(quiet)
    assert np.mean(caught) >= 0.9, np.mean(caught)


def test_metrics_and_their_no_skill_values() -> None:
    labels, scores = draw(np.random.default_rng(5), 200, 2000)
    assert 0.85 < performance_value("roc_auc", labels, scores) < 0.99
    assert performance_value("pr_auc_lift", labels, np.zeros_like(scores)) == pytest.approx(1.0, abs=0.05)
    assert performance_value("roc_auc", labels, np.zeros_like(scores)) == pytest.approx(
        no_skill_value("roc_auc", 0.1)
    )
    constant = np.full_like(scores, labels.mean())
    assert performance_value("log_loss", labels, constant) == pytest.approx(
        no_skill_value("log_loss", labels.mean())
    )
    assert np.isnan(performance_value("roc_auc", np.zeros(10), np.arange(10.0)))
    with pytest.raises(ValueError, match="valid"):
        performance_value("pr_auc", labels, scores)  # type: ignore[arg-type]


def test_a_band_needs_both_classes_on_both_sides() -> None:
    with pytest.raises(ValueError, match="holdout has 0 positives"):
        reference_band("roc_auc", np.zeros(10), np.arange(10.0), window_positives=5, window_negatives=5,
                       resamples=100, seed=0)  # fmt: skip
    labels, scores = draw(np.random.default_rng(0), 20, 200)
    with pytest.raises(ValueError, match="wait for labels of both classes"):
        reference_band(
            "roc_auc", labels, scores, window_positives=0, window_negatives=5, resamples=100, seed=0
        )


def test_the_reference_base_rate_is_seen_at_the_windows_label_maturity() -> None:
    # Positives are labelled after ~9 days, negatives after ~3 (lognormal), as chargebacks and
    # confirmations; a window 5 days old knows far fewer of its positives than of its negatives.
    rng = np.random.default_rng(2)
    day = 86_400.0

    def delays(labels: np.ndarray) -> np.ndarray:
        slow = np.exp(np.log(9 * day) + 0.75 * rng.standard_normal(labels.size))
        fast = np.exp(np.log(3 * day) + 0.55 * rng.standard_normal(labels.size))
        return np.where(labels == 1, slow, fast)

    reference = (rng.random(1_000_000) < 0.02).astype(float)
    window = (rng.random(1_000_000) < 0.02).astype(float)
    ages = 5 * day + rng.random(window.size) * day  # events spread over one day, five days ago
    known = delays(window) <= ages
    seen_rate = window[known].mean()  # what the window's labelled rows show, though nothing changed
    matched = maturity_matched_base_rate(reference, delays(reference), ages)
    assert seen_rate < 0.015 and matched.rate == pytest.approx(seen_rate, rel=0.05)
    assert matched.rows == 1_000_000 and 0 < matched.effective_rows < 1_000_000
    # Old enough that every label is in: the plain rate.
    mature = maturity_matched_base_rate(reference, delays(reference), np.full(1000, 365 * day))
    assert mature.rate == pytest.approx(reference.mean()) and mature.effective_rows == pytest.approx(
        1_000_000
    )
    assert np.isnan(maturity_matched_base_rate(reference, delays(reference), []).rate)


def test_resampled_roc_auc_counts_ranks_as_the_sorting_metric_does() -> None:
    """The rank-count ROC-AUC of a bootstrap draw equals promotion.metrics.roc_auc on it, ties included."""
    from mlloop.monitoring.performance import _roc_auc_of_draw
    from mlloop.promotion.metrics import roc_auc

    rng = np.random.default_rng(5)
    labels = (rng.random(3_000) < 0.1).astype(np.int8)
    scores = np.round(rng.random(3_000) * 0.6 + 0.3 * labels, 2)  # rounded: many tied scores
    ranks = np.unique(scores, return_inverse=True)[1]
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    for n_positive, n_negative in ((1, 1), (7, 50), (300, 2_700)):
        drawn_p = positives[rng.integers(0, positives.size, n_positive)]
        drawn_n = negatives[rng.integers(0, negatives.size, n_negative)]
        rows = np.concatenate([drawn_p, drawn_n])
        expected = roc_auc(np.concatenate([np.ones(n_positive), np.zeros(n_negative)]), scores[rows])
        assert _roc_auc_of_draw(ranks, drawn_p, drawn_n) == pytest.approx(expected, abs=1e-12)
