"""Landing: content-addressed, immutable raw batches from the generator or a files source."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from mlloop.data.generator import main as generator_cli
from mlloop.ingestion.batches import batch_id_of, land_batch
from mlloop.storage import Storage, StorageError
from mlloop.usecase import USECASE_DIR, SourceSpec, load_use_case

DAY = date(2026, 11, 20)


def test_generator_batch_lands_once(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    use_case = load_use_case("card_fraud")
    first = land_batch(storage, use_case, DAY, rows=500)
    second = land_batch(storage, use_case, DAY, rows=500)
    assert first.newly_landed and not second.newly_landed
    assert first.raw_uri == second.raw_uri
    assert first.raw_uri.endswith(f"raw/transactions/date=2026-11-20/{first.batch_id}.parquet")
    assert batch_id_of(storage.read_bytes(first.raw_uri)) == first.batch_id
    labels = storage.read_frame(f"labels/transactions/date=2026-11-20/{first.batch_id}.parquet")
    assert len(labels) == 500 and {"transaction_id", "is_fraud", "label_time"} <= set(labels.columns)
    other = land_batch(storage, use_case, DAY, rows=500, scenario="fault_nulls")
    assert other.batch_id != first.batch_id
    assert len(storage.list("raw/transactions/date=2026-11-20")) == 2


def test_files_source_lands_the_delivered_file(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    assert generator_cli(["--start", "2026-11-20", "--days", "1", "--rows", "300", "--out", str(inbox)]) == 0
    use_case = load_use_case("card_fraud").model_copy(
        update={"source": SourceSpec(kind="files", uri=str(inbox))}
    )
    storage = Storage(str(tmp_path / "root"))
    landed = land_batch(storage, use_case, DAY)
    delivered = (inbox / "transactions/date=2026-11-20/part-0.parquet").read_bytes()
    assert storage.read_bytes(landed.raw_uri) == delivered
    # A files source's labels are a feed of their own (tests/unit/test_label_feed.py), not copied here.
    assert not storage.list("labels")
    with pytest.raises(
        StorageError, match=r"no \.parquet delivery for 2026-11-21 under .*/transactions/date=2026-11-21"
    ):
        land_batch(storage, use_case, date(2026, 11, 21))


def test_a_day_of_several_files_is_validated_and_published_as_one_batch(tmp_path: Path) -> None:
    from mlloop.data.generator import generate_day
    from mlloop.ingestion.batches import day_batch_id, publish_validated, validate_landed_batch

    generated = generate_day(DAY, rows=400, seed=5).transactions
    folder = tmp_path / "inbox" / "transactions" / "date=2026-11-20"
    folder.mkdir(parents=True)
    generated.iloc[:250].to_parquet(folder / "part-0.parquet", index=False)
    generated.iloc[250:].to_parquet(folder / "part-1.parquet", index=False)
    use_case = load_use_case("card_fraud").model_copy(
        update={"source": SourceSpec(kind="files", uri=str(tmp_path / "inbox"))}
    )
    storage = Storage(str(tmp_path / "root"))

    landed = land_batch(storage, use_case, DAY)
    ids = [batch_id_of((folder / f"part-{k}.parquet").read_bytes()) for k in (0, 1)]
    assert len(landed.raw_uris) == 2 and landed.batch_id == day_batch_id(ids) not in ids
    assert sorted(storage.list("raw/transactions/date=2026-11-20")) == sorted(
        f"raw/transactions/date=2026-11-20/{i}.parquet" for i in ids
    )
    assert validate_landed_batch(storage, use_case, landed)["rows"] == 400
    published = publish_validated(storage, use_case, landed, b"k" * 32)
    assert published["rows"] == 400
    assert storage.list("validated/transactions/date=2026-11-20") == [
        f"validated/transactions/date=2026-11-20/{landed.batch_id}.parquet"
    ]

    # A third file delivered later is a new delivery of the day: it replaces the published one.
    generated.iloc[:10].assign(transaction_id=lambda f: f["transaction_id"] + "-late").to_parquet(
        folder / "part-2.parquet", index=False
    )
    again = land_batch(storage, use_case, DAY)
    assert len(again.raw_uris) == 3 and again.batch_id != landed.batch_id
    validate_landed_batch(storage, use_case, again)
    assert publish_validated(storage, use_case, again, b"k" * 32)["rows"] == 410
    assert storage.list("validated/transactions/date=2026-11-20") == [
        f"validated/transactions/date=2026-11-20/{again.batch_id}.parquet"
    ]
    assert len(storage.list("raw/transactions/date=2026-11-20")) == 3  # raw keeps every file


def test_a_key_repeated_across_a_days_files_fails_the_day_and_quarantines_every_file(tmp_path: Path) -> None:
    from mlloop.data.generator import generate_day
    from mlloop.ingestion.batches import BatchRejectedError, validate_landed_batch

    generated = generate_day(DAY, rows=300, seed=5).transactions
    folder = tmp_path / "inbox" / "transactions" / "date=2026-11-20"
    folder.mkdir(parents=True)
    generated.iloc[:200].to_parquet(folder / "a.parquet", index=False)
    generated.iloc[150:].to_parquet(folder / "b.parquet", index=False)  # rows 150..199 in both files
    use_case = load_use_case("card_fraud").model_copy(
        update={"source": SourceSpec(kind="files", uri=str(tmp_path / "inbox"))}
    )
    storage = Storage(str(tmp_path / "root"))
    landed = land_batch(storage, use_case, DAY)
    with pytest.raises(BatchRejectedError, match=r"transaction_id"):
        validate_landed_batch(storage, use_case, landed)
    quarantined = storage.list(f"quarantine/transactions/date=2026-11-20/{landed.batch_id}/files")
    assert len(quarantined) == 2
    assert not storage.list("validated")


def test_a_ready_marker_holds_a_multi_file_day_until_it_is_there(tmp_path: Path) -> None:
    from mlloop.data.generator import generate_day
    from mlloop.ingestion.batches import delivery_keys

    folder = tmp_path / "inbox" / "transactions" / "date=2026-11-20"
    folder.mkdir(parents=True)
    generate_day(DAY, rows=50, seed=5).transactions.to_parquet(folder / "part-0.parquet", index=False)
    source = SourceSpec(kind="files", uri=str(tmp_path / "inbox"), ready_marker="_SUCCESS")
    use_case = load_use_case("card_fraud").model_copy(update={"source": source})
    with pytest.raises(StorageError, match=r"no \.parquet delivery with its _SUCCESS marker for 2026-11-20"):
        land_batch(Storage(str(tmp_path / "root")), use_case, DAY)
    (folder / "_SUCCESS").write_bytes(b"")
    assert [k.rsplit("/", 1)[-1] for k in delivery_keys(use_case, DAY)[1]] == ["part-0.parquet"]


def _csv_use_case(inbox: Path, **csv: str):
    """card_fraud fed by CSV files (the card_fraud raw suite judges them)."""
    source = SourceSpec(kind="files", uri=str(inbox), format="csv", csv=csv)
    return load_use_case("card_fraud").model_copy(update={"source": source})


def test_a_csv_delivery_with_a_bom_and_local_times_lands_as_delivered_and_validates(tmp_path: Path) -> None:
    from mlloop.data.generator import generate_day
    from mlloop.ingestion.batches import read_delivery, validate_landed_batch

    generated = generate_day(DAY, rows=300, seed=3).transactions
    local = generated.assign(
        event_time=generated["event_time"].dt.tz_convert("Europe/Zurich").dt.strftime("%Y-%m-%d %H:%M:%S.%f")
    )
    text = local.to_csv(index=False, sep=";", decimal=",")
    folder = tmp_path / "inbox" / "transactions" / "date=2026-11-20"
    folder.mkdir(parents=True)
    (folder / "delivery.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    use_case = _csv_use_case(tmp_path / "inbox", delimiter=";", decimal=",", timezone="Europe/Zurich")
    storage = Storage(str(tmp_path / "root"))

    landed = land_batch(storage, use_case, DAY)
    assert landed.raw_uri.endswith(".csv") and storage.read_bytes(landed.raw_uri).startswith(b"\xef\xbb\xbf")
    frame = read_delivery(storage.read_bytes(landed.raw_uri), use_case)
    assert list(frame.columns) == list(generated.columns)  # the BOM is not part of the first name
    assert (frame["event_time"] == generated["event_time"]).all()  # local wall times back to the instant
    assert frame["amount"].tolist() == pytest.approx(generated["amount"].tolist())
    assert frame["customer_age"].dtype == "int64"
    assert validate_landed_batch(storage, use_case, landed)["rows"] == 300


def test_a_csv_column_that_does_not_read_as_declared_is_rejected_by_the_contract(tmp_path: Path) -> None:
    from mlloop.data.generator import generate_day
    from mlloop.ingestion.batches import BatchRejectedError, validate_landed_batch

    generated = generate_day(DAY, rows=200, seed=3).transactions
    text = generated.assign(amount=generated["amount"].astype(str).where(generated.index != 7, "12 EUR"))
    folder = tmp_path / "inbox" / "transactions" / "date=2026-11-20"
    folder.mkdir(parents=True)
    (folder / "delivery.csv").write_text(text.to_csv(index=False))
    use_case = _csv_use_case(tmp_path / "inbox")
    storage = Storage(str(tmp_path / "root"))
    landed = land_batch(storage, use_case, DAY)
    with pytest.raises(BatchRejectedError, match=r"expect_column_values_to_be_in_type_list\(amount\)"):
        validate_landed_batch(storage, use_case, landed)
    assert storage.exists(f"quarantine/transactions/date=2026-11-20/{landed.batch_id}/batch.csv")


def test_csv_options_are_checked_when_the_declaration_loads() -> None:
    with pytest.raises(ValueError, match="unknown encoding 'utf-9'"):
        SourceSpec(kind="files", uri="inbox", format="csv", csv={"encoding": "utf-9"})
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        SourceSpec(kind="files", uri="inbox", format="csv", csv={"timezone": "Mars/Olympus"})


def test_files_source_needs_a_uri() -> None:
    with pytest.raises(ValueError, match=r"source\.uri"):
        SourceSpec(kind="files")
    with pytest.raises(ValueError, match="the generator delivers Parquet"):
        SourceSpec(kind="generator", format="csv")


def test_a_late_delivery_is_waited_for_then_refused_naming_the_folder(tmp_path: Path, mlloop_env) -> None:
    from datetime import UTC, datetime

    from mlloop.ingestion.batches import DeliveryMissingError
    from mlloop.ingestion.runner import await_delivery

    inbox = tmp_path / "inbox"
    declaration = yaml.safe_load((USECASE_DIR / "card_fraud.yaml").read_text())
    declaration["source"] = {"kind": "files", "uri": str(inbox), "wait_hours": 6}
    folder = tmp_path / "usecases"
    folder.mkdir()
    (folder / "card_fraud.yaml").write_text(yaml.safe_dump(declaration))
    mlloop_env(usecases_dir=folder)
    due = datetime(2026, 11, 21, tzinfo=UTC)  # 2026-11-20's file is due when the day ends
    wait = {
        "param_day": "2026-11-20",
        "data_interval_start": None,
        "run_after": due,
        "use_case": "card_fraud",
    }

    assert await_delivery(**wait, now=due.replace(hour=5)) is False  # late, but within the declared 6 hours
    refused = r"no \.parquet delivery for 2026-11-20 under .*inbox/transactions/date=2026-11-20 after waiting"
    with pytest.raises(
        DeliveryMissingError, match=refused + r" until 2026-11-21 06:00 UTC \(source\.wait_hours 6\)"
    ):
        await_delivery(**wait, now=due.replace(hour=6))
    assert generator_cli(["--start", "2026-11-20", "--days", "1", "--rows", "100", "--out", str(inbox)]) == 0
    assert await_delivery(**wait, now=due.replace(hour=7)) is True
    # A manual run long after: an older day without its file is refused at once, not after another wait.
    late = {**wait, "param_day": "2026-11-19", "run_after": datetime(2026, 11, 30, tzinfo=UTC)}
    with pytest.raises(DeliveryMissingError, match=r"2026-11-19 .* until 2026-11-20 06:00 UTC"):
        await_delivery(**late, now=datetime(2026, 11, 30, tzinfo=UTC))
