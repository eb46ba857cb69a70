"""The demo's monitoring story holds on any calendar date, not only on the one the e2e test pins.

``make demo`` counts its days back from today, and the generator draws every day anew from its date, so
each calendar day shows different data. For 30 anchor dates spread over more than a year, the functions
``monitor_drift`` runs (``check_evidence``, ``decide``, ``guard``) replay the demo offline
(``mlloop.monitoring.replay``: its week of history, its days with the two quarantined faults, the
champion trained on its window): the two clean monitored days must stay quiet and the covariate-drift day
must fire. The anchors are fixed dates, so the test gives the same result whatever day it runs.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ProcessPoolExecutor
from datetime import date

import pytest

from mlloop.monitoring.replay import ReplayCheck, anchors, replay_demo
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

pytestmark = pytest.mark.slow
ANCHORS = anchors(date(2025, 1, 6), 30, 17)  # a demo spans 16 days: no two anchors share a day


def _replay(anchor: date) -> list[ReplayCheck]:
    """Replay the demo for one anchor in a fresh data root, as a fresh ``make demo`` would."""
    with tempfile.TemporaryDirectory(prefix="mlloop-replay-") as root:
        return replay_demo(Storage(root), load_use_case("card_fraud"), anchor)


@pytest.mark.timeout(2400)
def test_clean_days_stay_quiet_and_the_drift_day_fires_on_30_dates() -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        outcomes = dict(zip(ANCHORS, pool.map(_replay, ANCHORS), strict=True))
    table = "\n".join(
        f"{anchor}: " + "; ".join(f"{c.day} {c.scenario} {c.action} {c.fired_rules or ''}" for c in checks)
        for anchor, checks in outcomes.items()
    )
    assert all(
        [c.scenario for c in checks] == ["none", "none", "covariate_amount"] for checks in outcomes.values()
    )
    wrong = {
        anchor: [c.reason[:400] for c in checks if (c.action == "quiet") != (c.scenario == "none")]
        for anchor, checks in outcomes.items()
    }
    wrong = {anchor: reasons for anchor, reasons in wrong.items() if reasons}
    assert not wrong, f"{len(wrong)} of {len(ANCHORS)} anchor dates broke the story:\n{table}\n\n{wrong}"
