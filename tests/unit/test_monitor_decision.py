"""The monitoring decision rule and the guards on the retraining trigger.

Decay is judged against a ``PerformanceBand`` (the champion's holdout value and its chance spread at the
window's counts); the numbers here are stated, not computed, so each test says what it relies on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlloop.monitoring.decision import (
    BaseRateReference,
    MonitorEvidence,
    PerformanceBand,
    TriggerRecord,
    change_seen_from,
    decide,
    guard,
    load_monitor_config,
    policy_record,
    positives_needed,
    upper_quantile,
)
from mlloop.usecase import UseCase, load_use_case

CONFIG = load_monitor_config()
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
TOP = ["amount", "customer_amount_vs_mean", "hour_of_day", "channel", "account_age_days", "country"]


def band(**changes) -> PerformanceBand:
    """A ROC-AUC reference: 0.95 on a holdout of 220 positives, SE 0.007 + 0.007 at 250 positives."""
    base = dict(
        metric="roc_auc",
        higher_is_better=True,
        holdout_value=0.95,
        holdout_rows=16_000,
        holdout_positives=220,
        holdout_se=0.007,
        expected=0.95,
        window_se=0.007,
        window_rows=20_000,
        window_positives=250,
        no_skill=0.5,
        resamples=400,
    )
    return PerformanceBand(**(base | changes))


def evidence(**changes) -> MonitorEvidence:
    base = dict(
        drift_share=0.0,
        drifted_columns=[],
        top_features=TOP,
        prediction_drift=False,
        prediction_drift_score=0.01,
        drift_threshold=0.3,
        top_drift_share=0.0,
        top_drift_threshold=0.0,
        prediction_drift_threshold=0.1,
        performance=0.955,
        performance_band=band(),
        labelled_rows=20_000,
        labelled_positives=250,
        base_rate_reference=BaseRateReference(rate=0.0125, rows=80_000, effective_rows=70_000.0),
    )
    return MonitorEvidence(**(base | changes))


def fired(decision) -> list[str]:
    return [r.rule for r in decision.rules if r.fired]


def test_quiet_window_fires_nothing_and_says_why() -> None:
    decision = decide(evidence(), CONFIG)
    assert not decision.fire and fired(decision) == []
    assert decision.reason.startswith("no rule fired")
    assert {r.rule for r in decision.rules} == {
        "drift_share",
        "top_feature_drift",
        "prediction_drift",
        "performance_decay",
        "label_shift",
        "performance_estimate",
        "window_catch_up",
    }
    assert decision.train_from is None


def test_drift_share_above_threshold_fires_with_numbers() -> None:
    drifted = [
        "country",
        "currency",
        "device",
        "distance_from_home_km",
        "tx_count_1h",
        "customer_age",
        "x",
        "y",
    ]
    decision = decide(evidence(drift_share=0.36, drifted_columns=drifted), CONFIG)
    assert fired(decision) == ["drift_share"]
    assert "0.36 of the feature columns drifted (threshold 0.300 calibrated" in decision.reason


def test_one_important_feature_is_enough() -> None:
    decision = decide(evidence(drift_share=0.05, drifted_columns=["amount"], top_drift_share=0.2), CONFIG)
    assert fired(decision) == ["top_feature_drift"]
    assert "amount" in decision.reason and "share 0.20, threshold 0.000" in decision.reason
    below_top_k = decide(evidence(drift_share=0.05, drifted_columns=["country"]), CONFIG)
    assert not below_top_k.fire, "country is the 6th feature, top_k_features is 5"


def test_estimate_is_a_finding_that_flags_a_realised_value_outside_its_band() -> None:
    note = "estimated ROC-AUC 0.960 (95% band 0.950-0.970)"
    inside = evidence(estimated_performance=0.96, estimated_band=(0.95, 0.97), estimate_note=note)
    rule = next(r for r in decide(inside, CONFIG).rules if r.rule == "performance_estimate")
    assert not rule.fired and "inside the band" in rule.detail and note in rule.detail
    concept = evidence(performance=0.58, estimated_performance=0.96, estimated_band=(0.95, 0.97))
    decision = decide(concept, CONFIG)
    rule = next(r for r in decision.rules if r.rule == "performance_estimate")
    assert rule.fired and not rule.retrains and "outside the band" in rule.detail
    assert "performance_estimate" in decision.findings
    unlabelled = evidence(performance=None, estimated_performance=0.96, estimated_band=(0.95, 0.97))
    assert "no realised value yet" in decide(unlabelled, CONFIG).reason


def test_drift_rules_without_a_calibrated_threshold_do_not_judge() -> None:
    uncalibrated = evidence(
        drift_share=0.9,
        drifted_columns=["amount"],
        drift_threshold=None,
        top_drift_share=1.0,
        top_drift_threshold=None,
    )
    decision = decide(uncalibrated, CONFIG)
    assert not decision.fire
    assert "no calibrated threshold" in decision.reason and "(not calibrated)" in decision.reason


def test_prediction_drift_fires_and_can_be_switched_off() -> None:
    assert fired(decide(evidence(prediction_drift=True, prediction_drift_score=0.4), CONFIG)) == [
        "prediction_drift"
    ]
    off = load_monitor_config({"prediction_drift": False})
    assert not decide(evidence(prediction_drift=True), off).fire


def test_decay_beyond_the_band_and_the_margin_fires_with_its_numbers() -> None:
    decayed = decide(evidence(performance=0.80), CONFIG)
    assert fired(decayed) == ["performance_decay"]
    rule = next(r for r in decayed.rules if r.rule == "performance_decay")
    # Estimate, its interval, the reference band and the rows/positives it rests on.
    assert "ROC-AUC 0.800 (interval 0.784..0.816) on 20000 labelled rows / 250 positives" in rule.detail
    assert "champion's holdout 0.950 (16000 rows / 220 positives)" in rule.detail
    assert "chance band to 0.927 (SE 0.010, false-alarm rate 0.01)" in rule.detail
    assert "drop +0.150 beyond chance (0.023) and beyond the margin (0.045)" in rule.detail
    assert rule.figures["state"] == "judged" and rule.figures["fires_beyond"] == pytest.approx(0.905)


def test_a_drop_within_the_margin_does_not_fire() -> None:
    # 0.03 is far beyond chance here (SE 0.0014) but less than a tenth of the skill (0.045): no decay.
    tight = band(holdout_se=0.001, window_se=0.001)
    decision = decide(evidence(performance=0.92, performance_band=tight), CONFIG)
    assert not decision.fire and "beyond chance (0.003) and within the margin (0.045)" in decision.reason


def test_without_a_margin_the_test_alone_decides_at_the_false_alarm_rate() -> None:
    no_margin = load_monitor_config({"decay_margin": 0})
    spread = upper_quantile(0.99) * band().se  # 0.023
    assert not decide(evidence(performance=0.95 - 0.9 * spread), no_margin).fire
    assert decide(evidence(performance=0.95 - 1.1 * spread), no_margin).fire


def test_decay_on_too_few_positives_waits_unless_the_drop_is_beyond_chance_and_margin() -> None:
    # The same window at 41 positives: its spread is wider (SE scales as 1/sqrt(positives)).
    few = band(window_positives=41, window_se=0.007 * (250 / 41) ** 0.5)
    needed = positives_needed(few, CONFIG)
    # (z[0.99] + z[0.8]) * sqrt(0.007^2 + v / n) <= 0.045, v = 0.007^2 * 250 per positive.
    target = 0.045 / (upper_quantile(0.99) + upper_quantile(0.8))
    assert needed == pytest.approx(0.007**2 * 250 / (target**2 - 0.007**2), abs=1)
    # A small drop (within chance here) cannot be read as "no decay" at this size: it waits, saying why.
    small = decide(evidence(performance=0.93, performance_band=few, labelled_positives=41), CONFIG)
    assert not small.fire
    assert f"waiting: 41 labelled positives, needs {needed} to rule out a drop of the margin" in small.reason
    # A drop beyond the chance spread (z * SE = 0.043) and the margin (0.045) is evidence at any size: the
    # test's false-alarm rate does not depend on power (seen on real data: ROC-AUC 0.61 against 0.74 on 404
    # positives waited for 7,090 a season's volume never brings).
    large = decide(evidence(performance=0.85, performance_band=few, labelled_positives=41), CONFIG)
    assert large.fire and "performance_decay" in fired(large)  # (41 of 20,000 is also a label shift)
    assert "too little power to rule out smaller drops" in large.reason


def test_a_holdout_too_imprecise_for_the_margin_judges_only_drops_beyond_its_spread() -> None:
    loose = band(holdout_se=0.02)  # alone above 0.045 / 3.17
    quiet = decide(evidence(performance=0.93, performance_band=loose), CONFIG)
    assert not quiet.fire and "waiting: the champion's holdout (220 positives, SE 0.020)" in quiet.reason
    assert fired(decide(evidence(performance=0.60, performance_band=loose), CONFIG)) == ["performance_decay"]


def test_decay_is_not_measured_without_a_band() -> None:
    decision = decide(evidence(performance=None, performance_band=None), CONFIG)
    assert not decision.fire and "performance_decay" in {r.rule for r in decision.rules}
    assert "not measured: 20000 labelled rows / 250 positives" in decision.reason


def test_log_loss_decays_upwards() -> None:
    loss = band(metric="log_loss", higher_is_better=False, holdout_value=0.040, expected=0.040,
                holdout_se=0.0003, window_se=0.0003, no_skill=0.066)  # fmt: skip
    config = load_monitor_config({"performance_metric": "log_loss"})
    assert fired(decide(evidence(performance=0.050, performance_band=loss), config)) == ["performance_decay"]
    assert not decide(evidence(performance=0.030, performance_band=loss), config).fire


def test_a_base_rate_change_is_a_finding_not_a_decay() -> None:
    shifted = evidence(labelled_positives=1000)  # 0.05 against 0.0125 expected
    decision = decide(shifted, CONFIG)
    assert not decision.fire and decision.findings == ["label_shift"]
    assert decision.reason.startswith(
        "no retraining rule fired; label_shift (finding, no retrain): base rate"
    )
    assert "0.0500 (interval 0.0462..0.0541) on 20000 labelled rows vs 0.0125 expected" in decision.reason
    assert "x4.00" in decision.reason and "retraining on it is off" in decision.reason
    retraining = decide(shifted, load_monitor_config({"label_shift_retrains": True}))
    assert fired(retraining) == ["label_shift"] and retraining.findings == []


def test_a_base_rate_within_chance_or_the_margin_is_quiet() -> None:
    assert decide(evidence(labelled_positives=265), CONFIG).findings == []  # 0.01325: z +1.0
    # 0.0140 is beyond chance on 400k rows but within the 25% margin.
    many = evidence(labelled_rows=400_000, labelled_positives=5_600)
    assert decide(many, CONFIG).findings == []


def _firing():
    return decide(evidence(drift_share=0.5, drifted_columns=["amount"]), CONFIG)


def test_guard_triggers_a_firing_decision_once() -> None:
    outcome = guard(_firing(), now=NOW, history=[], training_active=False, dry_run=False, config=CONFIG)
    assert outcome.action == "trigger" and "drift_share" in outcome.reason


def test_guard_suppresses_within_cooldown_and_says_until_when() -> None:
    history = [TriggerRecord(NOW - timedelta(hours=3), "trigger", "earlier drift")]
    outcome = guard(_firing(), now=NOW, history=history, training_active=False, dry_run=False, config=CONFIG)
    assert outcome.action == "suppressed"
    assert "cooldown" in outcome.reason and (NOW + timedelta(hours=21)).isoformat() in outcome.reason
    later = guard(
        _firing(),
        now=NOW + timedelta(hours=22),
        history=history,
        training_active=False,
        dry_run=False,
        config=CONFIG,
    )
    assert later.action == "trigger"


def test_guard_suppresses_while_training_runs_and_over_budget() -> None:
    busy = guard(_firing(), now=NOW, history=[], training_active=True, dry_run=False, config=CONFIG)
    assert busy.action == "suppressed" and "training run of this use case is active" in busy.reason
    week = [TriggerRecord(NOW - timedelta(days=d), "trigger", "x") for d in (1.5, 3, 5)]
    spent = guard(_firing(), now=NOW, history=week, training_active=False, dry_run=False, config=CONFIG)
    assert spent.action == "suppressed" and "budget: 3 triggers" in spent.reason
    old = [TriggerRecord(NOW - timedelta(days=d), "trigger", "x") for d in (8, 9, 10)]
    assert guard(
        _firing(), now=NOW, history=old, training_active=False, dry_run=False, config=CONFIG
    ).action == ("trigger")


def test_suppressed_and_dry_runs_do_not_count_as_triggers() -> None:
    history = [
        TriggerRecord(NOW - timedelta(hours=1), "suppressed", "x"),
        TriggerRecord(NOW - timedelta(hours=2), "dry_run", "x"),
    ]
    assert guard(
        _firing(), now=NOW, history=history, training_active=False, dry_run=False, config=CONFIG
    ).action == ("trigger")


def test_dry_run_triggers_nothing_but_says_what_it_would_do() -> None:
    would = guard(_firing(), now=NOW, history=[], training_active=False, dry_run=True, config=CONFIG)
    assert would.action == "dry_run" and "would trigger" in would.reason
    blocked = guard(_firing(), now=NOW, history=[], training_active=True, dry_run=True, config=CONFIG)
    assert blocked.action == "dry_run" and "would be suppressed" in blocked.reason


def test_prediction_drift_alone_retrains_only_when_the_previous_check_saw_it_too() -> None:
    alone = decide(evidence(prediction_drift=True, prediction_drift_score=0.4), CONFIG)
    assert alone.retraining_rules == ["prediction_drift"]

    def checked(hours: float, action: str, rules: tuple[str, ...], version: str = "3") -> TriggerRecord:
        return TriggerRecord(NOW - timedelta(hours=hours), action, "x", version, fired_rules=rules)

    def outcome(history: list[TriggerRecord]) -> str:
        kwargs = dict(now=NOW, training_active=False, dry_run=False, config=CONFIG, champion_version="3")
        return guard(alone, history=history, **kwargs).action

    # First sight, or the previous check of this champion was quiet: held back, and says why.
    first = guard(
        alone, now=NOW, history=[], training_active=False, dry_run=False, config=CONFIG, champion_version="3"
    )
    assert first.action == "suppressed" and "unconfirmed: prediction drift alone" in first.reason
    assert (
        outcome([checked(30, "suppressed", ("prediction_drift",)), checked(24, "quiet", ())]) == "suppressed"
    )
    # The previous check fired it too (suppressed as unconfirmed): confirmed, it retrains.
    assert outcome([checked(48, "quiet", ()), checked(24, "suppressed", ("prediction_drift",))]) == "trigger"
    # A check of the same window (a manual run beside the scheduled one) saw the same rows: no confirmation.
    same = TriggerRecord(
        NOW - timedelta(hours=1), "suppressed", "x", "3", None, ("prediction_drift",), "2026-11-30"
    )
    kwargs = dict(now=NOW, training_active=False, dry_run=False, config=CONFIG, champion_version="3")
    assert guard(alone, history=[same], window_end="2026-11-30", **kwargs).action == "suppressed"
    assert guard(alone, history=[same], window_end="2026-12-01", **kwargs).action == "trigger"
    # Another champion's drift, or a dry run, confirms nothing.
    assert outcome([checked(24, "suppressed", ("prediction_drift",), version="2")]) == "suppressed"
    assert outcome([checked(24, "dry_run", ("prediction_drift",))]) == "suppressed"
    # Beside another retraining rule it needs no confirmation, nor when the policy turns it off.
    both = decide(evidence(prediction_drift=True, drift_share=0.5, drifted_columns=["amount"]), CONFIG)
    assert (
        guard(both, now=NOW, history=[], training_active=False, dry_run=False, config=CONFIG).action
        == "trigger"
    )
    eager = load_monitor_config({"confirm_prediction_drift": False})
    assert (
        guard(alone, now=NOW, history=[], training_active=False, dry_run=False, config=eager).action
        == "trigger"
    )


def test_quiet_stays_quiet_even_in_dry_run() -> None:
    quiet = decide(evidence(), CONFIG)
    assert (
        guard(quiet, now=NOW, history=[], training_active=True, dry_run=True, config=CONFIG).action == "quiet"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"drift_share": 0.2}, "valid settings are"),
        ({"drift_false_alarm_rate": 1.5}, "drift_false_alarm_rate=1.5"),
    ],
)
def test_bad_overrides_name_the_problem(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        load_monitor_config(overrides)


def test_decision_serialises_with_its_config_version() -> None:
    data = _firing().to_dict()
    assert data["fire"] is True and data["config_version"] == CONFIG.version
    assert {r["rule"] for r in data["rules"]} >= {"drift_share", "performance_decay", "label_shift"}


def _use_case(monitor: dict) -> UseCase:
    return load_use_case("card_fraud").model_copy(update={"monitor": monitor})


def test_policy_layers_defaults_then_the_use_case_then_the_run() -> None:
    declared = _use_case({"false_alarm_rate": 0.05, "cooldown_hours": 6})
    config = load_monitor_config({"cooldown_hours": 1}, use_case=declared)
    assert (config.false_alarm_rate, config.cooldown_hours) == (0.05, 1)
    assert load_monitor_config(use_case=declared).cooldown_hours == 6
    record = policy_record(config, declared, {"cooldown_hours": 1})
    assert record["version"] == CONFIG.version and record["effective"]["false_alarm_rate"] == 0.05
    assert record["use_case_section"] == {"false_alarm_rate": 0.05, "cooldown_hours": 6}
    assert record["fingerprint"] != policy_record(CONFIG, None, None)["fingerprint"]


def test_a_bad_use_case_section_names_the_use_case_and_the_valid_keys() -> None:
    with pytest.raises(ValueError, match=r"monitor: section of use case 'card_fraud'.*valid settings are"):
        load_monitor_config(use_case=_use_case({"performance_margin": 0.05}))
    with pytest.raises(ValueError, match="performance_metric"):
        load_monitor_config(use_case=_use_case({"performance_metric": "pr_auc"}))


# --- after a decay: train from the change, then catch up ----------------------------------------------

CHANGE = dict(monitored_days=["2026-11-20"], champion_days=["2026-11-16", "2026-11-17", "2026-11-18",
              "2026-11-19"], full_window_days=4)  # fmt: skip


def test_decay_trains_from_the_decayed_window_not_the_days_before() -> None:
    decision = decide(evidence(performance=0.60, **CHANGE), CONFIG)
    assert fired(decision) == ["performance_decay"]
    assert decision.train_from == "2026-11-20" and decision.to_dict()["train_from"] == "2026-11-20"


def test_drift_without_decay_keeps_the_usual_window() -> None:
    decision = decide(evidence(drift_share=0.6, drifted_columns=["amount"], **CHANGE), CONFIG)
    assert decision.fire and decision.train_from is None


def test_decay_window_can_be_switched_off() -> None:
    decision = decide(evidence(performance=0.60, **CHANGE), load_monitor_config({"window_from_decay": False}))
    assert decision.fire and decision.train_from is None
    assert "window_catch_up" not in {r.rule for r in decision.rules}


def test_short_window_after_a_change_catches_up_on_each_new_day() -> None:
    cut = dict(champion_days=["2026-11-20"], champion_train_from="2026-11-20", full_window_days=4)
    next_day = decide(evidence(monitored_days=["2026-11-21"], **cut), CONFIG)
    assert fired(next_day) == ["window_catch_up"] and next_day.train_from == "2026-11-20"
    assert "1 day(s) since the change on 2026-11-20" in next_day.reason
    # A decay while catching up is the short window's, not a new change: the change's day stays.
    decayed = decide(evidence(performance=0.60, monitored_days=["2026-11-21"], **cut), CONFIG)
    assert set(fired(decayed)) == {"performance_decay", "window_catch_up"}
    assert decayed.train_from == "2026-11-20"
    # Nothing newer than what it learned: nothing to catch up on.
    same_day = decide(evidence(monitored_days=["2026-11-20"], **cut), CONFIG)
    assert not same_day.fire


def test_catch_up_stops_once_the_window_is_full_again() -> None:
    full = dict(
        champion_days=["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"],
        champion_train_from="2026-11-20",
        full_window_days=4,
    )
    decision = decide(evidence(monitored_days=["2026-11-24"], **full), CONFIG)
    assert not decision.fire and decision.train_from is None


def test_a_rejected_decay_retrain_keeps_the_change_day_for_the_next_one() -> None:
    def record(hours: int, action: str, version: str, train_from: str | None) -> TriggerRecord:
        return TriggerRecord(NOW - timedelta(hours=hours), action, "r", version, train_from)

    history = [record(30, "quiet", "7", None), record(20, "trigger", "7", "2026-11-20")]
    assert change_seen_from(history, "7") == "2026-11-20"
    assert change_seen_from(history, "8") is None  # a new champion starts afresh
    assert change_seen_from([*history, record(10, "dry_run", "7", None)], "7") == "2026-11-20"
    assert change_seen_from([*history, record(10, "quiet", "7", None)], "7") is None
    next_day = decide(
        evidence(performance=0.60, monitored_days=["2026-11-21"], change_seen_from="2026-11-20"), CONFIG
    )
    assert next_day.train_from == "2026-11-20"


def test_reasons_name_where_the_scores_came_from() -> None:
    reason = decide(evidence(prediction_source="served", scores_source="batch"), CONFIG).reason
    assert "the champion's scores (served answers) stayed" in reason
    assert "250 positives (batch re-scored)" in reason
