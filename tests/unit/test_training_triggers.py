"""What an Asset-started train_model run does with the events that started it."""

from __future__ import annotations

from mlloop.training.pipeline import retrain_trigger, training_declined


def test_batches_that_decline_training_make_the_run_skip_naming_their_days() -> None:
    reason = training_declined(
        [{"day": "2026-03-03", "start_training": False}, {"day": "2026-03-02", "start_training": False}]
    )
    assert reason is not None
    assert "2026-03-02, 2026-03-03" in reason
    assert "start_training off" in reason


def test_one_batch_asking_for_training_is_enough() -> None:
    assert (
        training_declined([{"day": "d1", "start_training": False}, {"day": "d2", "start_training": True}])
        is None
    )


def test_batches_from_before_the_param_existed_still_train() -> None:
    assert training_declined([{"day": "d1", "batch_id": "abc"}]) is None


def test_no_batch_means_something_else_started_the_run() -> None:
    assert training_declined([]) is None


def test_the_newest_retrain_request_wins() -> None:
    requests = [
        {"requested_at": "2026-03-02T06:00:00+00:00", "end_day": "2026-03-01"},
        {"requested_at": "2026-03-03T06:00:00+00:00", "end_day": "2026-03-02"},
    ]
    assert retrain_trigger(requests)["end_day"] == "2026-03-02"
    assert retrain_trigger([]) == {}


# --- a decay-triggered retrain's window starts at the change ------------------------------------------


def test_train_from_cuts_the_window_at_the_change(data_root, monkeypatch) -> None:
    from datetime import UTC, date, datetime, timedelta

    import pytest

    from mlloop.ingestion.batches import land_batch, publish_validated
    from mlloop.storage import Storage
    from mlloop.training.pipeline import NothingToTrain, assemble_snapshot
    from mlloop.usecase import load_use_case

    use_case, storage = load_use_case("card_fraud"), Storage(str(data_root))
    # 300-row days: this test is about where the window is cut, not about how many labels it needs.
    monkeypatch.setattr("mlloop.training.pipeline.labels_shortfall", lambda labels, use_case: None)
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(4)]
    for day in days:
        publish_validated(storage, use_case, land_batch(storage, use_case, day, rows=300), b"k" * 32)
    as_of = datetime(2026, 3, 20, tzinfo=UTC)

    usual = assemble_snapshot(4, "2026-03-04", as_of)
    assert usual["days"] == [d.isoformat() for d in days]
    cut = assemble_snapshot(4, "2026-03-04", as_of, train_from="2026-03-03")
    assert cut["days"] == ["2026-03-03", "2026-03-04"] and cut["digest"] != usual["digest"]
    one = assemble_snapshot(4, "2026-03-03", as_of, train_from="2026-03-03")
    assert one["days"] == ["2026-03-03"]
    # A full window after the change keeps its usual length.
    assert assemble_snapshot(2, "2026-03-04", as_of, train_from="2026-03-01")["days"] == [
        "2026-03-03",
        "2026-03-04",
    ]
    with pytest.raises(ValueError, match=r"needs 1 validated day\(s\) from 2026-03-05 .* found 0"):
        assemble_snapshot(4, "2026-03-04", as_of, train_from="2026-03-05")
    with pytest.raises(NothingToTrain, match="from 2026-03-05"):
        assemble_snapshot(4, "2026-03-04", as_of, train_from="2026-03-05", scheduled=True)
