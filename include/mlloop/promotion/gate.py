"""The champion/challenger promotion gate: the rules and the decision.

Pure functions on a holdout frame and the models' scores on its rows: no MLflow, no Airflow. The
caller scores both models on the same holdout rows (in holdout order) and measures the challenger's
batch-scoring latency and serialised size. The thresholds are a ``GateConfig`` from
``load_gate_config`` (``gate_config.py``: defaults, the use case's ``gate:`` section, run overrides).

Every floor is relative to no-skill scores on the same holdout, judged with its own sampling spread, so
no base rate can make a random model look good: the lower end of the challenger's ROC-AUC interval must
beat 0.5, the lower end of its PR-AUC lift interval (PR-AUC over the PR-AUC random scores reach on these
rows) must beat 1, the precision target must lie above the base rate, and recall at that target must
beat what random rankings of the same labels reach there. Each of those rules lets a no-skill model
through with probability about (1 - confidence) / 2.

A regression use case (``task: regression``) is judged by its errors instead (``promotion.regression``):
its RMSE interval against predicting the training mean, paired squared error against the champion, RMSE
per slice, and the same budgets; ``evaluate_gate`` dispatches on the task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from mlloop.promotion.gate_config import GateConfig
from mlloop.promotion.metrics import (
    MetricInterval,
    ModelMetrics,
    metric_value,
    model_metrics,
    no_skill_pr_auc,
    no_skill_recall_at_precision,
    paired_bootstrap,
    skill_intervals,
)
from mlloop.promotion.regression import (
    not_applicable_rule,
    regression_metrics,
    regression_non_inferiority_rule,
    regression_slices,
    skill_rule,
)
from mlloop.promotion.report import GateDecision, RuleResult, SliceResult, SliceStatus
from mlloop.tasks import task_spec


@dataclass(frozen=True)
class ScoredModel:
    """A model as the gate sees it: its scores on the holdout rows, in holdout order, and its budgets."""

    name: str  # "<registered model>/<version>", e.g. "flight-delay-classifier/7"
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


def evaluate_gate(
    challenger: ScoredModel,
    champion: ScoredModel | None,
    holdout: pd.DataFrame,
    *,
    target_column: str,
    config: GateConfig,
    task: str = "binary",
    training_mean: float | None = None,
) -> GateDecision:
    """Decide whether ``challenger`` may replace ``champion``: every rule must pass.

    With no champion, the skill floors and budgets alone decide. ``task`` is the use case's; a regression
    gate compares with predicting ``training_mean`` (the train part's mean target; None: the holdout's,
    the best constant in hindsight, a stricter reference). Raises ValueError on unusable inputs (see
    ``holdout_labels``) rather than deciding on them.
    """
    if not task_spec(task).counts_positives:
        return evaluate_regression_gate(
            challenger, champion, holdout, target_column=target_column, config=config,
            training_mean=training_mean,
        )  # fmt: skip
    labels = holdout_labels(holdout, target_column, challenger, champion)
    roles = {"challenger": challenger, "champion": champion}
    metrics = {
        role: operating_metrics(labels, model.scores, config)
        for role, model in roles.items()
        if model is not None
    }
    rules = [
        *skill_rules(labels, challenger, config),
        *operating_point_rules(labels, metrics["challenger"], config),
        *budget_rules(challenger, config),
    ]
    slices: list[SliceResult] = []
    if champion is not None:
        slices = slice_results(challenger, champion, holdout, labels, config)
        rules += [non_inferiority_rule(challenger, champion, labels, config), *slice_rules(slices, config)]
    return _decision(challenger, champion, config, rules, metrics, slices, metric=config.metric,
        rows=labels.size, positives=int(labels.sum()),
    )  # fmt: skip


def evaluate_regression_gate(
    challenger: ScoredModel,
    champion: ScoredModel | None,
    holdout: pd.DataFrame,
    *,
    target_column: str,
    config: GateConfig,
    training_mean: float | None = None,
) -> GateDecision:
    """Decide on a regression ``challenger``: skill over the training mean, budgets, then the champion's
    comparisons (paired squared error, RMSE per slice); the binary operating point is recorded n/a."""
    labels = holdout_values(holdout, target_column, challenger, champion)
    reference = float(labels.mean()) if training_mean is None else training_mean
    roles = {"challenger": challenger, "champion": champion}
    metrics = {
        role: regression_metrics(labels, model.scores, reference, config)
        for role, model in roles.items()
        if model is not None
    }
    rules = [
        skill_rule(metrics["challenger"], config),
        not_applicable_rule(),
        *budget_rules(challenger, config),
    ]
    slices: list[SliceResult] = []
    if champion is not None:
        _check_slice_columns(holdout, config)
        slices = regression_slices(challenger, champion, holdout, labels, config)
        rules += [
            regression_non_inferiority_rule(challenger, champion, labels, config),
            *slice_rules(slices, config, metric="rmse"),
        ]
    return _decision(challenger, champion, config, rules, metrics, slices, metric="rmse",
        rows=labels.size, positives=0,  # a numeric target has no positives
    )  # fmt: skip


def _decision(
    challenger: ScoredModel,
    champion: ScoredModel | None,
    config: GateConfig,
    rules: list[RuleResult],
    metrics: dict[str, Any],
    slices: list[SliceResult],
    *,
    metric: str,
    rows: int,
    positives: int,
) -> GateDecision:
    """Return the decision of ``rules`` (promote when all pass) with its evidence."""
    return GateDecision(
        promote=all(rule.passed for rule in rules),
        rules=rules,
        challenger=challenger.name,
        champion=champion.name if champion is not None else None,
        config_version=config.version,
        metric=metric,
        holdout_rows=rows,
        holdout_positives=positives,
        metrics=metrics,
        slices=slices,
        config=config.model_dump(mode="json"),
    )


def holdout_values(
    holdout: pd.DataFrame, target_column: str, challenger: ScoredModel, champion: ScoredModel | None
) -> NDArray[np.float64]:
    """Return a regression holdout's target values after checking the models scored exactly its rows.

    Raises:
        ValueError: when the target column is missing or not finite numbers, the holdout has a single
            value, or a model's prediction count differs from the holdout's row count.
    """
    if target_column not in holdout.columns:
        raise ValueError(f"holdout has no target column {target_column!r}; columns: {list(holdout.columns)}")
    spec = task_spec("regression")
    labels = spec.labels(holdout[target_column], where=f"target column {target_column!r}")
    if not spec.judgeable(labels):
        raise ValueError(
            f"holdout has {labels.size} rows and a single target value: the gate needs spread to judge a "
            "model; widen the holdout window"
        )
    _check_counts(labels.size, challenger, champion)
    return labels


def _check_counts(rows: int, challenger: ScoredModel, champion: ScoredModel | None) -> None:
    """Raise ValueError when a model's score count differs from the holdout's ``rows``."""
    for role, model in (("challenger", challenger), ("champion", champion)):
        if model is not None and model.scores.size != rows:
            raise ValueError(
                f"{role} {model.name!r} has {model.scores.size} scores for {rows} holdout rows: "
                "score exactly the holdout rows, in holdout order"
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
    _check_counts(labels.size, challenger, champion)
    return labels


def skill_rules(labels: NDArray[np.int8], challenger: ScoredModel, config: GateConfig) -> list[RuleResult]:
    """Return the challenger's skill floors: the lower ends of its ROC-AUC and PR-AUC lift intervals.

    No skill is ROC-AUC 0.5 and a lift of 1 (the PR-AUC random scores reach on these rows), whatever
    the base rate; the floors ``min_roc_auc`` and ``min_pr_auc_lift`` cannot be set below them.
    """
    intervals = skill_intervals(
        labels,
        challenger.scores,
        resamples=config.bootstrap_resamples,
        confidence=config.confidence,
        seed=config.seed,
    )
    roc, lift = intervals["roc_auc"], intervals["pr_auc_lift"]
    rows, positives = labels.size, int(labels.sum())
    random_pr_auc = float(no_skill_pr_auc(rows, positives))
    holdout = f"{rows:,} holdout rows, {positives:,} positive (base rate {positives / rows:.4f})"
    return [
        _interval_rule(
            "skill_roc_auc",
            roc,
            config.min_roc_auc,
            f"challenger ROC-AUC {roc.estimate:.4f} on {holdout}; random scores reach 0.5",
        ),
        _interval_rule(
            "skill_pr_auc_lift",
            lift,
            config.min_pr_auc_lift,
            f"challenger PR-AUC {lift.estimate * random_pr_auc:.4f} is {lift.estimate:.2f}x the "
            f"{random_pr_auc:.4f} random scores reach on {holdout}",
        ),
    ]


def operating_point_rules(
    labels: NDArray[np.int8], metrics: ModelMetrics, config: GateConfig
) -> list[RuleResult]:
    """Return the operating point's rules: a precision target above the base rate, recall beyond no skill.

    Recall at the target must beat the ``(1 + confidence) / 2`` quantile of what random rankings of the
    same labels reach there. A target at or below the base rate is met by flagging everything, by every
    model: it fails with the fix rather than letting the served threshold flag every request.
    """
    target, base_rate = config.fixed_precision, float(labels.mean())
    rows, positives = labels.size, int(labels.sum())
    quantile = (1 + config.confidence) / 2
    no_skill = no_skill_recall_at_precision(
        labels, target, draws=config.bootstrap_resamples, quantile=quantile, seed=config.seed
    )
    threshold = metrics.threshold_at_precision
    operating_point = (
        f"at score threshold {threshold:.4g}"
        if threshold is not None
        else "no score threshold reaches that precision, so recall counts as 0"
    )
    separates = target > base_rate
    detail = (
        f"precision target {target} is above the holdout base rate {base_rate:.4f} "
        f"({positives:,} positive of {rows:,} rows)"
    )
    if not separates:
        detail = (
            f"precision target {target} is at or below the holdout base rate {base_rate:.4f} "
            f"({positives:,} positive of {rows:,} rows): flagging every row meets it, so any model, "
            "random scores included, passes there and the served threshold would flag every request. "
            f"Set {_setting_hint(config, 'fixed_precision')} above {base_rate:.4f}: the precision alerts "
            "must have to be worth acting on"
        )
    return [
        RuleResult(
            name="precision_target_above_base_rate",
            passed=separates,
            observed=target,
            threshold=base_rate,
            comparison=">",
            detail=detail,
        ),
        RuleResult(
            name="recall_at_precision_vs_no_skill",
            passed=metrics.recall_at_precision > no_skill,
            observed=metrics.recall_at_precision,
            threshold=no_skill,
            comparison=">",
            detail=f"recall {metrics.recall_at_precision:.4f} at precision >= {target} ({operating_point}); "
            f"random rankings of these labels reach {no_skill:.4f} or less there in {quantile:.1%} of "
            f"{config.bootstrap_resamples} draws (seed {config.seed})",
            evidence={"no_skill_recall": no_skill, "quantile": quantile, "draws": config.bootstrap_resamples},
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
    _check_slice_columns(holdout, config)
    results = []
    for column in config.slice_columns:
        values = holdout[column].astype(object)  # a categorical would drop its null group
        for value, rows in values.groupby(values, dropna=False, sort=True).indices.items():
            results.append(_slice_result(column, value, rows, challenger, champion, labels, config))
    return results


def _check_slice_columns(holdout: pd.DataFrame, config: GateConfig) -> None:
    """Raise ValueError when a slice column is not a holdout column."""
    missing = [column for column in config.slice_columns if column not in holdout.columns]
    if missing:  # load_gate_config(use_case=...) refuses these up front; this guards other callers
        raise ValueError(
            f"slice columns {missing} are not holdout columns {list(holdout.columns)}: set "
            f"{_setting_hint(config, 'slice_columns')} to holdout columns"
        )


def slice_rules(slices: list[SliceResult], config: GateConfig, metric: str | None = None) -> list[RuleResult]:
    """Return one rule per slice column: no judged slice of it may regress beyond ``slice_margin``.

    ``metric`` names the slices' metric in the detail (default: the gate's ``metric``).
    """
    metric = metric or config.metric
    rules = []
    for column in config.slice_columns:
        values = [item for item in slices if item.column == column]
        judged = [item for item in values if item.status in ("ok", "regressed")]
        regressed = [item for item in judged if item.status == "regressed"]
        skipped = [item for item in values if item.status in ("too_small", "undefined")]
        worst = min(judged, key=lambda item: float(item.delta or 0.0), default=None)  # judged have a delta
        parts = [
            f"{column}={item.value}: {metric} {item.challenger:.4f} vs champion "
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


def _interval_rule(name: str, interval: MetricInterval, floor: float, estimate: str) -> RuleResult:
    """Return a rule passing when the lower end of ``interval`` is above ``floor``."""
    return RuleResult(
        name=name,
        passed=interval.lower > floor,
        observed=interval.lower,
        threshold=floor,
        comparison=">",
        detail=f"{estimate}; {interval.confidence:.0%} interval of the {interval.metric} "
        f"[{interval.lower:.4f}, {interval.upper:.4f}] over {interval.resamples} resamples; its lower end "
        f"must be above {floor}",
        evidence=interval.to_dict(),
    )


def _setting_hint(config: GateConfig, key: str) -> str:
    """Return where to change gate setting ``key``: the use case's declaration when one applied."""
    use_case = config.source.use_case if config.source is not None else None
    if use_case is None:
        return f"gate setting {key} (a use case's gate: section, or the run's gate overrides)"
    return f"gate.{key} in use case {use_case}'s declaration (include/mlloop/usecases/{use_case}.yaml)"
