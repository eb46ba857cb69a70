"""The flights use cases' real public data: its export, its contract, and the inbox it is read from."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from mlloop.data.flights import DELIVERY_COLUMNS, FlightsDataError, day_frames, export_days
from mlloop.features.build import build_use_case_features
from mlloop.ingestion.batches import open_inbox, source_day
from mlloop.ops.real_data_demo import FIRST_REAL_DAY, flight_days
from mlloop.storage import Storage
from mlloop.usecase import load_use_case
from mlloop.validation import validate_frame

USE_CASE = load_use_case("flight_delay")
DAY = dt.date(2013, 6, 3)


def test_a_day_is_delivered_as_declared_with_labels_known_after_departure() -> None:
    delivery, labels = day_frames(DAY)
    assert list(delivery.columns) == list(DELIVERY_COLUMNS) == list(USE_CASE.schema_)
    assert len(delivery) == 988 and delivery["flight_id"].is_unique
    assert (delivery["event_time"].dt.date == DAY).all()
    assert labels["flight_id"].tolist() == delivery["flight_id"].tolist()
    assert set(labels["delayed"].unique()) == {0, 1}
    assert (labels["label_time"] > delivery["event_time"]).all()
    # Real data keeps its gaps: NOAA's missing pressure readings and the aircraft the schedule leaves open.
    assert delivery["pressure"].isna().any() and delivery["tailnum"].isna().any()


def test_arrival_delay_labels_are_the_minutes_of_the_flights_that_arrived() -> None:
    arrival_delay = load_use_case("arrival_delay")
    assert arrival_delay.task == "regression" and arrival_delay.schema_ == USE_CASE.schema_
    delivery, minutes = day_frames(DAY, target="arr_delay")
    _, delayed = day_frames(DAY)
    assert delivery.equals(day_frames(DAY)[0])  # the same deliveries, another label feed
    assert list(minutes.columns) == ["flight_id", "arr_delay", "label_time"]
    # A cancelled or diverted flight never arrives: its minutes are never delivered (it stays unlabelled).
    never_arrived = set(delayed["flight_id"]) - set(minutes["flight_id"])
    assert 0 < len(never_arrived) < 0.1 * len(delivery) and minutes["arr_delay"].notna().all()
    assert (minutes["arr_delay"] < 0).any() and (minutes["arr_delay"] > 15).any()
    late = delayed.set_index("flight_id")["delayed"]
    assert (late[list(never_arrived)] == 1).all()
    assert ((minutes["arr_delay"] > 15) == late[minutes["flight_id"]].eq(1).to_numpy()).all()
    with pytest.raises(FlightsDataError, match=r"no target 'dep_delay'.*delayed or arr_delay"):
        day_frames(DAY, target="dep_delay")


def test_redating_moves_every_timestamp_and_id_by_the_same_days() -> None:
    delivery, labels = day_frames(DAY)
    moved, moved_labels = day_frames(DAY, shift_days=4928)
    assert (moved["event_time"] - delivery["event_time"] == pd.Timedelta(days=4928)).all()
    assert (moved_labels["label_time"] - labels["label_time"] == pd.Timedelta(days=4928)).all()
    moved_day = (DAY + dt.timedelta(days=4928)).strftime(
        "%Y%m%d"
    )  # local days: the evening is the day before
    assert moved["flight_id"].str.startswith(moved_day).sum() > 800 and moved["flight_id"].is_unique
    assert moved.drop(columns=["flight_id", "event_time"]).equals(
        delivery.drop(columns=["flight_id", "event_time"])
    )


def test_a_day_outside_the_table_is_refused_with_its_span() -> None:
    with pytest.raises(
        FlightsDataError, match=r"2014-01-01 is outside the flights table \(2013-01-01..2013-12-31\)"
    ):
        day_frames(dt.date(2014, 1, 1))


def test_the_contract_holds_on_real_days_and_rejects_a_corrupted_copy() -> None:
    delivery, _ = day_frames(DAY)
    assert validate_frame(delivery, "flights_raw").success
    features = build_use_case_features(delivery, USE_CASE)
    assert validate_frame(features, "flights_features").success

    bad = delivery.copy()
    bad.loc[0, "origin"] = "BOS"
    bad.loc[1, "distance"] = -5.0
    bad.loc[2:, "temp"] = float("nan")  # the weather feed lost
    failed = {(f.expectation, f.column) for f in validate_frame(bad, "flights_raw").failures}
    assert failed == {
        ("expect_column_values_to_be_in_set", "origin"),
        ("expect_column_values_to_be_between", "distance"),
        ("expect_column_values_to_not_be_null", "temp"),
    }


def test_the_export_fills_a_relative_inbox_under_the_data_root_once(tmp_path: Path, mlloop_env) -> None:
    mlloop_env(data_root=tmp_path / "data")
    days = flight_days(USE_CASE, today=dt.date(2026, 4, 15))
    # The declared four-week window, then three monitored days up to yesterday.
    assert (days.train[0], days.train[-1]) == ("2026-03-15", "2026-04-11") and len(days.train) == 28
    assert days.monitored == ("2026-04-12", "2026-04-13", "2026-04-14")
    assert days.real_days[0] == FIRST_REAL_DAY and len(days.real_days) == 31

    inbox = open_inbox(USE_CASE)
    assert inbox.root == str(tmp_path / "data" / "inbox" / "flight_delay")
    export_days(inbox, "", days.real_days[:2], days.shift_days)
    written = sorted(p.relative_to(inbox.root) for p in Path(inbox.root).rglob("*.parquet"))
    # Labels are filed by the day they became known: an evening's flights arrive after midnight UTC.
    assert [str(p) for p in written] == [
        "flights/date=2026-03-15/part-0.parquet",
        "flights/date=2026-03-16/part-0.parquet",
        "labels/flights/date=2026-03-15/flights-2026-03-15.parquet",
        "labels/flights/date=2026-03-16/flights-2026-03-15.parquet",
        "labels/flights/date=2026-03-16/flights-2026-03-16.parquet",
        "labels/flights/date=2026-03-17/flights-2026-03-16.parquet",
    ]
    stamps = [p.stat().st_mtime_ns for p in Path(inbox.root).rglob("*.parquet")]
    export_days(inbox, "", days.real_days[:2], days.shift_days)
    assert [p.stat().st_mtime_ns for p in Path(inbox.root).rglob("*.parquet")] == stamps

    served = source_day(USE_CASE, dt.date(2026, 3, 15))
    assert len(served) == 988 and served["event_time"].dt.date.eq(dt.date(2026, 3, 15)).all()
    assert Storage(inbox.root).exists("labels/flights/date=2026-03-15/flights-2026-03-15.parquet")


def test_a_later_demo_keeps_the_first_demos_calendar(tmp_path: Path, mlloop_env) -> None:
    from mlloop.ops.real_data_demo import ReplayEndedError, replay_days

    mlloop_env(data_root=tmp_path / "data")
    first = replay_days(USE_CASE, dt.date(2026, 4, 15))
    # Two days later: the window keeps its days (and so its data); the monitored days move on with 2013.
    later = replay_days(USE_CASE, dt.date(2026, 4, 17))
    assert later.shift_days == first.shift_days and later.train == first.train
    assert later.monitored == ("2026-04-14", "2026-04-15", "2026-04-16")
    assert later.real_days[-1] == dt.date(2013, 7, 5) and len(later.real_days) == 31
    # A fresh calendar would have re-dated other flights onto days already published.
    assert flight_days(USE_CASE, dt.date(2026, 4, 17)).shift_days == first.shift_days + 2
    with pytest.raises(ReplayEndedError, match=r"reached the table's last day .*make clean"):
        replay_days(USE_CASE, dt.date(2026, 12, 1))
    with pytest.raises(ReplayEndedError, match=r"too late for today \(2026-04-10\).*make clean"):
        replay_days(USE_CASE, dt.date(2026, 4, 10))
