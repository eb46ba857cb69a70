"""When monitoring starts a retrain: the decision rule on the evidence, then the guards on the trigger.

Pure functions, no Evidently, MLflow or Airflow: ``monitor_drift`` gathers the evidence (drift per column,
prediction drift, performance on labelled data), ``decide`` says which rules fire and with what numbers,
``guard`` says whether a firing decision may trigger ``train_model`` now. Every outcome, quiet, fired,
suppressed or dry run, carries a one-line reason that is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlloop.versioned_config import load_versioned_config

MONITOR_DEFAULTS_PATH = Path(__file__).with_name("monitor_defaults.yaml")
Action = Literal["quiet", "trigger", "suppressed", "dry_run"]


class MonitorConfig(BaseModel):
    """Decision rule and guard settings. Defaults live in ``monitor_defaults.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, description="Version of these settings, recorded in decisions.")
    drift_share_threshold: float = Field(gt=0, le=1, description="Fire above this share of drifted columns.")
    top_k_features: int = Field(ge=0, description="Fire when one of the k most important features drifts.")
    prediction_drift: bool = Field(description="Fire when the champion's score distribution drifts.")
    performance_margin: float = Field(ge=0, le=1, description="Tolerated PR-AUC drop on labelled data.")
    min_labelled_rows: int = Field(ge=1, description="Fewer labelled rows: decay is not judged.")
    min_labelled_positives: int = Field(ge=1, description="Fewer labelled positives: decay is not judged.")
    cooldown_hours: float = Field(ge=0, description="No trigger within this long after the last one.")
    max_triggers_per_week: int = Field(ge=0, description="At most this many triggers in any 7 days.")
    window_from_decay: bool = Field(
        description="A decay-triggered retrain trains only from the decayed window's first day on, and "
        "retrains as each new day lands until its window is full again."
    )


def load_monitor_config(overrides: Mapping[str, Any] | None = None) -> MonitorConfig:
    """Return ``monitor_defaults.yaml`` with per-run ``overrides`` applied.

    Raises:
        ValueError: for an unknown key (naming the valid ones) or a value out of bounds (naming it).
    """
    return load_versioned_config(MonitorConfig, MONITOR_DEFAULTS_PATH, overrides, what="monitoring")


@dataclass(frozen=True)
class MonitorEvidence:
    """What the checks found for one window (None where a check could not run)."""

    drift_share: float
    drifted_columns: list[str]
    top_features: list[str]  # the champion's features, most important first
    prediction_drift: bool | None = None
    prediction_drift_score: float | None = None
    performance: float | None = None  # PR-AUC of the champion on the labelled window
    performance_at_promotion: float | None = None  # its holdout PR-AUC when it was promoted
    labelled_rows: int = 0
    labelled_positives: int = 0
    monitored_days: list[str] = field(default_factory=list)  # ISO days of the monitored window
    champion_days: list[str] = field(default_factory=list)  # ISO days the champion was trained on
    champion_train_from: str | None = None  # set when the champion's window was cut at a change
    full_window_days: int = 0  # train_model's usual window length
    change_seen_from: str | None = None  # where an earlier decay of this same champion placed the change
    served_rows: int = 0  # the champion's answers logged by the scoring service for the window
    prediction_source: str = "batch"  # scores of the prediction-drift check: "served" answers or "batch"
    scores_source: str = "batch"  # performance: "served": its logged answers; "batch": the window re-scored


@dataclass(frozen=True)
class RuleOutcome:
    """One rule: whether it fired, on what numbers."""

    rule: str
    fired: bool
    detail: str


@dataclass(frozen=True)
class MonitorDecision:
    """Which rules fired; ``fire`` when any did."""

    rules: list[RuleOutcome]
    config_version: str
    train_from: str | None = None  # first day a retrain may use (None: train_model's usual window)

    @property
    def fire(self) -> bool:
        """Return True when any rule fired."""
        return any(rule.fired for rule in self.rules)

    @property
    def reason(self) -> str:
        """Return the fired rules' details, or why nothing fired."""
        fired = [f"{r.rule}: {r.detail}" for r in self.rules if r.fired]
        return (
            "; ".join(fired) if fired else "no rule fired (" + "; ".join(r.detail for r in self.rules) + ")"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the decision as JSON-able data."""
        return {
            "fire": self.fire,
            "reason": self.reason,
            "config_version": self.config_version,
            "train_from": self.train_from,
            "rules": [asdict(r) for r in self.rules],
        }


def decide(evidence: MonitorEvidence, config: MonitorConfig) -> MonitorDecision:
    """Apply the rules of ``config`` to ``evidence``; every rule is reported, fired or not."""
    rules = [
        RuleOutcome(
            "drift_share",
            evidence.drift_share > config.drift_share_threshold,
            f"{evidence.drift_share:.2f} of the feature columns drifted (threshold "
            f"{config.drift_share_threshold:.2f}): {', '.join(evidence.drifted_columns) or 'none'}",
        )
    ]
    if config.top_k_features:
        top = evidence.top_features[: config.top_k_features]
        hit = [c for c in top if c in evidence.drifted_columns]
        rules.append(
            RuleOutcome(
                "top_feature_drift",
                bool(hit),
                f"drifted among the champion's top {config.top_k_features} features "
                f"({', '.join(top) or 'unknown'}): {', '.join(hit) or 'none'}",
            )
        )
    if config.prediction_drift:
        if evidence.prediction_drift is None:
            rules.append(RuleOutcome("prediction_drift", False, "prediction drift not measured"))
        else:
            score = (
                ""
                if evidence.prediction_drift_score is None
                else f" (score {evidence.prediction_drift_score:.3g})"
            )
            rules.append(
                RuleOutcome(
                    "prediction_drift",
                    evidence.prediction_drift,
                    f"the champion's scores ({source_words(evidence.prediction_source)}) "
                    f"{'drifted' if evidence.prediction_drift else 'stayed'}{score}",
                )
            )
    performance = _performance_rule(evidence, config)
    rules.append(performance)
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


def _performance_rule(evidence: MonitorEvidence, config: MonitorConfig) -> RuleOutcome:
    """Judge decay only with enough labels and a reference value from promotion time."""
    if evidence.performance is None or evidence.performance_at_promotion is None:
        return RuleOutcome("performance_decay", False, "no labelled window or no holdout value to compare")
    if (
        evidence.labelled_rows < config.min_labelled_rows
        or evidence.labelled_positives < config.min_labelled_positives
    ):
        return RuleOutcome(
            "performance_decay",
            False,
            f"not judged: {evidence.labelled_rows} labelled rows / {evidence.labelled_positives} positives "
            f"(needs {config.min_labelled_rows} / {config.min_labelled_positives})",
        )
    drop = evidence.performance_at_promotion - evidence.performance
    return RuleOutcome(
        "performance_decay",
        drop > config.performance_margin,
        f"PR-AUC {evidence.performance:.3f} on {evidence.labelled_rows} labelled rows "
        f"({source_words(evidence.scores_source)}) vs "
        f"{evidence.performance_at_promotion:.3f} at promotion (drop {drop:+.3f}, margin "
        f"{config.performance_margin:.3f})",
    )


@dataclass(frozen=True)
class TriggerRecord:
    """One recorded monitoring outcome (the guard's memory)."""

    at: datetime
    action: Action
    reason: str
    champion_version: str | None = None
    train_from: str | None = None


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
) -> GuardOutcome:
    """Return whether a decision may trigger retraining now, given the earlier triggers.

    Order: nothing fired → quiet; dry run → dry_run (what would happen); a train_model run already active,
    the cooldown after the last trigger, or the weekly budget → suppressed; otherwise trigger.
    """
    if not decision.fire:
        return GuardOutcome("quiet", decision.reason)
    triggers = sorted((r.at for r in history if r.action == "trigger"), reverse=True)
    blockers = []
    if training_active:
        blockers.append("a train_model run is active")
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
