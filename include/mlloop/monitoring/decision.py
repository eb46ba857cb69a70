"""When monitoring starts a retrain: the decision rule on the evidence, then the guards on the trigger.

Pure functions, no Evidently, MLflow or Airflow: the monitor DAG gathers the evidence (drift per column,
prediction drift, performance on labelled data), ``decide`` says which rules fire and with what numbers,
``guard`` says whether a firing decision may trigger ``train_<use case>`` now. Every outcome, quiet, fired,
suppressed or dry run, carries a one-line reason that is recorded.

Performance decay is judged against the champion's own variability: ``PerformanceBand`` holds the
monitored metric on the champion's holdout and the spread that metric has by chance on a window of the
monitored size and class counts (``monitoring.performance.reference_band`` computes it); the rule fires
only on a drop beyond that spread (one-sided test at ``false_alarm_rate``) and beyond a practical margin;
a window without such a drop waits while it holds too few labelled positives for the test to have
``power`` (its quiet would not mean "no decay"), but a drop that large fires at any size. A change of
the base rate is its own rule (``label_shift``), judged against the base rate the champion's days would
show at the window's label maturity (``BaseRateReference``); by default it is a finding, not a retrain.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlloop.tasks import task_spec
from mlloop.versioned_config import load_versioned_config

if TYPE_CHECKING:
    from mlloop.usecase import UseCase

MONITOR_DEFAULTS_PATH = Path(__file__).with_name("monitor_defaults.yaml")
Action = Literal["quiet", "trigger", "suppressed", "dry_run"]
PerformanceMetric = Literal["roc_auc", "pr_auc_lift", "log_loss", "rmse", "mae"]
METRIC_LABELS: dict[str, str] = {
    "roc_auc": "ROC-AUC",
    "pr_auc_lift": "PR-AUC lift",
    "log_loss": "log loss",
    "rmse": "RMSE",
    "mae": "MAE",
}


class MonitorConfig(BaseModel):
    """Decision rule and guard settings. Defaults live in ``monitor_defaults.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, description="Version of these settings, recorded in decisions.")
    top_k_features: int = Field(
        ge=0, description="Also judge the share of drifted columns among the champion's k top features."
    )
    prediction_drift: bool = Field(description="Fire when the champion's score distribution drifts.")
    confirm_prediction_drift: bool = Field(
        description="Prediction drift alone (no other retraining rule fired) retrains only when the previous "
        "check of the same champion saw it too; the first such check is suppressed as unconfirmed."
    )
    drift_false_alarm_rate: float = Field(
        gt=0, lt=0.5, description="Target rate of windows without change that fire each drift rule."
    )
    drift_calibration_splits: int = Field(
        ge=1, le=1000, description="Reference-vs-reference splits (of each kind) a drift threshold rests on."
    )
    drift_calibration_splits_by: Literal["both", "time", "random"] = Field(
        description="Splits in time order, of random rows, or both (the more conservative threshold)."
    )
    drift_min_rows: int = Field(ge=1, description="Rows a drift check needs; the window widens to reach it.")
    drift_max_days: int = Field(ge=1, le=90, description="The widest window a drift check may take.")
    performance_metric: PerformanceMetric = Field(
        description="Metric decay is judged on: roc_auc, pr_auc_lift (PR-AUC / no-skill PR-AUC) or log_loss; "
        "rmse or mae for a regression use case (rmse unless its declaration says)."
    )
    false_alarm_rate: float = Field(
        gt=0,
        lt=0.5,
        description="Chance that a window without change fires decay (one-sided) or label shift.",
    )
    power: float = Field(
        ge=0.5,
        lt=1,
        description="Wait for enough labelled positives to detect a drop of the margin this often.",
    )
    decay_margin: float = Field(
        ge=0,
        lt=1,
        description="Practical margin: a drop must also exceed this share of the champion's skill.",
    )
    bootstrap_resamples: int = Field(ge=100, le=100_000, description="Resamples of the champion's holdout.")
    seed: int = Field(ge=0, description="Seed of the bootstrap resampling.")
    min_labelled_rows: int = Field(ge=1, description="Fewer labelled rows: decay and label shift wait.")
    min_labelled_positives: int = Field(
        ge=1, description="Floor under the derived positives count (normal approximation of the band)."
    )
    label_shift_margin: float = Field(
        ge=0, description="Practical margin: the base rate must also move by more than this share."
    )
    label_shift_retrains: bool = Field(description="Whether a label shift starts a retrain (else a finding).")
    cooldown_hours: float = Field(ge=0, description="No trigger within this long after the last one.")
    max_triggers_per_week: int = Field(ge=0, description="At most this many triggers in any 7 days.")
    window_from_decay: bool = Field(
        description="A decay-triggered retrain trains only from the decayed window's first day on, and "
        "retrains as each new day lands until its window is full again."
    )


def load_monitor_config(
    overrides: Mapping[str, Any] | None = None, *, use_case: UseCase | None = None
) -> MonitorConfig:
    """Return the effective policy: defaults, then ``use_case``'s ``monitor:`` section, then ``overrides``.

    ``monitor_<use case>``, the offline replay and the benchmark all use this one merge.

    Raises:
        ValueError: for an unknown key (naming where it was set and the valid keys) or a value out of
            bounds (naming it).
    """
    declared = dict(use_case.monitor) if use_case is not None else {}
    if declared:
        check_monitor_section(declared, where=f"use case {use_case.name!r}")  # type: ignore[union-attr]
    # A task whose metrics differ from the defaults' (regression: rmse) sets its own under the declaration.
    task_default = _task_defaults(use_case)
    return load_versioned_config(
        MonitorConfig,
        MONITOR_DEFAULTS_PATH,
        {**task_default, **declared, **(overrides or {})},
        what="monitoring",
    )


def _task_defaults(use_case: UseCase | None) -> dict[str, Any]:
    """Return the monitoring defaults of ``use_case``'s task that replace the package's (none for binary)."""
    metric = task_spec(use_case.task).default_performance_metric if use_case is not None else None
    return {"performance_metric": metric} if metric else {}


def check_monitor_section(section: Mapping[str, Any], *, where: str = "a use case") -> MonitorConfig:
    """Return the policy a declaration's ``monitor:`` section gives on the defaults, checking its keys.

    Raises:
        ValueError: naming the declaration's ``monitor:`` section and what is wrong in it.
    """
    try:
        return load_versioned_config(MonitorConfig, MONITOR_DEFAULTS_PATH, section, what="monitoring")
    except ValueError as exc:
        raise ValueError(f"the monitor: section of {where}: {exc}") from exc


def policy_record(
    config: MonitorConfig, use_case: UseCase | None, overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Return what a decision records of its policy: version, fingerprint, layers and effective values."""
    effective = config.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(effective, sort_keys=True).encode()).hexdigest()[:12]
    return {
        "version": config.version,
        "fingerprint": digest,  # changes with any effective value, whichever layer set it
        "defaults": MONITOR_DEFAULTS_PATH.name,
        "use_case": use_case.name if use_case is not None else None,
        "use_case_section": dict(use_case.monitor) if use_case is not None else {},
        "run_overrides": dict(overrides or {}),
        "effective": effective,
    }


@dataclass(frozen=True)
class PerformanceBand:
    """The champion's reference for the monitored metric at one window's size and class counts.

    ``expected`` and ``window_se`` come from resampling the champion's holdout at the window's positive
    and negative counts (what an unchanged window of that size shows by chance); ``holdout_se`` is the
    holdout value's own estimation error (resampling at its own counts).
    """

    metric: str
    higher_is_better: bool
    holdout_value: float  # the metric on the champion's holdout
    holdout_rows: int
    holdout_positives: int
    holdout_se: float
    expected: float  # mean over the resamples at the window's counts
    window_se: float  # their standard deviation
    window_rows: int
    window_positives: int
    no_skill: float  # the metric of a no-skill model (ROC-AUC 0.5, lift 1, the base rate's log loss)
    resamples: int
    # What the label counts count: positives (binary), or rows (regression, whose holdout_positives and
    # window_positives are then row counts).
    counted: str = "positives"

    @property
    def se(self) -> float:
        """Return the standard error of (expected - window value) under no change."""
        return math.hypot(self.holdout_se, self.window_se)


@dataclass(frozen=True)
class BaseRateReference:
    """The base rate the window's labelled rows would show if the champion's days' rate held.

    Labels arrive late and at class-dependent speed, so the champion's days are weighted by the window's
    label maturity (``monitoring.performance.maturity_matched_base_rate``).
    """

    rate: float
    rows: int  # reference rows with a known label
    effective_rows: float  # (sum w)^2 / sum w^2 of the maturity weights


@dataclass(frozen=True)
class MonitorEvidence:
    """What the checks found for one window (None where a check could not run)."""

    drift_share: float
    drifted_columns: list[str]
    top_features: list[str]  # the champion's features, most important first
    prediction_drift: bool | None = None  # the score's drift statistic beyond its calibrated threshold
    prediction_drift_score: float | None = None
    # Thresholds calibrated on reference-vs-reference splits of the champion's own data
    # (``monitoring.drift.calibrate_drift``); None: not calibrated, the rule does not judge.
    drift_threshold: float | None = None
    top_drift_share: float | None = None  # share of drifted columns among the top-k features
    top_drift_threshold: float | None = None
    prediction_drift_threshold: float | None = None
    drift_calibration: list[str] = field(default_factory=list)  # how each threshold was derived
    # Each judged column's (distance, own bound, Evidently's threshold) when the columns are judged against
    # their own block-to-block spread (``monitoring.drift.ColumnBounds``): a column counts as drifted beyond
    # its bound and at Evidently's threshold, and the share rules fire on any such column (threshold 0).
    # Empty: the ranked splits' share threshold judges Evidently's verdicts.
    column_bounds: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    top_column_bounds: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    # Label-free estimate of the monitored metric from the champion's calibrated scores on every window
    # row (``monitoring.estimate``), with its band; "" where the champion has no calibration.
    estimated_performance: float | None = None
    estimated_band: tuple[float, float] | None = None
    estimate_note: str = ""
    performance: float | None = None  # the monitored metric of the champion on the window's labelled rows
    performance_band: PerformanceBand | None = None  # its reference at the window's counts
    labelled_rows: int = 0
    labelled_positives: int = 0
    base_rate_reference: BaseRateReference | None = None
    monitored_days: list[str] = field(default_factory=list)  # ISO days of the monitored window
    champion_days: list[str] = field(default_factory=list)  # ISO days the champion was trained on
    champion_train_from: str | None = None  # set when the champion's window was cut at a change
    full_window_days: int = 0  # train_<use case>'s usual window length
    change_seen_from: str | None = None  # where an earlier decay of this same champion placed the change
    served_rows: int = 0  # the champion's answers logged by the scoring service for the window
    prediction_source: str = "batch"  # scores of the prediction-drift check: "served" answers or "batch"
    scores_source: str = "batch"  # performance: "served": its logged answers; "batch": the window re-scored


@dataclass(frozen=True)
class RuleOutcome:
    """One rule: whether it fired, on what numbers; ``retrains`` False makes a firing rule a finding."""

    rule: str
    fired: bool
    detail: str
    retrains: bool = True
    figures: dict[str, Any] = field(default_factory=dict)  # the numbers of ``detail``, for records/charts


@dataclass(frozen=True)
class MonitorDecision:
    """Which rules fired; ``fire`` when any rule that retrains did."""

    rules: list[RuleOutcome]
    config_version: str
    train_from: str | None = None  # first day a retrain may use (None: train_<use case>'s usual window)

    @property
    def fire(self) -> bool:
        """Return True when any rule that retrains fired."""
        return any(rule.fired and rule.retrains for rule in self.rules)

    @property
    def retraining_rules(self) -> list[str]:
        """Return the rules that fired and retrain."""
        return [rule.rule for rule in self.rules if rule.fired and rule.retrains]

    @property
    def findings(self) -> list[str]:
        """Return the rules that fired as findings only (reported, no retrain)."""
        return [rule.rule for rule in self.rules if rule.fired and not rule.retrains]

    @property
    def reason(self) -> str:
        """Return the fired rules' details (findings after them), or why nothing fired."""
        fired = [f"{r.rule}: {r.detail}" for r in self.rules if r.fired and r.retrains]
        found = [
            f"{r.rule} (finding, no retrain): {r.detail}" for r in self.rules if r.fired and not r.retrains
        ]
        if fired:
            return "; ".join(fired + found)
        quiet = [r.detail for r in self.rules if not r.fired]
        if found:
            return "no retraining rule fired; " + "; ".join(found) + " (" + "; ".join(quiet) + ")"
        return "no rule fired (" + "; ".join(quiet) + ")"

    def to_dict(self) -> dict[str, Any]:
        """Return the decision as JSON-able data."""
        return {
            "fire": self.fire,
            "reason": self.reason,
            "config_version": self.config_version,
            "train_from": self.train_from,
            "findings": self.findings,
            "rules": [asdict(r) for r in self.rules],
        }


def decide(evidence: MonitorEvidence, config: MonitorConfig) -> MonitorDecision:
    """Apply the rules of ``config`` to ``evidence``; every rule is reported, fired or not."""
    rate = f"calibrated on the champion's data for a false-alarm rate of {config.drift_false_alarm_rate:g}"
    threshold = evidence.drift_threshold
    own = evidence.column_bounds
    share_detail = (
        _own_bounds_detail("feature columns", own, config.drift_false_alarm_rate)
        if own
        else f"{evidence.drift_share:.2f} of the feature columns drifted ("
        + (f"threshold {threshold:.3f} {rate}" if threshold is not None else "no calibrated threshold")
        + f"): {', '.join(evidence.drifted_columns) or 'none'}"
    )
    rules = [
        RuleOutcome(
            "drift_share",
            threshold is not None and evidence.drift_share > threshold,
            share_detail,
            figures={"drift_share": evidence.drift_share, "threshold": threshold}
            | ({"columns": {c: list(v) for c, v in own.items()}} if own else {}),
        )
    ]
    if config.top_k_features:
        top = evidence.top_features[: config.top_k_features]
        top_own = evidence.top_column_bounds
        hit = [c for c in top if c in (_beyond(top_own) if top_own else evidence.drifted_columns)]
        share, top_threshold = evidence.top_drift_share, evidence.top_drift_threshold
        judged = share is not None and top_threshold is not None
        detail = (
            _own_bounds_detail("of the champion's top features", top_own, config.drift_false_alarm_rate)
            if top_own
            else f"drifted among the champion's top {config.top_k_features} features "
            f"({', '.join(top) or 'unknown'}): {', '.join(hit) or 'none'}"
            + (f" (share {share:.2f}, threshold {top_threshold:.3f})" if judged else " (not calibrated)")
        )
        rules.append(
            RuleOutcome(
                "top_feature_drift",
                judged and share > top_threshold,  # type: ignore[operator]
                detail,
                figures={"top_drift_share": share, "threshold": top_threshold}
                | ({"columns": {c: list(v) for c, v in top_own.items()}} if top_own else {}),
            )
        )
    if config.prediction_drift:
        if evidence.prediction_drift is None:
            rules.append(RuleOutcome("prediction_drift", False, "prediction drift not measured"))
        else:
            score = (
                ""
                if evidence.prediction_drift_score is None
                else f" (score {evidence.prediction_drift_score:.3g}"
                + (
                    f", calibrated threshold {evidence.prediction_drift_threshold:.3g})"
                    if evidence.prediction_drift_threshold is not None
                    else ")"
                )
            )
            rules.append(
                RuleOutcome(
                    "prediction_drift",
                    evidence.prediction_drift,
                    f"the champion's scores ({source_words(evidence.prediction_source)}) "
                    f"{'drifted' if evidence.prediction_drift else 'stayed'}{score}",
                    figures={"score": evidence.prediction_drift_score},
                )
            )
    performance = performance_rule(evidence, config)
    rules.append(performance)
    rules.append(label_shift_rule(evidence, config))
    rules.append(estimate_rule(evidence, config))
    train_from = None
    if config.window_from_decay:
        catch_up = _catch_up_rule(evidence)
        rules.append(catch_up)
        # While catching up, a decay is the short window's, not a new change: keep the change's day.
        if catch_up.fired:
            train_from = evidence.champion_train_from
        elif performance.fired and evidence.monitored_days:
            # The same champion decayed before (its retrain rejected or suppressed): the change began then.
            train_from = evidence.change_seen_from or evidence.monitored_days[0]
    return MonitorDecision(rules, config.version, train_from)


def _beyond(judged: Mapping[str, tuple[float, float, float]]) -> list[str]:
    """Return the columns whose distance is beyond their own bound and at Evidently's threshold."""
    return [c for c, (score, bound, margin) in judged.items() if score > bound and score >= margin]


def _own_bounds_detail(
    what: str, judged: Mapping[str, tuple[float, float, float]], false_alarm: float
) -> str:
    """Return how many columns went beyond their own bound, with their figures and the nearest quiet one."""
    beyond = _beyond(judged)
    figures = ", ".join(f"{c} {judged[c][0]:.3g} > {judged[c][1]:.3g}" for c in beyond)
    quiet = {
        c: score / max(bound, margin, 1e-12)
        for c, (score, bound, margin) in judged.items()
        if c not in beyond
    }
    nearest = max(quiet, key=quiet.__getitem__, default=None)
    return (
        f"{len(beyond)} of {len(judged)} {what} beyond their own block-to-block bound and Evidently's "
        f"threshold (each at {false_alarm:g}/{len(judged)}, Bonferroni){': ' + figures if figures else ''}"
        + (
            f"; nearest quiet: {nearest} {judged[nearest][0]:.3g} (bound {judged[nearest][1]:.3g}, "
            f"Evidently {judged[nearest][2]:.3g})"
            if nearest
            else ""
        )
    )


def _catch_up_rule(evidence: MonitorEvidence) -> RuleOutcome:
    """Fire while the champion's window, cut at a change, is short and a newer day has landed.

    After a decay the relationship between inputs and labels changed: days before it teach the old one.
    The retrain that answered it used only the days since; each later day is more of the new relationship,
    so retrain on it until the window has its usual length again.
    """
    if not evidence.champion_train_from:
        return RuleOutcome("window_catch_up", False, "the champion's window was not cut at a change")
    have, full = len(evidence.champion_days), evidence.full_window_days
    newest = evidence.monitored_days[-1] if evidence.monitored_days else ""
    trained_to = evidence.champion_days[-1] if evidence.champion_days else ""
    detail = (
        f"the champion learned {have} day(s) since the change on {evidence.champion_train_from} "
        f"(up to {trained_to or 'unknown'}; usual window {full}), monitored up to {newest or 'unknown'}"
    )
    return RuleOutcome("window_catch_up", have < full and bool(newest) and newest > trained_to, detail)


def source_words(source: str) -> str:
    """Return how a reason names a score source."""
    return "served answers" if source == "served" else "batch re-scored"


def upper_quantile(probability: float) -> float:
    """Return the standard normal quantile z with P(Z <= z) = ``probability``."""
    return NormalDist().inv_cdf(probability)


def decay_margin(band: PerformanceBand, config: MonitorConfig) -> float:
    """Return the practical margin in the metric's units: ``decay_margin`` of the champion's skill."""
    return config.decay_margin * abs(band.holdout_value - band.no_skill)


def positives_needed(band: PerformanceBand, config: MonitorConfig) -> int | None:
    """Return the labelled positives a window needs for the decay test to have ``power``; None: never.

    The test detects a drop of the practical margin with probability ``power`` when
    (z[1 - false_alarm_rate] + z[power]) * SE <= margin, SE^2 = holdout_se^2 + v / positives, where
    v = window_se^2 * window_positives is the window's variance per positive at its base rate. When the
    holdout's own error alone is too large, no window is enough (None).
    """
    margin = decay_margin(band, config)
    if margin <= 0:
        return config.min_labelled_positives
    target = margin / (upper_quantile(1 - config.false_alarm_rate) + upper_quantile(config.power))
    room = target**2 - band.holdout_se**2
    if room <= 0:
        return None
    per_positive = band.window_se**2 * band.window_positives
    return max(config.min_labelled_positives, math.ceil(per_positive / room))


def performance_rule(evidence: MonitorEvidence, config: MonitorConfig) -> RuleOutcome:
    """Fire on a drop beyond the champion's chance spread and the practical margin.

    Below the floors (``min_labelled_rows``, ``min_labelled_positives``) it waits. A regression band counts
    rows where a binary one counts positives (``PerformanceBand.counted``): ``min_labelled_positives`` is then
    a floor on labelled rows, and the power calculation runs per row. Above them a drop beyond
    both fires; a window without such a drop waits while it holds fewer labelled positives than
    ``positives_needed`` (too few to read its quiet as "no decay") and is judged quiet beyond that.
    """
    band, value = evidence.performance_band, evidence.performance
    rows, positives = evidence.labelled_rows, evidence.labelled_positives
    counted = band.counted if band is not None else "positives"
    if value is None or band is None:
        return RuleOutcome(
            "performance_decay",
            False,
            f"not measured: {rows} labelled rows / {positives} positives (both classes needed) "
            "or no reference from the champion's holdout",
            figures={"state": "not_measured", "labelled_rows": rows, "labelled_positives": positives},
        )
    name, alpha = METRIC_LABELS.get(band.metric, band.metric), config.false_alarm_rate
    sign = 1.0 if band.higher_is_better else -1.0
    z = upper_quantile(1 - alpha)
    drop, spread, margin = sign * (band.expected - value), z * band.se, decay_margin(band, config)
    needed = positives_needed(band, config)
    figures = {
        "metric": band.metric,
        "estimate": value,
        "interval": [value - z * band.window_se, value + z * band.window_se],
        "holdout_value": band.holdout_value,
        "expected": band.expected,
        "band_edge": band.expected - sign * spread,  # beyond it: a drop not explained by chance
        "fires_beyond": band.expected - sign * max(spread, margin),
        "se": band.se,
        "holdout_se": band.holdout_se,
        "window_se": band.window_se,
        "drop": drop,
        "margin": margin,
        "false_alarm_rate": alpha,
        "labelled_rows": rows,
        "labelled_positives": positives,
        "positives_needed": needed,
        "holdout_rows": band.holdout_rows,
        "holdout_positives": band.holdout_positives,
    }
    estimate = (
        f"{name} {value:.3f} (interval {figures['interval'][0]:.3f}..{figures['interval'][1]:.3f}) on "
        f"{rows} labelled rows"
        + (f" / {positives} {counted}" if counted != "rows" else "")
        + f" ({source_words(evidence.scores_source)})"
    )
    reference = (
        f"champion's holdout {band.holdout_value:.3f} ({band.holdout_rows} rows"
        + (f" / {band.holdout_positives} {counted}" if counted != "rows" else "")
        + f"), {band.expected:.3f} expected at this window's counts, chance band to "
        f"{figures['band_edge']:.3f} (SE {band.se:.3f}, false-alarm rate {alpha:g})"
    )
    if rows < config.min_labelled_rows or positives < config.min_labelled_positives:
        floor = needed or config.min_labelled_positives
        counts = (
            f"{rows} labelled rows, needs {max(floor, config.min_labelled_rows)}"
            if counted == "rows"  # a regression window: both floors count rows
            else f"{positives} labelled {counted}, needs {floor} ({rows} labelled rows, needs "
            f"{config.min_labelled_rows})"
        )
        detail = f"waiting: {counts}; {estimate} vs {reference}"
        return RuleOutcome("performance_decay", False, detail, figures=figures | {"state": "waiting"})
    # The test's false-alarm rate holds at any window size; power only says whether a quiet window can
    # be read as "no drop of the margin". So a drop beyond chance and the margin fires even in a window too
    # small to have power, and only a quiet small window waits (a real drop this large must not wait for
    # thousands of positives the use case's volume never gives it).
    fired = drop > spread and drop > margin
    comparison = (
        f"drop {drop:+.3f} {'beyond' if drop > spread else 'within'} chance ({spread:.3f}) and "
        f"{'beyond' if drop > margin else 'within'} the margin ({margin:.3f})"
    )
    if not fired and needed is None:
        detail = (
            f"waiting: the champion's holdout ({band.holdout_positives} {counted}, SE {band.holdout_se:.3f}) "
            f"is too imprecise to rule out a drop of {margin:.3f} at false-alarm rate {alpha:g} with power "
            f"{config.power:g}, whatever the window; {estimate}: {comparison}"
        )
        return RuleOutcome("performance_decay", False, detail, figures=figures | {"state": "waiting"})
    if not fired and positives < needed:
        detail = (
            f"waiting: {positives} labelled {counted}, needs {needed} to rule out a drop of the margin "
            f"with power {config.power:g}; {estimate} vs {reference}: {comparison}"
        )
        return RuleOutcome("performance_decay", False, detail, figures=figures | {"state": "waiting"})
    detail = f"{estimate} vs {reference}: {comparison}"
    if fired and (needed is None or positives < needed):
        detail += f" (a window of {positives} {counted} has too little power to rule out smaller drops)"
    return RuleOutcome("performance_decay", fired, detail, figures=figures | {"state": "judged"})


def wilson_interval(positives: int, rows: int, confidence: float) -> tuple[float, float]:
    """Return the two-sided Wilson score interval of a proportion ``positives / rows``."""
    if rows <= 0:
        return 0.0, 1.0
    z = upper_quantile(0.5 + confidence / 2)
    p = positives / rows
    centre = (p + z * z / (2 * rows)) / (1 + z * z / rows)
    half = z * math.sqrt(p * (1 - p) / rows + z * z / (4 * rows * rows)) / (1 + z * z / rows)
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate_rule(evidence: MonitorEvidence, config: MonitorConfig) -> RuleOutcome:
    """A finding: the metric estimated from calibrated scores, and whether the realised one left its band.

    Before labels land the estimate is all there is; once they do, a realised value outside the band says
    the scores no longer mean what they meant (a concept or label shift, or a calibration that no longer
    holds). It never retrains by itself: decay and drift decide that.
    """
    name = METRIC_LABELS[config.performance_metric]
    if evidence.estimated_performance is None or evidence.estimated_band is None:
        return RuleOutcome(
            "performance_estimate", False, evidence.estimate_note or "no estimate", retrains=False
        )
    low, high = evidence.estimated_band
    figures = {"estimated": evidence.estimated_performance, "band": [low, high]}
    if evidence.performance is None:
        return RuleOutcome(
            "performance_estimate", False, f"{evidence.estimate_note}; no realised value yet", False, figures
        )
    outside = not low <= evidence.performance <= high
    return RuleOutcome(
        "performance_estimate",
        outside,
        f"{evidence.estimate_note}; realised {name} {evidence.performance:.3f} on "
        f"{evidence.labelled_rows} labelled rows is {'outside' if outside else 'inside'} the band",
        False,
        figures | {"realised": evidence.performance},
    )


def label_shift_rule(evidence: MonitorEvidence, config: MonitorConfig) -> RuleOutcome:
    """Fire when the window's base rate differs from the maturity-matched reference (two-sided test).

    Beyond chance (pooled two-proportion z-test at ``false_alarm_rate``) and beyond the practical margin
    (a relative change of more than ``label_shift_margin``). A finding unless ``label_shift_retrains``.
    """
    reference, rows, positives = (
        evidence.base_rate_reference,
        evidence.labelled_rows,
        evidence.labelled_positives,
    )
    retrains = config.label_shift_retrains
    if reference is None or rows < config.min_labelled_rows or reference.effective_rows <= 0:
        return RuleOutcome(
            "label_shift",
            False,
            f"not measured: {rows} labelled rows (needs {config.min_labelled_rows}) or no reference rate",
            retrains=retrains,
            figures={"state": "not_measured", "labelled_rows": rows},
        )
    alpha = config.false_alarm_rate
    rate = positives / rows
    pooled = (positives + reference.rate * reference.effective_rows) / (rows + reference.effective_rows)
    se = math.sqrt(pooled * (1 - pooled) * (1 / rows + 1 / reference.effective_rows))
    statistic = (rate - reference.rate) / se if se > 0 else 0.0
    z = upper_quantile(1 - alpha / 2)
    ratio = rate / reference.rate if reference.rate > 0 else None
    low, high = wilson_interval(positives, rows, 1 - alpha)
    beyond_chance = abs(statistic) > z
    beyond_margin = ratio is None or abs(ratio - 1) > config.label_shift_margin
    figures = {
        "state": "judged",
        "base_rate": rate,
        "interval": [low, high],
        "reference_rate": reference.rate,
        "reference_rows": reference.rows,
        "reference_effective_rows": reference.effective_rows,
        "ratio": ratio,
        "z": statistic,
        "critical_z": z,
        "margin": config.label_shift_margin,
        "false_alarm_rate": alpha,
        "labelled_rows": rows,
        "labelled_positives": positives,
    }
    detail = (
        f"base rate {rate:.4f} (interval {low:.4f}..{high:.4f}) on {rows} labelled rows vs "
        f"{reference.rate:.4f} expected from the champion's days at this window's label maturity "
        f"({reference.rows} rows): {'x' + format(ratio, '.2f') if ratio is not None else 'none before'}, "
        f"z {statistic:+.1f} "
        f"({'beyond' if beyond_chance else 'within'} +-{z:.2f} at false-alarm rate {alpha:g}; "
        f"{'beyond' if beyond_margin else 'within'} the margin +-{config.label_shift_margin:.0%})"
        + ("" if retrains else "; retraining on it is off (label_shift_retrains)")
    )
    return RuleOutcome("label_shift", beyond_chance and beyond_margin, detail, retrains, figures)


@dataclass(frozen=True)
class TriggerRecord:
    """One recorded monitoring outcome (the guard's memory)."""

    at: datetime
    action: Action
    reason: str
    champion_version: str | None = None
    train_from: str | None = None
    fired_rules: tuple[str, ...] = ()  # the decision's retraining rules that fired, before the guard
    window_end: str | None = None  # the last day of the window it checked (ISO)


def unconfirmed(
    decision: MonitorDecision,
    history: Sequence[TriggerRecord],
    champion_version: str | None,
    config: MonitorConfig,
    window_end: str | None = None,
) -> str | None:
    """Return why a decision that fired on prediction drift alone waits for confirmation, else None.

    The champion's score distribution is judged at ``drift_false_alarm_rate`` on its own, with no input
    column beyond its bound and no labelled decay beside it: the weakest evidence the monitor has. With
    ``confirm_prediction_drift``, it retrains only when the previous (non-dry-run) check of the same
    champion on an earlier window (one ending before ``window_end``) fired prediction drift too; two
    independent clean windows both fire by chance with about the rate squared, while a lasting shift is
    confirmed one check later. A second check of the same window (a manual run beside the scheduled one)
    sees the same rows, so it neither confirms nor clears.
    """
    if not config.confirm_prediction_drift or decision.retraining_rules != ["prediction_drift"]:
        return None
    earlier = [
        r
        for r in history
        if r.champion_version == champion_version
        and r.action != "dry_run"
        and (window_end is None or r.window_end is None or r.window_end < window_end)
    ]
    previous = max(earlier, key=lambda r: r.at) if earlier else None
    if previous is not None and "prediction_drift" in previous.fired_rules:
        return None
    seen = (
        "the previous check did not see it" if previous is not None else "no earlier check of this champion"
    )
    return (
        f"unconfirmed: prediction drift alone ({seen}); it retrains if the next check sees it again "
        "(confirm_prediction_drift)"
    )


def change_seen_from(history: Sequence[TriggerRecord], champion_version: str) -> str | None:
    """Return the ``train_from`` of the newest non-dry-run decision about ``champion_version``, if any.

    A decay whose retrain was rejected (or suppressed) leaves the same champion decaying the next day; the
    change began on the first day, so the next retrain must still learn from there. A quiet check in
    between ends that memory.
    """
    for record in sorted(history, key=lambda r: r.at, reverse=True):
        if record.champion_version == champion_version and record.action != "dry_run":
            return record.train_from
    return None


@dataclass(frozen=True)
class GuardOutcome:
    """What happens to a decision: quiet, trigger, suppressed (and why) or dry run."""

    action: Action
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def guard(
    decision: MonitorDecision,
    *,
    now: datetime,
    history: Sequence[TriggerRecord],
    training_active: bool,
    dry_run: bool,
    config: MonitorConfig,
    champion_version: str | None = None,
    window_end: str | None = None,
) -> GuardOutcome:
    """Return whether a decision may trigger retraining now, given the earlier checks and triggers.

    Order: nothing fired → quiet; dry run → dry_run (what would happen); prediction drift alone and
    unconfirmed (``unconfirmed``), a train DAG run already active, the cooldown after the last trigger, or
    the weekly budget → suppressed; otherwise trigger.
    """
    if not decision.fire:
        return GuardOutcome("quiet", decision.reason)
    triggers = sorted((r.at for r in history if r.action == "trigger"), reverse=True)
    waiting = unconfirmed(decision, history, champion_version, config, window_end)
    blockers = [waiting] if waiting else []
    if training_active:
        blockers.append("a training run of this use case is active")
    cooldown = timedelta(hours=config.cooldown_hours)
    if triggers and now - triggers[0] < cooldown:
        blockers.append(
            f"cooldown: last trigger at {triggers[0].isoformat()}, {config.cooldown_hours:g} h cooldown ends "
            f"{(triggers[0] + cooldown).isoformat()}"
        )
    this_week = [t for t in triggers if now - t < timedelta(days=7)]
    if len(this_week) >= config.max_triggers_per_week:
        blockers.append(
            f"budget: {len(this_week)} triggers in the last 7 days (max {config.max_triggers_per_week})"
        )
    if dry_run:
        would = f"would be suppressed ({'; '.join(blockers)})" if blockers else "would trigger"
        return GuardOutcome("dry_run", f"dry run, {would}: {decision.reason}")
    if blockers:
        return GuardOutcome("suppressed", f"suppressed ({'; '.join(blockers)}): {decision.reason}")
    return GuardOutcome("trigger", decision.reason)
