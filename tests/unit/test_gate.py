"""The champion/challenger gate: metrics against scikit-learn, the paired bootstrap, the rules, the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.metrics import log_loss as sklearn_log_loss

from mlloop.promotion import (
    GateConfig,
    GateDecision,
    RuleResult,
    ScoredModel,
    evaluate_gate,
    expected_cost,
    load_gate_config,
    log_loss,
    paired_bootstrap,
    pr_auc,
    recall_at_precision,
    roc_auc,
    threshold_at_precision,
)
from mlloop.promotion.metrics import resample_counts

ROWS = 6000
TARGET = "is_fraud"
SLICES = ["channel", "merchant_category", "country"]
# The synthetic holdout's slices (10% positives), judged from 300 rows and 20 positives.
CONFIG = load_gate_config(
    {"fixed_precision": 0.6, "slice_columns": SLICES, "min_slice_rows": 300, "min_slice_positives": 20}
)
# The challenger's floors against no-skill scores, in rule order; the three a random model fails here.
FLOORS = [
    "skill_roc_auc",
    "skill_pr_auc_lift",
    "precision_target_above_base_rate",
    "recall_at_precision_vs_no_skill",
]
NO_SKILL_FAILS = ["skill_roc_auc", "skill_pr_auc_lift", "recall_at_precision_vs_no_skill"]


@pytest.fixture(scope="module")
def holdout() -> pd.DataFrame:
    """A seeded holdout: three slice columns (country LU is tiny) and 10% positive labels."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "channel": rng.choice(
                ["card_present", "online", "mobile", "atm"], ROWS, p=[0.5, 0.25, 0.12, 0.13]
            ),
            "merchant_category": rng.choice(["grocery", "retail", "travel", "electronics"], ROWS),
            "country": rng.choice(["DE", "FR", "GB", "LU"], ROWS, p=[0.4, 0.35, 0.24, 0.01]),
            TARGET: (rng.random(ROWS) < 0.1).astype(int),
        }
    )


def scores(labels: np.ndarray, separation: float, seed: int) -> np.ndarray:
    """Return probabilities whose logits sit ``separation`` either side of 0 by class, plus unit noise."""
    noise = np.random.default_rng(seed).normal(size=labels.size)
    return 1 / (1 + np.exp(-(separation * (2 * labels - 1) + noise)))


def model(name: str, values: np.ndarray, *, latency: float = 20.0, size: float = 5.0) -> ScoredModel:
    """Return a scored model within the default budgets unless told otherwise."""
    return ScoredModel(name, values, batch_latency_ms_per_1k_rows=latency, size_mb=size)


def decide(
    holdout: pd.DataFrame, challenger: ScoredModel, champion: ScoredModel | None, config: GateConfig = CONFIG
) -> GateDecision:
    """Run the gate on the holdout with the test config."""
    return evaluate_gate(challenger, champion, holdout, target_column=TARGET, config=config)


def rule(decision: GateDecision, name: str) -> RuleResult:
    """Return the rule called ``name`` from a decision."""
    return next(item for item in decision.rules if item.name == name)


# ---------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("decimals", [1, 2, 6])  # coarse rounding makes many tied scores
def test_metrics_match_sklearn(seed: int, decimals: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(400) < 0.2).astype(int)
    s = np.round(np.clip(rng.random(400) * 0.8 + 0.3 * y, 0, 1), decimals)

    assert pr_auc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert log_loss(y, s) == pytest.approx(sklearn_log_loss(y, s), rel=1e-9)
    precision, recall, thresholds = precision_recall_curve(y, s)
    for target in (0.3, 0.5, 0.7):
        reached = precision >= target
        assert recall_at_precision(y, s, target) == pytest.approx(recall[reached].max())
        threshold = threshold_at_precision(y, s, target)
        if recall[reached].max() > 0:
            flagged = s >= threshold
            assert y[flagged].mean() >= target
            assert y[flagged].sum() / y.sum() == pytest.approx(recall[reached].max())
            assert threshold in thresholds


def test_expected_cost_counts_misses_and_false_alarms() -> None:
    y = np.array([1, 1, 0, 0, 0])
    s = np.array([0.9, 0.2, 0.8, 0.1, 0.5])
    # At 0.5: one missed positive (0.2), two false alarms (0.8, 0.5).
    cost = expected_cost(y, s, threshold=0.5, cost_false_negative=10, cost_false_positive=1)
    assert cost == pytest.approx((10 * 1 + 1 * 2) / 5)


def test_metrics_without_positives_are_undefined() -> None:
    y, s = np.zeros(10), np.linspace(0, 1, 10)
    assert np.isnan(pr_auc(y, s))
    assert np.isnan(roc_auc(y, s))
    assert recall_at_precision(y, s, 0.5) == 0.0
    assert threshold_at_precision(y, s, 0.5) is None
    with pytest.raises(ValueError, match="probabilities"):
        log_loss(y, s * 3)


def test_bootstrap_equals_explicit_resamples() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.15).astype(int)
    a, b = scores(y, 1.0, 1), np.round(scores(y, 0.8, 2), 2)
    interval = paired_bootstrap(y, a, b, metric="pr_auc", resamples=120, confidence=0.9, seed=5)

    expected = []
    for counts in resample_counts(y.size, 120, seed=5):
        for row_counts in counts:
            rows = np.repeat(np.arange(y.size), row_counts)  # the resample, materialised
            expected.append(
                average_precision_score(y[rows], a[rows]) - average_precision_score(y[rows], b[rows])
            )
    np.testing.assert_allclose(interval.deltas, expected, atol=1e-12)
    assert interval.delta == pytest.approx(average_precision_score(y, a) - average_precision_score(y, b))
    assert interval.lower == pytest.approx(np.quantile(expected, 0.05))


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(2000) < 0.1).astype(int)
    a, b = scores(y, 1.0, 1), scores(y, 1.0, 2)
    run = lambda seed: paired_bootstrap(y, a, b, metric="roc_auc", resamples=200, confidence=0.95, seed=seed)  # noqa: E731
    first, again, other = run(7), run(7), run(8)
    np.testing.assert_array_equal(first.deltas, again.deltas)
    assert (first.lower, first.upper) == (again.lower, again.upper)
    assert not np.array_equal(first.deltas, other.deltas)


# ---------------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------------


def test_good_challenger_without_champion_is_promoted(holdout: pd.DataFrame) -> None:
    y = holdout[TARGET].to_numpy()
    decision = decide(holdout, model("fraud-detector/1", scores(y, 1.5, 1)), None)

    assert decision.promote, decision.summary()
    names = [item.name for item in decision.rules]
    assert names == [*FLOORS, "latency_budget", "model_size_budget"]
    assert decision.champion is None and decision.slices == []
    assert decision.config_version == CONFIG.version
    report = decision.to_markdown()
    assert report.startswith("# Gate decision: PROMOTE `fraud-detector/1`")
    assert "no champion" in report
    assert json.loads(json.dumps(decision.to_json()))["promote"] is True


def test_challenger_below_floors_is_rejected(holdout: pd.DataFrame) -> None:
    y = holdout[TARGET].to_numpy()
    decision = decide(holdout, model("fraud-detector/1", scores(y, 0.0, 1)), None)  # no signal

    assert not decision.promote
    assert decision.failed_rules == NO_SKILL_FAILS
    assert rule(decision, "skill_pr_auc_lift").observed <= CONFIG.min_pr_auc_lift
    assert "skill_roc_auc" in decision.summary()
    assert "| skill_pr_auc_lift | **FAIL** |" in decision.to_markdown()


def test_clearly_worse_challenger_fails_non_inferiority(holdout: pd.DataFrame) -> None:
    y = holdout[TARGET].to_numpy()
    champion = model("fraud-detector/1", scores(y, 1.2, 2))
    challenger = model("fraud-detector/2", scores(y, 0.9, 3))  # above the floors, below the champion
    decision = decide(holdout, challenger, champion)

    assert not decision.promote
    assert "non_inferiority" in decision.failed_rules
    assert not set(FLOORS) & set(decision.failed_rules)
    evidence = rule(decision, "non_inferiority").evidence
    assert evidence["upper"] < -CONFIG.non_inferiority_margin  # the whole interval excludes -margin
    assert evidence["lower"] <= evidence["delta"] <= evidence["upper"]


def test_identical_models_pass_non_inferiority(holdout: pd.DataFrame) -> None:
    y = holdout[TARGET].to_numpy()
    same = scores(y, 1.2, 2)
    decision = decide(holdout, model("fraud-detector/2", same.copy()), model("fraud-detector/1", same))

    assert decision.promote, decision.summary()
    non_inferiority = rule(decision, "non_inferiority")
    assert non_inferiority.passed
    assert non_inferiority.evidence["lower"] == non_inferiority.evidence["upper"] == 0.0
    assert all(item.delta == 0.0 for item in decision.slices if item.status == "ok")


def test_challenger_collapsing_on_one_slice_is_rejected(holdout: pd.DataFrame) -> None:
    y = holdout[TARGET].to_numpy()
    mobile = holdout["channel"].eq("mobile").to_numpy()
    challenger_scores = scores(y, 2.0, 3)
    challenger_scores[mobile] = 0.5 * scores(y[mobile], 0.1, 4)  # near-random, ranked mid-table
    decision = decide(
        holdout, model("fraud-detector/2", challenger_scores), model("fraud-detector/1", scores(y, 1.2, 2))
    )

    assert decision.metrics["challenger"].pr_auc > decision.metrics["champion"].pr_auc
    assert rule(decision, "non_inferiority").passed
    assert decision.failed_rules == ["slice_no_regression.channel"]
    channel = rule(decision, "slice_no_regression.channel")
    assert channel.evidence["regressed"] == ["mobile"]
    assert "channel=mobile" in channel.detail
    assert channel.observed < -CONFIG.slice_margin
    assert "| channel=mobile |" in decision.to_markdown()
    evidence = json.loads(json.dumps(decision.to_json()))
    assert evidence["failed_rules"] == ["slice_no_regression.channel"]
    assert {item["status"] for item in evidence["slices"]} >= {"ok", "regressed"}


def test_small_and_undefined_slices_are_skipped(holdout: pd.DataFrame) -> None:
    frame = holdout.copy()
    frame.loc[frame["merchant_category"] == "travel", TARGET] = 0  # a slice with no positives
    frame.loc[:9, "country"] = None  # a few rows without a country: a tiny slice of its own
    y = frame[TARGET].to_numpy()
    tiny = frame["country"].eq("LU").to_numpy()
    challenger_scores = scores(y, 1.5, 3)
    challenger_scores[tiny] = 0.5 * scores(y[tiny], 0.0, 4)  # collapses, but on 1% of the rows
    decision = decide(
        frame, model("fraud-detector/2", challenger_scores), model("fraud-detector/1", scores(y, 1.2, 2))
    )

    assert decision.promote, decision.summary()
    by_value = {(item.column, item.value): item for item in decision.slices}
    assert by_value["country", "LU"].status == "too_small"
    assert by_value["country", "<null>"].rows == 10
    assert by_value["merchant_category", "travel"].status == "undefined"
    assert "no positive rows" in by_value["merchant_category", "travel"].note
    assert "LU" in rule(decision, "slice_no_regression.country").evidence["skipped"]
    assert "travel (no positive rows" in rule(decision, "slice_no_regression.merchant_category").detail


@pytest.mark.parametrize(
    ("latency", "size", "failed"),
    [
        (900.0, 5.0, ["latency_budget"]),
        (20.0, 512.0, ["model_size_budget"]),
        (900.0, 512.0, ["latency_budget", "model_size_budget"]),
    ],
)
def test_budget_violations_are_rejected(
    holdout: pd.DataFrame, latency: float, size: float, failed: list[str]
) -> None:
    y = holdout[TARGET].to_numpy()
    decision = decide(holdout, model("fraud-detector/1", scores(y, 1.5, 1), latency=latency, size=size), None)
    assert not decision.promote
    assert decision.failed_rules == failed


# ---------------------------------------------------------------------------------------------------
# Configuration and inputs
# ---------------------------------------------------------------------------------------------------


def test_overrides_replace_defaults() -> None:
    defaults = load_gate_config()
    custom = load_gate_config({"min_roc_auc": 0.6, "slice_columns": ["channel"]})
    assert custom.min_roc_auc == 0.6 and custom.slice_columns == ("channel",)
    assert custom.version == defaults.version
    assert custom.fixed_precision == defaults.fixed_precision


def test_unknown_override_names_the_valid_keys() -> None:
    with pytest.raises(ValueError, match="min_pr_acu") as raised:
        load_gate_config({"min_pr_acu": 0.5})
    assert "min_pr_auc_lift" in str(raised.value) and "slice_margin" in str(raised.value)


def test_invalid_override_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"confidence=1\.5"):
        load_gate_config({"confidence": 1.5})


def test_inputs_that_cannot_be_judged_are_refused(holdout: pd.DataFrame) -> None:
    y = holdout[TARGET].to_numpy()
    good = model("fraud-detector/2", scores(y, 1.5, 1))
    with pytest.raises(ValueError, match="2 scores for 6000 holdout rows"):
        decide(holdout, good, model("fraud-detector/1", np.array([0.1, 0.2])))
    with pytest.raises(ValueError, match="no target column 'label'"):
        evaluate_gate(good, None, holdout, target_column="label", config=CONFIG)
    with pytest.raises(ValueError, match=r"slice columns \['device'\]"):
        decide(holdout, good, good, load_gate_config({"slice_columns": ["device"]}))
    with pytest.raises(ValueError, match="not finite"):
        model("broken", np.array([0.1, np.nan]))
