"""The gate against no-skill models: random, constant and perfect scores, at rare and common base rates.

The floors are relative to what no-skill scores reach on the same holdout, so the verdicts below must
hold at any base rate; none of these holdouts is tuned to the gate (seeded, a few thousand rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlloop.promotion import (
    GateConfig,
    GateDecision,
    ScoredModel,
    evaluate_gate,
    load_gate_config,
    no_skill_pr_auc,
    no_skill_recall_at_precision,
    pr_auc,
    recall_at_precision,
)

BASE_RATES = [0.01, 0.10, 0.35, 0.50]
ROWS = 5000
TARGET = "label"
SKILL_RULES = {"skill_roc_auc", "skill_pr_auc_lift", "recall_at_precision_vs_no_skill"}


def holdout(base_rate: float, seed: int = 0, rows: int = ROWS) -> pd.DataFrame:
    """Return a seeded holdout whose labels are positive with probability ``base_rate``."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({TARGET: (rng.random(rows) < base_rate).astype(int)})


def declared_target(base_rate: float) -> float:
    """Return the precision target a use case at ``base_rate`` would declare (above its base rate)."""
    return 0.20 if base_rate < 0.2 else (1 + base_rate) / 2


def config_for(base_rate: float, **overrides: object) -> GateConfig:
    """Return the default gate with the precision target declared for ``base_rate``."""
    return load_gate_config({"fixed_precision": declared_target(base_rate), **overrides})


def decide(frame: pd.DataFrame, values: np.ndarray, config: GateConfig) -> GateDecision:
    """Run the gate on a challenger with ``values`` as scores and no champion."""
    challenger = ScoredModel("uc/1", values, batch_latency_ms_per_1k_rows=1.0, size_mb=1.0)
    return evaluate_gate(challenger, None, frame, target_column=TARGET, config=config)


def informative(labels: np.ndarray, seed: int, separation: float = 0.75) -> np.ndarray:
    """Return probabilities whose logits sit ``separation`` either side of 0 by class, plus unit noise.

    At 0.75 the ROC-AUC is about 0.85, a useful but far from perfect model.
    """
    noise = np.random.default_rng(seed).normal(size=labels.size)
    return 1 / (1 + np.exp(-(separation * (2 * labels - 1) + noise)))


# ---------------------------------------------------------------------------------------------------
# The no-skill references
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "positives"), [(400, 4), (400, 40), (400, 200)])
def test_no_skill_pr_auc_is_what_random_scores_reach_on_average(rows: int, positives: int) -> None:
    rng = np.random.default_rng(1)
    labels = np.zeros(rows, dtype=int)
    labels[:positives] = 1
    draws = np.array([pr_auc(labels, rng.random(rows)) for _ in range(4000)])

    expected = float(no_skill_pr_auc(rows, positives))
    assert expected == pytest.approx(draws.mean(), abs=4 * draws.std() / np.sqrt(draws.size))
    assert expected > positives / rows  # few positives: random rankings do better than the base rate
    assert float(no_skill_pr_auc(rows, rows)) == pytest.approx(1.0)


@pytest.mark.parametrize(("base_rate", "precision"), [(0.01, 0.2), (0.10, 0.2), (0.35, 0.5)])
def test_no_skill_recall_is_the_quantile_random_scores_reach(base_rate: float, precision: float) -> None:
    labels = holdout(base_rate, seed=2, rows=2000)[TARGET].to_numpy()
    level = no_skill_recall_at_precision(labels, precision, draws=2000, quantile=0.975, seed=3)
    rng = np.random.default_rng(4)
    recalls = np.array([recall_at_precision(labels, rng.random(labels.size), precision) for _ in range(2000)])

    assert np.mean(recalls > level) <= 0.025 + 0.01  # at most the tail the quantile leaves, plus noise
    assert np.mean(recalls >= level) > 0.025  # and no higher than it needs to be


def test_no_skill_recall_is_everything_when_the_target_is_the_base_rate() -> None:
    labels = holdout(0.35, rows=1000)[TARGET].to_numpy()
    assert no_skill_recall_at_precision(labels, 0.2, draws=200, quantile=0.5, seed=0) == 1.0


# ---------------------------------------------------------------------------------------------------
# Verdicts at four base rates
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base_rate", BASE_RATES)
def test_random_scores_are_rejected(base_rate: float) -> None:
    frame = holdout(base_rate)
    values = np.random.default_rng(10).random(ROWS)
    for config in (config_for(base_rate), load_gate_config()):  # the declared target, and 0.20
        decision = decide(frame, values, config)
        assert not decision.promote, decision.to_markdown()
        assert set(decision.failed_rules) <= SKILL_RULES | {"precision_target_above_base_rate"}


@pytest.mark.parametrize("base_rate", BASE_RATES)
def test_constant_scores_are_rejected(base_rate: float) -> None:
    decision = decide(holdout(base_rate), np.full(ROWS, 0.3), config_for(base_rate))

    assert decision.failed_rules == ["skill_roc_auc", "skill_pr_auc_lift", "recall_at_precision_vs_no_skill"]
    assert decision.metrics["challenger"].roc_auc == 0.5


@pytest.mark.parametrize("base_rate", BASE_RATES)
def test_perfect_scores_are_promoted(base_rate: float) -> None:
    frame = holdout(base_rate)
    decision = decide(frame, frame[TARGET].to_numpy(dtype=float), config_for(base_rate))

    assert decision.promote, decision.to_markdown()
    assert decision.metrics["challenger"].recall_at_precision == 1.0


@pytest.mark.parametrize("base_rate", BASE_RATES)
def test_informative_scores_are_promoted(base_rate: float) -> None:
    frame = holdout(base_rate)
    decision = decide(frame, informative(frame[TARGET].to_numpy(), seed=11), config_for(base_rate))

    assert decision.promote, decision.to_markdown()
    assert 0.75 < decision.metrics["challenger"].roc_auc < 0.95


def test_random_models_are_promoted_at_most_at_the_configured_rate() -> None:
    """Each skill rule lets a random model through with probability about (1 - confidence) / 2."""
    promoted, tried = 0, 0
    for base_rate in BASE_RATES:
        config = config_for(base_rate, bootstrap_resamples=300)
        for seed in range(25):
            frame = holdout(base_rate, seed=100 + seed, rows=3000)
            values = np.random.default_rng(200 + seed).random(len(frame))
            promoted += decide(frame, values, config).promote
            tried += 1
    assert promoted <= 0.05 * tried, f"{promoted} of {tried} random models promoted"


def test_a_target_at_the_base_rate_fails_naming_the_base_rate_and_the_fix() -> None:
    from mlloop.usecase import load_use_case

    frame = holdout(0.35)
    config = load_gate_config(use_case=load_use_case("card_fraud"))  # declares fixed_precision 0.20
    decision = decide(frame, informative(frame[TARGET].to_numpy(), seed=11), config)

    assert not decision.promote
    assert "precision_target_above_base_rate" in decision.failed_rules
    detail = next(r.detail for r in decision.rules if r.name == "precision_target_above_base_rate")
    base_rate = f"{frame[TARGET].mean():.4f}"
    assert base_rate in detail and "precision target 0.2 " in detail
    assert "gate.fixed_precision in use case card_fraud's declaration" in detail
