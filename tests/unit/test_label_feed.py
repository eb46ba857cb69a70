"""A files source's label feed: late deliveries, corrections, the labels contract, quarantine."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlloop.data.generator import generate_day
from mlloop.ingestion.batches import ingest_day
from mlloop.ingestion.labels_feed import land_labels
from mlloop.labels import read_known_labels
from mlloop.storage import Storage
from mlloop.training.windows import snapshot_days
from mlloop.usecase import LabelsSpec, SourceSpec, load_use_case

DAY = date(2026, 11, 20)
ROWS = 200
KEY, TARGET = "transaction_id", "is_fraud"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


@pytest.fixture
def feed(tmp_path: Path):
    """card_fraud fed by files: DAY's transactions published, its labels not delivered yet."""
    inbox = tmp_path / "inbox"
    generated = generate_day(DAY, rows=ROWS, seed=11)
    delivery = inbox / "transactions" / f"date={DAY.isoformat()}" / "part-0.parquet"
    delivery.parent.mkdir(parents=True)
    generated.transactions.to_parquet(delivery, index=False)
    use_case = load_use_case("card_fraud").model_copy(
        update={
            "source": SourceSpec(kind="files", uri=str(inbox)),
            "labels": LabelsSpec(known_at_column="known"),
        }
    )
    storage = Storage(str(tmp_path / "root"))
    ingest_day(storage, use_case, DAY, b"k" * 32)
    truth = generated.labels.rename(columns={"label_time": "known"})
    return use_case, storage, inbox, truth, generated.transactions


def _deliver(inbox: Path, day: date, frame: pd.DataFrame, name: str = "part-0.parquet") -> Path:
    """Drop a label file into the feed's folder of delivery ``day``."""
    path = inbox / "labels" / "transactions" / f"date={day.isoformat()}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".csv"):
        path.write_bytes(b"\xef\xbb\xbf" + frame.to_csv(index=False).encode())
    else:
        frame.to_parquet(path, index=False)
    return path


def _known_at(frame: pd.DataFrame, day: date, hour: int = 6) -> pd.DataFrame:
    """Return ``frame`` with every label known at ``hour`` of delivery ``day``."""
    return frame.assign(known=pd.Timestamp(_midnight(day)) + pd.Timedelta(hours=hour))


def test_a_late_delivery_is_seen_by_the_next_snapshot_and_monitor_run(feed) -> None:
    use_case, storage, inbox, truth, _ = feed
    first, late = truth.iloc[:120], truth.iloc[120:]
    _deliver(inbox, DAY + timedelta(days=1), _known_at(first, DAY + timedelta(days=1)))
    # The run of 11-22 looks at the feed (through its own day), then reads the labels known at its cut-off.
    assert land_labels(storage, use_case, DAY + timedelta(days=2)).rows == 120
    before = snapshot_days(storage, use_case, [DAY], as_of=_midnight(DAY + timedelta(days=2)), validate=False)
    assert before.labels.known == 120

    _deliver(inbox, DAY + timedelta(days=5), _known_at(late, DAY + timedelta(days=5)))
    result = land_labels(storage, use_case, DAY + timedelta(days=6))
    assert (result.rows, result.seen) == (80, 1)  # the first file is not landed twice
    after = snapshot_days(storage, use_case, [DAY], as_of=_midnight(DAY + timedelta(days=6)), validate=False)
    assert after.labels.known == ROWS
    monitor = read_known_labels(storage, use_case, [DAY], _midnight(DAY + timedelta(days=6)))
    assert len(monitor) == ROWS
    # The earlier run's answer does not change: same cut-off, same snapshot.
    again = snapshot_days(storage, use_case, [DAY], as_of=_midnight(DAY + timedelta(days=2)), validate=False)
    assert again.digest == before.digest


def test_a_correction_is_applied_the_same_way_by_snapshot_and_monitor(feed) -> None:
    from mlloop.training.snapshot import load_snapshot

    use_case, storage, inbox, truth, _ = feed
    _deliver(inbox, DAY + timedelta(days=1), _known_at(truth, DAY + timedelta(days=1)))
    flipped = truth.iloc[:30].assign(**{TARGET: 1 - truth[TARGET].iloc[:30]})
    _deliver(inbox, DAY + timedelta(days=3), _known_at(flipped, DAY + timedelta(days=3), hour=9))
    land_labels(storage, use_case, DAY + timedelta(days=3))

    as_of = _midnight(DAY + timedelta(days=4))
    manifest = snapshot_days(storage, use_case, [DAY], as_of=as_of, validate=False)
    snapshot, _ = load_snapshot(storage, manifest.digest)
    monitor = read_known_labels(storage, use_case, [DAY], as_of)
    expected = truth.set_index(KEY)[TARGET].copy()
    expected.loc[flipped[KEY]] = flipped.set_index(KEY)[TARGET]
    assert snapshot.set_index(KEY)[TARGET].astype(int).sort_index().equals(expected.sort_index().astype(int))
    assert monitor.set_index(KEY)[TARGET].astype(int).sort_index().equals(expected.sort_index().astype(int))
    # Before the correction's day, both see the first delivery.
    early = read_known_labels(storage, use_case, [DAY], _midnight(DAY + timedelta(days=3)))
    assert early.set_index(KEY)[TARGET].sort_index().equals(truth.set_index(KEY)[TARGET].sort_index())


@pytest.mark.parametrize(
    ("breakage", "expectation"),
    [
        (
            lambda f: f.assign(is_fraud=f["is_fraud"].where(f.index != 3, 2)),
            "expect_column_values_to_be_in_set",
        ),
        (lambda f: f.assign(transaction_id=f["transaction_id"].where(f.index != 4, None)), "to_not_be_null"),
        (lambda f: f.drop(columns=["known"]), "expect_label_columns"),
        (lambda f: f.assign(known=f["known"] + pd.Timedelta(days=2)), "expect_label_known_by_its_delivery"),
        (lambda f: f.assign(known=pd.Timestamp(_midnight(DAY)) - pd.Timedelta(hours=1)), "after_its_event"),
    ],
    ids=["target_not_binary", "null_key", "no_known_at_column", "known_after_delivery", "known_before_event"],
)
def test_a_label_delivery_failing_its_contract_is_quarantined_and_the_rest_land(
    feed, breakage, expectation
) -> None:
    use_case, storage, inbox, truth, _ = feed
    delivered = DAY + timedelta(days=1)
    good = _known_at(truth.iloc[:100], delivered)
    _deliver(inbox, delivered, good, "a.parquet")
    _deliver(
        inbox, delivered, breakage(_known_at(truth.iloc[100:], delivered).reset_index(drop=True)), "b.parquet"
    )

    result = land_labels(storage, use_case, delivered)
    assert result.rows == 100 and len(result.quarantined) == 1
    reason = storage.read_json(result.quarantined[0])
    assert reason["success"] is False and reason["day"] == delivered.isoformat()
    assert any(expectation in f["expectation"] for f in reason["failures"]), reason["failures"]
    assert storage.exists(reason["raw_uri"]) and storage.list(
        f"quarantine/labels/transactions/date={delivered}"
    )
    known = read_known_labels(storage, use_case, [DAY], _midnight(delivered + timedelta(days=1)))
    assert len(known) == 100
    # A rejected file is judged once: the next look passes it by.
    assert land_labels(storage, use_case, delivered).quarantined == []


def test_the_ingest_step_fails_naming_the_quarantined_delivery(feed, mlloop_env) -> None:
    from mlloop.ingestion.labels_feed import LabelsRejectedError
    from mlloop.ingestion.runner import land_label_feed

    use_case, storage, inbox, truth, _ = feed
    folder = Path(storage.root).parent / "usecases"
    folder.mkdir()
    (folder / "card_fraud.yaml").write_text(use_case.model_dump_json(by_alias=True, exclude_defaults=False))
    mlloop_env(usecases_dir=folder, data_root=Path(storage.root))
    delivered = DAY + timedelta(days=1)
    _deliver(inbox, delivered, _known_at(truth, delivered).assign(is_fraud=7))
    with pytest.raises(LabelsRejectedError, match=r"quarantined \(reasons: .*quarantine/labels/transactions"):
        land_label_feed(use_case="card_fraud", now=_midnight(delivered) + timedelta(hours=8))


def test_a_csv_label_delivery_with_a_bom_lands(feed) -> None:
    use_case, storage, inbox, truth, _ = feed
    csv_case = use_case.model_copy(update={"source": use_case.source.model_copy(update={"format": "csv"})})
    delivered = DAY + timedelta(days=1)
    frame = _known_at(truth, delivered).assign(known=lambda f: f["known"].dt.strftime("%Y-%m-%dT%H:%M:%S%z"))
    _deliver(inbox, delivered, frame, "labels.csv")
    result = land_labels(storage, csv_case, delivered)
    assert result.rows == ROWS and not result.quarantined
    landed = storage.read_frame(result.landed[0])
    assert list(landed.columns) == [KEY, TARGET, "label_time"]
    assert str(landed["label_time"].dt.tz) == "UTC"


def test_a_generator_source_has_no_feed(tmp_path: Path) -> None:
    result = land_labels(Storage(str(tmp_path)), load_use_case("card_fraud"), DAY)
    assert (result.landed, result.seen, result.quarantined) == ([], 0, [])


def test_labels_inside_the_delivery_are_taken_out_and_known_after_the_maturity(tmp_path: Path) -> None:
    from mlloop.ingestion.batches import BatchRejectedError

    generated = generate_day(DAY, rows=ROWS, seed=12)
    both = generated.transactions.merge(generated.labels[[KEY, TARGET]], on=KEY)
    inbox = tmp_path / "inbox"
    delivery = inbox / "transactions" / f"date={DAY.isoformat()}" / "part-0.parquet"
    delivery.parent.mkdir(parents=True)
    both.to_parquet(delivery, index=False)
    use_case = load_use_case("card_fraud").model_copy(
        update={
            "source": SourceSpec(kind="files", uri=str(inbox)),
            "labels": LabelsSpec(mode="in_delivery"),
            "label_maturity_days": 2,
        }
    )
    storage = Storage(str(tmp_path / "root"))
    published = ingest_day(storage, use_case, DAY, b"k" * 32)
    assert TARGET not in storage.read_frame(published["validated_uri"]).columns
    assert land_labels(storage, use_case, DAY + timedelta(days=9)).landed == []  # no feed to look at
    # Known two days after each event: none at the start of the next day, all once two days have passed.
    assert read_known_labels(storage, use_case, [DAY], _midnight(DAY + timedelta(days=1))).empty
    known = read_known_labels(storage, use_case, [DAY], _midnight(DAY + timedelta(days=3)))
    assert len(known) == ROWS
    assert known.set_index(KEY)[TARGET].sort_index().equals(both.set_index(KEY)[TARGET].sort_index())

    both.assign(**{TARGET: both[TARGET].where(both.index != 5, 3)}).to_parquet(delivery, index=False)
    with pytest.raises(BatchRejectedError, match=r"expect_column_values_to_be_in_set\(is_fraud\)"):
        ingest_day(storage, use_case, DAY, b"k" * 32)


def test_a_look_reads_only_the_folders_of_the_last_max_delay_days(feed) -> None:
    use_case, storage, inbox, truth, _ = feed
    short = use_case.model_copy(update={"labels": use_case.labels.model_copy(update={"max_delay_days": 5})})
    delivered = DAY + timedelta(days=1)
    _deliver(inbox, delivered, _known_at(truth, delivered))
    assert land_labels(storage, short, delivered + timedelta(days=6)).rows == 0  # its folder is 6 days old
    assert land_labels(storage, short, delivered + timedelta(days=5)).rows == ROWS
