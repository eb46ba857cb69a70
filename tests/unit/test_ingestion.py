"""Landing: content-addressed, immutable raw batches from the generator or a files source."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from mlloop.data.generator import main as generator_cli
from mlloop.ingestion.batches import batch_id_of, land_batch
from mlloop.storage import Storage, StorageError
from mlloop.usecase import SourceSpec, load_use_case

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
    delivered_labels = (inbox / "labels/date=2026-11-20/part-0.parquet").read_bytes()
    assert (
        storage.read_bytes(f"labels/transactions/date=2026-11-20/{landed.batch_id}.parquet")
        == delivered_labels
    )
    with pytest.raises(StorageError, match=r"expected exactly one \.parquet file"):
        land_batch(storage, use_case, date(2026, 11, 21))


def test_files_source_needs_a_uri() -> None:
    with pytest.raises(ValueError, match=r"source\.uri"):
        SourceSpec(kind="files")
