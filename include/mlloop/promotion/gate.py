"""The champion/challenger promotion gate: versioned thresholds, the rules, and the decision.

Pure functions on a holdout frame and the models' scores on its rows: no MLflow, no Airflow. The
caller scores both models on the same holdout rows (in holdout order) and measures the challenger's
batch-scoring latency and serialised size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

from mlloop.promotion.metrics import Metric, ModelMetrics, metric_value, model_metrics, paired_bootstrap
from mlloop.promotion.report import GateDecision, RuleResult, SliceResult, SliceStatus
from mlloop.versioned_config import load_versioned_config

GATE_DEFAULTS_PATH = Path(__file__).with_name("gate_defaults.yaml")


class GateConfig(BaseModel):
    """The gate's thresholds. Defaults live in ``gate_defaults.yaml``; decisions record ``version``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, description="Version of these thresholds, recorded in decisions.")
    metric: Metric = Field(description="Metric of the champion comparisons: pr_auc or roc_auc.")
    min_pr_auc: float = Field(ge=0, le=1, description="Floor on the challenger's PR-AUC.")
    fixed_precision: float = Field(gt=0, le=1, description="Precision of the operating point.")
    min_recall_at_precision: float = Field(ge=0, le=1, description="Floor on recall at fixed_precision.")
    non_inferiority_margin: float = Field(ge=0, le=1, description="Tolerated loss against the champion.")
    bootstrap_resamples: int = Field(ge=100, le=100_000, description="Paired bootstrap resamples.")
    confidence: float = Field(gt=0.5, lt=1, description="Two-sided confidence of the bootstrap interval.")
    seed: int = Field(ge=0, description="Seed of the bootstrap resampling.")
    slice_columns: tuple[str, ...] = Field(description="Holdout columns whose values are checked slices.")
    min_slice_rows: int = Field(ge=1, description="Smaller slices are skipped as too noisy.")
    min_slice_positives: int = Field(ge=1, description="Slices with fewer positives are skipped.")
    slice_margin: float = Field(ge=0, le=1, description="Tolerated loss on any one slice.")
    max_batch_latency_ms_per_1k_rows: float = Field(gt=0, description="Batch-scoring latency budget.")
    max_model_size_mb: float = Field(gt=0, description="Serialised model size budget.")
    cost_false_negative: float = Field(ge=0, description="Cost of a missed positive (reported only).")
    cost_false_positive: float = Field(ge=0, description="Cost of a false alarm (reported only).")


@dataclass(frozen=True)
class ScoredModel:
    """A model as the gate sees it: its scores on the holdout rows, in holdout order, and its budgets."""

    name: str  # e.g. "fraud-detector/7"
    scores: NDArray[np.float64]
    batch_latency_ms_per_1k_rows: float
    size_mb: float

    def __post_init__(self) -> None:
        scores = np.asarray(self.scores, dtype=np.float64)
        if scores.ndim != 1 or not np.isfinite(scores).all():
            raise ValueError(
                f"model {self.name!r}: scores must be a 1-D array of finite numbers, one per holdout row "
                f"(got shape {scores.shape}, {int(np.size(scores) - np.isfinite(scores).sum())} not finite)"
            )
        for budget in ("batch_latency_ms_per_1k_rows", "size_mb"):
            value = getattr(self, budget)
            if not (isinstance(value, Real) and math.isfinite(value) and value >= 0):
                raise ValueError(f"model {self.name!r}: {budget} must be a finite number >= 0, got {value!r}")
        object.__setattr__(self, "scores", scores)


def load_gate_config(overrides: Mapping[str, Any] | None = None) -> GateConfig:
    """Return the default thresholds of ``gate_defaults.yaml`` with per-run ``overrides`` applied.

    Raises:
        ValueError: for an override key that is not a gate setting (naming the valid ones), or a value
            the setting does not accept (naming the setting, the value and the bound).
    """
    return load_versioned_config(GateConfig, GATE_DEFAULTS_PATH, overrides, what="gate")


def evaluate_gate(
    challenger: ScoredModel,
    champion: ScoredModel | None,
    holdout: pd.DataFrame,
    *,
    target_column: str,
    config: GateConfig,
) -> GateDecision:
    """Decide whether ``challenger`` may replace ``champion``: every rule must pass.

    With no champion, the floors and budgets alone decide. Raises ValueError on unusable inputs (see
    ``holdout_labels``) rather than deciding on them.
    """
    labels = holdout_labels(holdout, target_column, challenger, champion)
    roles = {"challenger": challenger, "champion": champion}
    metrics = {
        role: operating_metrics(labels, model.scores, config)
        for role, model in roles.items()
        if model is not None
    }
    rules = floor_rules(metrics["challenger"], config) + budget_rules(challenger, config)
    slices: list[SliceResult] = []
    if champion is not None:
        slices = slice_results(challenger, champion, holdout, labels, config)
        rules += [non_inferiority_rule(challenger, champion, labels, config), *slice_rules(slices, config)]
    return GateDecision(
        promote=all(rule.passed for rule in rules),
        rules=rules,
        challenger=challenger.name,
        champion=champion.name if champion is not None else None,
        config_version=config.version,
        metric=config.metric,
        holdout_rows=len(labels),
        holdout_positives=int(labels.sum()),
        metrics=metrics,
        slices=slices,
        config=config.model_dump(mode="json"),
    )


def holdout_labels(
    holdout: pd.DataFrame, target_column: str, challenger: ScoredModel, champion: ScoredModel | None
) -> NDArray[np.int8]:
    """Return the holdout's 0/1 labels after checking the models scored exactly its rows.

    Raises:
        ValueError: when the target column is missing or not 0/1, the holdout lacks a class, or a
            model's score count differs from the holdout's row count.
    """
    if target_column not in holdout.columns:
        raise ValueError(f"holdout has no target column {target_column!r}; columns: {list(holdout.columns)}")
    target = holdout[target_column]
    if target.isna().any() or not target.isin([0, 1]).all():
        found = sorted(map(repr, pd.unique(target[~target.isin([0, 1])])))[:5]
        raise ValueError(f"target column {target_column!r} must hold 0/1 labels only; found {found}")
    labels = target.to_numpy().astype(np.int8)
    positives = int(labels.sum())
    if positives in (0, labels.size):
        raise ValueError(
            f"holdout has {labels.size} rows and {positives} positive: the gate needs both classes "
            "to judge a model; widen the holdout window"
        )
    for role, model in (("challenger", challenger), ("champion", champion)):
        if model is not None and model.scores.size != labels.size:
            raise ValueError(
                f"{role} {model.name!r} has {model.scores.size} scores for {labels.size} holdout rows: "
                "score exactly the holdout rows, in holdout order"
            )
    return labels


def floor_rules(metrics: ModelMetrics, config: GateConfig) -> list[RuleResult]:
    """Return the challenger's floors: PR-AUC and recall at the fixed precision."""
    threshold = metrics.threshold_at_precision
    operating_point = (
        f"at score threshold {threshold:.4g}"
        if threshold is not None
        else "no score threshold reaches that precision, so recall counts as 0"
    )
    return [
        RuleResult(
            name="floor_pr_auc",
            passed=metrics.pr_auc >= config.min_pr_auc,
            observed=metrics.pr_auc,
            threshold=config.min_pr_auc,
            detail=f"challenger PR-AUC {metrics.pr_auc:.4f}, floor {config.min_pr_auc}",
        ),
        RuleResult(
            name="floor_recall_at_precision",
            passed=metrics.recall_at_precision >= config.min_recall_at_precision,
            observed=metrics.recall_at_precision,
            threshold=config.min_recall_at_precision,
            detail=f"recall {metrics.recall_at_precision:.4f} at precision >= {config.fixed_precision} "
            f"({operating_point}), floor {config.min_recall_at_precision}",
        ),
    ]


def budget_rules(challenger: ScoredModel, config: GateConfig) -> list[RuleResult]:
    """Return the challenger's budgets: batch-scoring latency and model size."""
    latency, size = challenger.batch_latency_ms_per_1k_rows, challenger.size_mb
    return [
        RuleResult(
            name="latency_budget",
            passed=latency <= config.max_batch_latency_ms_per_1k_rows,
            observed=float(latency),
            threshold=config.max_batch_latency_ms_per_1k_rows,
            comparison="<=",
            detail=f"batch scoring takes {latency:.1f} ms per 1,000 rows, "
            f"budget {config.max_batch_latency_ms_per_1k_rows} ms",
        ),
        RuleResult(
            name="model_size_budget",
            passed=size <= config.max_model_size_mb,
            observed=float(size),
            threshold=config.max_model_size_mb,
            comparison="<=",
            detail=f"serialised model is {size:.1f} MB, budget {config.max_model_size_mb} MB",
        ),
    ]


def non_inferiority_rule(
    challenger: ScoredModel, champion: ScoredModel, labels: ArrayLike, config: GateConfig
) -> RuleResult:
    """Return whether the challenger is not worse than the champion beyond the margin (paired bootstrap)."""
    interval = paired_bootstrap(
        labels,
        challenger.scores,
        champion.scores,
        metric=config.metric,
        resamples=config.bootstrap_resamples,
        confidence=config.confidence,
        seed=config.seed,
    )
    margin = config.non_inferiority_margin
    detail = (
        f"{config.metric} challenger - champion = {interval.delta:+.4f}, {config.confidence:.0%} interval "
        f"[{interval.lower:+.4f}, {interval.upper:+.4f}] over {interval.resamples} paired resamples "
        f"(seed {config.seed}); its lower end must be above -{margin}"
    )
    if interval.undefined:
        detail += f"; {interval.undefined} resamples without a defined {config.metric} left out"
    return RuleResult(
        name="non_inferiority",
        passed=interval.lower > -margin,
        observed=interval.lower,
        threshold=-margin,
        comparison=">",
        detail=detail,
        evidence=interval.to_dict(),
    )


def slice_results(
    challenger: ScoredModel,
    champion: ScoredModel,
    holdout: pd.DataFrame,
    labels: NDArray[np.int8],
    config: GateConfig,
) -> list[SliceResult]:
    """Return both models' metric on every value of every slice column, or why a slice is skipped.

    Raises:
        ValueError: when a slice column is not a holdout column.
    """
    missing = [column for column in config.slice_columns if column not in holdout.columns]
    if missing:
        raise ValueError(
            f"slice columns {missing} are not holdout columns {list(holdout.columns)}: add them to the "
            "holdout or override slice_columns"
        )
    results = []
    for column in config.slice_columns:
        values = holdout[column].astype(object)  # a categorical would drop its null group
        for value, rows in values.groupby(values, dropna=False, sort=True).indices.items():
            results.append(_slice_result(column, value, rows, challenger, champion, labels, config))
    return results


def slice_rules(slices: list[SliceResult], config: GateConfig) -> list[RuleResult]:
    """Return one rule per slice column: no judged slice of it may regress beyond ``slice_margin``."""
    rules = []
    for column in config.slice_columns:
        values = [item for item in slices if item.column == column]
        judged = [item for item in values if item.status in ("ok", "regressed")]
        regressed = [item for item in judged if item.status == "regressed"]
        skipped = [item for item in values if item.status in ("too_small", "undefined")]
        worst = min(judged, key=lambda item: float(item.delta or 0.0), default=None)  # judged have a delta
        parts = [
            f"{column}={item.value}: {config.metric} {item.challenger:.4f} vs champion "
            f"{item.champion:.4f} ({item.delta:+.4f})"
            for item in regressed
        ]
        parts.append(f"{len(judged)} of {len(values)} {column} values judged")
        if worst is not None and not regressed:
            parts.append(f"worst {column}={worst.value} ({worst.delta:+.4f})")
        if skipped:
            parts.append("skipped " + ", ".join(f"{item.value} ({item.note})" for item in skipped))
        rules.append(
            RuleResult(
                name=f"slice_no_regression.{column}",
                passed=not regressed,
                observed=worst.delta if worst is not None else None,
                threshold=-config.slice_margin,
                detail="; ".join(parts),
                evidence={
                    "regressed": [item.value for item in regressed],
                    "skipped": [item.value for item in skipped],
                },
            )
        )
    return rules


def _slice_result(
    column: str,
    value: Any,
    rows: NDArray[np.intp],
    challenger: ScoredModel,
    champion: ScoredModel,
    labels: NDArray[np.int8],
    config: GateConfig,
) -> SliceResult:
    """Return both models' metric on the holdout rows ``rows`` of one slice, or why it is skipped."""
    y = labels[rows]
    size, positives = int(y.size), int(y.sum())
    ours: float | None = None
    theirs: float | None = None
    status: SliceStatus = "ok"
    note = ""
    if size < config.min_slice_rows:
        status, note = "too_small", f"{size} rows < min_slice_rows {config.min_slice_rows}"
    else:
        ours, theirs = (
            metric_value(config.metric, y, model.scores[rows]) for model in (challenger, champion)
        )
        if math.isnan(ours) or math.isnan(theirs):
            missing = "positive" if positives == 0 else "negative"
            status, note = "undefined", f"no {missing} rows: {config.metric} is undefined"
            ours = theirs = None
        elif positives < config.min_slice_positives:
            status, note = (
                "too_small",
                f"{positives} positives < min_slice_positives {config.min_slice_positives}",
            )
        elif ours - theirs < -config.slice_margin:
            status = "regressed"
    delta = ours - theirs if ours is not None and theirs is not None else None
    name = "<null>" if pd.isna(value) else str(value)
    return SliceResult(column, name, size, positives, ours, theirs, delta, status, note)


def operating_metrics(labels: ArrayLike, scores: ArrayLike, config: GateConfig) -> ModelMetrics:
    """Return a model's headline metrics at the gate's operating point and costs (training logs the same)."""
    return model_metrics(
        labels,
        scores,
        fixed_precision=config.fixed_precision,
        cost_false_negative=config.cost_false_negative,
        cost_false_positive=config.cost_false_positive,
    )
