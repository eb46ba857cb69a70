"""Judging served answers: the inference log joined with the labels known by a time, and the timeline."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from mlloop.data.generator import generate_day
from mlloop.ops.simulate import _training_of_day
from mlloop.ops.timeline import timeline
from mlloop.ops.traffic import served_performance
from mlloop.orchestration.names import dag_names
from mlloop.promotion.metrics import pr_auc
from mlloop.storage import Storage, partition_key
from mlloop.usecase import load_use_case

USE_CASE = load_use_case("card_fraud")
DAY = dt.date(2026, 8, 3)


def test_served_answers_are_scored_against_known_labels_once_per_transaction(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    generated = generate_day(DAY, rows=4000, seed=3)
    labels = generated.labels
    rng = np.random.default_rng(0)
    scores = np.clip(labels["is_fraud"].to_numpy() * 0.3 + rng.random(len(labels)) * 0.7, 0, 1)
    served = pd.DataFrame(
        {
            "transaction_id": labels["transaction_id"],
            "event_time": generated.transactions["event_time"],
            "score": scores,
            "flagged": scores >= 0.6,
            "model_version": "1",
            "served_at": pd.Timestamp("2026-08-03T12:00:00Z"),
        }
    )
    # a replay answered the first 100 again, later, with another version and other scores
    replay = served.iloc[:100].assign(
        model_version="2", score=0.0, served_at=pd.Timestamp("2026-08-04T00:00:00Z")
    )
    storage.write_frame(f"{partition_key('inference', 'transactions', DAY)}/a.parquet", served)
    storage.write_frame(f"{partition_key('inference', 'transactions', DAY)}/b.parquet", replay)
    storage.write_frame(f"{partition_key('labels', 'transactions', DAY)}/l.parquet", labels)

    as_of = dt.datetime(2026, 8, 10, tzinfo=dt.UTC)  # a week later: some chargebacks still to come
    row = served_performance(storage, USE_CASE, DAY.isoformat(), as_of)
    known = labels[labels["label_time"] <= pd.Timestamp(as_of)]
    final = np.where(np.arange(len(scores)) < 100, 0.0, scores)
    expected = pr_auc(known["is_fraud"].to_numpy(), final[known.index.to_numpy()])
    assert row["served"] == 4000 and row["labelled"] == len(known) < 4000
    assert row["versions"] == "v1: 3900, v2: 100"
    assert row["pr_auc"] == round(expected, 4)

    empty = served_performance(storage, USE_CASE, "2026-08-05", as_of)
    assert empty["served"] == 0 and empty["pr_auc"] is None


def test_timeline_renders_a_table_and_a_png() -> None:
    rows = [
        {
            "day": "2026-08-03",
            "scenario": "none",
            "versions": "v1: 10",
            "served": 10,
            "pr_auc": 0.3,
            "monitor": "quiet",
        },
        {
            "day": "2026-08-04",
            "scenario": "covariate_amount",
            "served": 10,
            "pr_auc": None,
            "monitor": "trigger",
        },
    ]
    table, png = timeline(rows, "test")
    assert table.splitlines()[0].startswith("| day | scenario")
    assert "| 2026-08-04 | covariate_amount |" in table
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulation_days_place_drifts_and_refuse_bad_ones() -> None:
    import pytest

    from mlloop.ops.simulate import simulation_days

    days = simulation_days(4, 21, ["covariate_amount@2", "concept@4"], today=dt.date(2026, 11, 27))
    assert days == [
        ("2026-11-03", "none"),
        ("2026-11-04", "covariate_amount"),
        ("2026-11-05", "none"),
        ("2026-11-06", "concept"),
    ]
    lasting = simulation_days(4, 21, ["concept@2-3"], today=dt.date(2026, 11, 27))
    assert [scenario for _, scenario in lasting] == ["none", "concept", "concept", "none"]
    for bad in ("covariate_amount@5", "nonsense@1", "concept", "concept@3-2", "concept@2-5", "concept@x-2"):
        with pytest.raises(ValueError, match="scenario"):
            simulation_days(4, 21, [bad])


def test_loop_outcome_reports_detection_recovery_and_false_alarms() -> None:
    from mlloop.ops.timeline import loop_outcome, outcome_lines

    def day(i: int, scenario: str, pr_auc: float, monitor: str = "quiet") -> dict:
        return {"day": f"2026-10-{i:02d}", "scenario": scenario, "pr_auc": pr_auc, "monitor": monitor}

    rows = [
        day(1, "none", 0.40),
        day(2, "none", 0.38, "trigger"),  # a false alarm
        day(3, "concept", 0.05),  # not detected on its first day
        day(4, "concept", 0.04, "trigger"),
        day(5, "concept", 0.30),
        day(6, "concept", 0.375),  # back within 0.02 of 0.39
        day(7, "covariate_amount", 0.36, "trigger"),
        day(8, "covariate_amount", 0.35),
    ]
    outcome = loop_outcome(rows)
    assert outcome["baseline_pr_auc"] == 0.39
    assert outcome["baseline_sd"] == 0.0141  # stdev of 0.40 and 0.38: within the tolerance, no note
    assert outcome["false_alarms"] == ["2026-10-02"]
    concept, covariate = outcome["events"]
    assert concept["days"] == "2026-10-03..2026-10-06"
    assert (concept["detected_after_days"], concept["recovered_after_days"]) == (1, 3)
    assert concept["lowest_pr_auc"] == 0.04
    assert covariate["detected_after_days"] == 0 and covariate["recovered_after_days"] is None
    lines = outcome_lines(outcome)
    assert "retrains fired on clean days: 1 (2026-10-02)" in lines[0]
    assert "detected on day 2 of the drift" in lines[1] and "on day 4 (0.375)" in lines[1]
    assert "not back within 0.02" in lines[2]
    assert "(day-to-day SD 0.0141)" in lines[0] and len(lines) == 3


def test_loop_outcome_says_when_the_tolerance_is_within_day_to_day_noise() -> None:
    from mlloop.ops.timeline import loop_outcome, outcome_lines

    rows = [{"day": f"2026-10-0{i}", "scenario": "none", "pr_auc": p, "monitor": "quiet"}
            for i, p in enumerate((0.35, 0.44, 0.39), start=1)]  # fmt: skip
    outcome = loop_outcome(rows)
    assert outcome["baseline_sd"] == 0.0451
    assert "spread more (SD 0.0451) than the recovery tolerance (0.02)" in outcome_lines(outcome)[1]


def test_simulate_refuses_an_implausible_rows_per_day(capsys) -> None:
    import pytest

    from mlloop.ops.simulate import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--days", "3", "--rows", "10"])
    assert exit_info.value.code == 2
    assert "--rows 10: use 1000..1000000 rows per day" in capsys.readouterr().err


def test_simulate_takes_a_generated_use_case_and_says_why_not_another() -> None:
    from mlloop.ops.simulate import simulation_problem

    assert simulation_problem("card_fraud") is None
    files = simulation_problem("flight_delay")
    assert "reads its days from files (inbox/flight_delay)" in files and "ingest_flight_delay" in files
    unknown = simulation_problem("churn")
    assert "'churn' is not enabled" in unknown and "card_fraud, flight_delay" in unknown


def test_a_simulation_moves_back_past_days_landed_before() -> None:
    from mlloop.ops.simulate import free_end_back

    today = dt.date(2026, 12, 1)
    demo = {(today - dt.timedelta(days=k)).isoformat() for k in range(14, 27)}  # what make demo lands
    # 30 days and a 4-day warm-up ending 21 back would reach into the demo's days 21..26 back.
    end_back = free_end_back(30, 4, demo, today)
    assert end_back == 27
    span = {(today - dt.timedelta(days=end_back + k)).isoformat() for k in range(34)}
    assert not span & demo
    assert free_end_back(30, 4, set(), today) == 21
    # A second simulation moves back past the first one too.
    assert free_end_back(30, 4, demo | span, today) == 27 + 34


class _TrainRuns:
    """The Airflow API as a finished day's training runs show it: their task states and results."""

    def __init__(self, runs: dict[str, tuple[dict[str, str], list[str], str]]) -> None:
        self.runs = runs  # run id -> (task states, snapshot days, version)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return self.runs[run_id][0]

    def task_result(self, dag_id: str, run_id: str, task_id: str, key: str | None = None) -> object:
        states, days, version = self.runs[run_id]
        if task_id == "snapshot":
            return {"days": days} if states["snapshot"] == "success" else None
        return {"to_version": version, "reason": "gate"} if key is None else "waiting for labels"


def test_a_promotion_the_simulation_did_not_cause_is_named_not_counted_as_its_own() -> None:
    """The stack's midnight ingest trains the real today's window: a foreign promotion, not 'on landing'."""
    names = dag_names("card_fraud")
    ran = {"snapshot": "success"}
    api = _TrainRuns(
        {
            "sim-landing": ({"snapshot": "skipped"}, [], ""),
            "sim-retrain": ({**ran, "reject": "success"}, ["2026-10-29", "2026-11-01"], "14"),
            "midnight": ({**ran, "promote": "success"}, ["2026-11-28", "2026-12-01"], "15"),
            "old-reject": ({**ran, "reject": "success"}, ["2026-11-28", "2026-12-01"], "16"),
        }
    )
    runs = [{"dag_run_id": r, "state": "success"} for r in api.runs]
    own, foreign = _training_of_day(api, names, runs, "2026-11-01")
    assert own == ["rejected v14"]
    assert foreign == [
        "train_card_fraud run midnight promoted v15 trained on 2026-11-28..2026-12-01, days this simulation "
        "did not land"
    ]  # a foreign rejection changes nothing served, so it is not named
    assert _training_of_day(api, names, runs[:1], "2026-11-01", keep_skipped=True) == (["skipped"], [])
