"""The demo's monitoring story holds on any calendar date, not only on the one the e2e test pins.

``make demo`` counts its days back from today, and the generator draws every day anew from its date, so
each calendar day shows different data. For 30 anchor dates spread over more than a year, the functions
``monitor_<use case>`` runs (``check_evidence``, ``decide``, ``guard``) replay the demo offline
(``mlloop.monitoring.replay``: its week of history, its days with the two quarantined faults, the
champion trained on its window): the covariate-drift day must fire on every date, and the two clean
days may fire no more often than the policy's false-alarm rates allow. The anchors are fixed dates, so the
test gives the same result whatever day it runs (the e2e test pins its own date, 2026-04-15).
"""

from __future__ import annotations

import math
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from datetime import date

import pytest
from scipy.stats import binom

from mlloop.monitoring.decision import load_monitor_config
from mlloop.monitoring.replay import ReplayCheck, anchors, replay_demo
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

pytestmark = pytest.mark.slow
ANCHORS = anchors(date(2025, 1, 6), 30, 17)  # a demo spans 16 days: no two anchors share a day


def _replay(anchor: date) -> list[ReplayCheck]:
    """Replay the demo for one anchor in a fresh data root, as a fresh ``make demo`` would."""
    with tempfile.TemporaryDirectory(prefix="mlloop-replay-") as root:
        return replay_demo(Storage(root), load_use_case("card_fraud"), anchor)


def _false_alarm_bound() -> float:
    """Return the chance a clean day fires some retraining rule, at most, under the card_fraud policy.

    Each calibrated drift rule fires on a window without change with probability at most
    (splits + 1 - rank) / (splits + 1) (``calibrate_drift``), decay at ``false_alarm_rate``; the union
    bound adds them up.
    """
    config = load_monitor_config(use_case=load_use_case("card_fraud"))
    splits = config.drift_calibration_splits
    rank = math.ceil((1 - config.drift_false_alarm_rate) * (splits + 1) - 1e-9)
    drift_rules = 1 + bool(config.top_k_features) + config.prediction_drift
    return min(1.0, drift_rules * (splits + 1 - rank) / (splits + 1) + config.false_alarm_rate)


@pytest.mark.timeout(3000)
def test_clean_days_stay_quiet_and_the_drift_day_fires_on_30_dates() -> None:
    # Spawned, not forked: earlier tests in this process leave threads behind (servers, log flushers), and a
    # child forked while one of them held a lock waits on it forever (seen: both workers idle on a futex).
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcomes = dict(zip(ANCHORS, pool.map(_replay, ANCHORS), strict=True))
    table = "\n".join(
        f"{anchor}: " + "; ".join(f"{c.day} {c.scenario} {c.action} {c.fired_rules or ''}" for c in checks)
        for anchor, checks in outcomes.items()
    )
    assert all(
        [c.scenario for c in checks] == ["none", "none", "covariate_amount"] for checks in outcomes.values()
    )
    checks = [c for day_checks in outcomes.values() for c in day_checks]
    missed = [c.reason[:400] for c in checks if c.scenario != "none" and not c.fired_rules]
    assert not missed, f"the drift day did not fire on {len(missed)} of {len(ANCHORS)} dates:\n{table}"
    # A clean day fires by chance at the policy's false-alarm rates, so "quiet on any date" is a rate: no
    # more clean-day alarms than a monitor at the policy's bound gives in 99 runs of 100.
    clean = [c for c in checks if c.scenario == "none"]
    alarms = [f"{c.day}: {c.reason[:300]}" for c in clean if c.fired_rules]
    bound = _false_alarm_bound()
    allowed = int(binom.ppf(0.99, len(clean), bound))
    assert len(alarms) <= allowed, (
        f"{len(alarms)} of {len(clean)} clean days fired; the policy allows at most {allowed} "
        f"(false-alarm rate <= {bound:.3f} a day):\n{table}\n" + "\n".join(alarms)
    )
    print(f"clean-day false alarms: {len(alarms)}/{len(clean)}; the drift day fired on all {len(ANCHORS)}")
