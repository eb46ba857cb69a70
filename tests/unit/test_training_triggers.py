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
