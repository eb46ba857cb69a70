"""The monitoring decision rule and the guards on the retraining trigger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlloop.monitoring.decision import (
    MonitorEvidence,
    TriggerRecord,
    change_seen_from,
    decide,
    guard,
    load_monitor_config,
)

CONFIG = load_monitor_config()
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
TOP = ["amount", "customer_amount_vs_mean", "hour_of_day", "channel", "account_age_days", "country"]


def evidence(**changes) -> MonitorEvidence:
    base = dict(
        drift_share=0.0,
        drifted_columns=[],
        top_features=TOP,
        prediction_drift=False,
        prediction_drift_score=0.01,
        performance=0.30,
        performance_at_promotion=0.31,
        labelled_rows=20_000,
        labelled_positives=250,
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
    assert "0.36 of the feature columns drifted (threshold 0.30)" in decision.reason


def test_one_important_feature_is_enough() -> None:
    decision = decide(evidence(drift_share=0.05, drifted_columns=["amount"]), CONFIG)
    assert fired(decision) == ["top_feature_drift"]
    assert "amount" in decision.reason
    below_top_k = decide(evidence(drift_share=0.05, drifted_columns=["country"]), CONFIG)
    assert not below_top_k.fire, "country is the 6th feature, top_k_features is 5"


def test_prediction_drift_fires_and_can_be_switched_off() -> None:
    assert fired(decide(evidence(prediction_drift=True, prediction_drift_score=0.4), CONFIG)) == [
        "prediction_drift"
    ]
    off = load_monitor_config({"prediction_drift": False})
    assert not decide(evidence(prediction_drift=True), off).fire


def test_performance_decay_needs_enough_labels() -> None:
    decayed = decide(evidence(performance=0.20, performance_at_promotion=0.31), CONFIG)
    assert fired(decayed) == ["performance_decay"]
    assert "drop +0.110" in decayed.reason
    few = decide(evidence(performance=0.20, labelled_positives=5), CONFIG)
    assert not few.fire and "not judged" in few.reason
    within_margin = decide(evidence(performance=0.27, performance_at_promotion=0.31), CONFIG)
    assert not within_margin.fire


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
    assert busy.action == "suppressed" and "train_model run is active" in busy.reason
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


def test_quiet_stays_quiet_even_in_dry_run() -> None:
    quiet = decide(evidence(), CONFIG)
    assert (
        guard(quiet, now=NOW, history=[], training_active=True, dry_run=True, config=CONFIG).action == "quiet"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"drift_share": 0.2}, "valid settings are"),
        ({"drift_share_threshold": 1.5}, "drift_share_threshold=1.5"),
    ],
)
def test_bad_overrides_name_the_problem(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        load_monitor_config(overrides)


def test_decision_serialises_with_its_config_version() -> None:
    data = _firing().to_dict()
    assert data["fire"] is True and data["config_version"] == CONFIG.version
    assert {r["rule"] for r in data["rules"]} >= {"drift_share", "performance_decay"}


# --- after a decay: train from the change, then catch up ----------------------------------------------

CHANGE = dict(monitored_days=["2026-11-20"], champion_days=["2026-11-16", "2026-11-17", "2026-11-18",
              "2026-11-19"], full_window_days=4)  # fmt: skip


def test_decay_trains_from_the_decayed_window_not_the_days_before() -> None:
    decision = decide(evidence(performance=0.05, **CHANGE), CONFIG)
    assert fired(decision) == ["performance_decay"]
    assert decision.train_from == "2026-11-20" and decision.to_dict()["train_from"] == "2026-11-20"


def test_drift_without_decay_keeps_the_usual_window() -> None:
    decision = decide(evidence(drift_share=0.6, drifted_columns=["amount"], **CHANGE), CONFIG)
    assert decision.fire and decision.train_from is None


def test_decay_window_can_be_switched_off() -> None:
    decision = decide(evidence(performance=0.05, **CHANGE), load_monitor_config({"window_from_decay": False}))
    assert decision.fire and decision.train_from is None
    assert "window_catch_up" not in {r.rule for r in decision.rules}


def test_short_window_after_a_change_catches_up_on_each_new_day() -> None:
    cut = dict(champion_days=["2026-11-20"], champion_train_from="2026-11-20", full_window_days=4)
    next_day = decide(evidence(monitored_days=["2026-11-21"], **cut), CONFIG)
    assert fired(next_day) == ["window_catch_up"] and next_day.train_from == "2026-11-20"
    assert "1 day(s) since the change on 2026-11-20" in next_day.reason
    # A decay while catching up is the short window's, not a new change: the change's day stays.
    decayed = decide(evidence(performance=0.05, monitored_days=["2026-11-21"], **cut), CONFIG)
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
        evidence(performance=0.05, monitored_days=["2026-11-21"], change_seen_from="2026-11-20"), CONFIG
    )
    assert next_day.train_from == "2026-11-20"


def test_reasons_name_where_the_scores_came_from() -> None:
    reason = decide(evidence(prediction_source="served", scores_source="batch"), CONFIG).reason
    assert "the champion's scores (served answers) stayed" in reason
    assert "labelled rows (batch re-scored)" in reason
