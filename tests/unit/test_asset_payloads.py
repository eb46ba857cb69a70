"""Asset payloads: what each event carries, and what an Asset-started train_<use case> run does with them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from mlloop.orchestration.payloads import ChampionMoved, RetrainRequest, TrainingTrigger, ValidatedBatch


def _declined(batches: list[dict[str, object]]) -> str | None:
    return TrainingTrigger.from_extras([], batches).declined()


def test_batches_that_decline_training_make_the_run_skip_naming_their_days() -> None:
    reason = _declined(
        [{"day": "2026-03-03", "start_training": False}, {"day": "2026-03-02", "start_training": False}]
    )
    assert reason is not None
    assert "2026-03-02, 2026-03-03" in reason
    assert "start_training off" in reason


def test_one_batch_asking_for_training_is_enough() -> None:
    assert _declined([{"day": "d1", "start_training": False}, {"day": "d2", "start_training": True}]) is None


def test_batches_from_before_the_param_existed_still_train() -> None:
    assert _declined([{"day": "d1", "batch_id": "abc"}]) is None


def test_no_batch_means_something_else_started_the_run() -> None:
    assert _declined([]) is None


def test_the_newest_retrain_request_wins() -> None:
    requests = [
        {"requested_at": "2026-03-02T06:00:00+00:00", "end_day": "2026-03-01"},
        {"requested_at": "2026-03-03T06:00:00+00:00", "end_day": "2026-03-02"},
    ]
    request = TrainingTrigger.from_extras(requests, []).request
    assert request is not None and request.end_day == "2026-03-02"
    assert TrainingTrigger.from_extras([], []).request is None


def test_only_an_asset_started_run_without_a_retrain_request_skips_on_declined_batches() -> None:
    declined = [{"day": "d1", "start_training": False}]
    request = {"requested_at": "2026-03-03T06:00:00+00:00", "end_day": "d1", "reason": "drift"}
    assert TrainingTrigger.from_extras([], declined).skip_reason(asset_triggered=True)
    assert TrainingTrigger.from_extras([], declined).skip_reason(asset_triggered=False) is None
    assert TrainingTrigger.from_extras([request], declined).skip_reason(asset_triggered=True) is None


def test_each_payload_reads_back_what_it_wrote() -> None:
    batch = ValidatedBatch("2026-03-02", "abc", "file:///v/abc.parquet", 300, "file:///r.json", False)
    assert ValidatedBatch.from_extra(batch.to_extra()) == batch
    promoted = ChampionMoved("fraud-detector", "3", "2", gate_report="runs:/r/gate/gate_report.md")
    assert ChampionMoved.from_extra(promoted.to_extra()) == promoted
    rolled_back = ChampionMoved("fraud-detector", "2", "3", rollback=True)
    assert ChampionMoved.from_extra(rolled_back.to_extra()) == rolled_back
    summary = {"reason": "drift", "window": "2026-03-02..2026-03-02", "end_day": "2026-03-02", "record": "k"}
    request = RetrainRequest.from_summary(
        summary, datetime(2026, 3, 3, 7, tzinfo=timezone(timedelta(hours=1)))
    )
    assert request.requested_at == datetime(2026, 3, 3, 6, tzinfo=UTC).isoformat()
    assert RetrainRequest.from_extra(request.to_extra()) == request


def test_champion_payloads_keep_the_keys_of_their_emitter() -> None:
    record = {"model": "m", "to_version": "2", "from_version": "1"}
    assert ChampionMoved.from_record(record, gate_report="g").to_extra() == {
        "model": "m",
        "version": "2",
        "previous": "1",
        "gate_report": "g",
    }
    assert ChampionMoved.from_record(record, rollback=True).to_extra() == {
        "model": "m",
        "version": "2",
        "previous": "1",
        "rollback": True,
    }
