"""The bounded-memory snapshot: entity parts give the bytes, digest and manifest of the in-memory path."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlloop.ingestion.batches import ingest_day
from mlloop.labels import read_delivered_labels
from mlloop.storage import Storage
from mlloop.training import FeatureContractError, SnapshotError, create_snapshot, load_snapshot
from mlloop.training import snapshot as snapshot_module
from mlloop.usecase import load_use_case

USE_CASE = load_use_case("card_fraud")
ROWS = 900
FIRST = date(2026, 11, 20)
DAYS = [FIRST + timedelta(days=i) for i in range(3)]  # FIRST is history context for the window
WINDOW = DAYS[1:]
AS_OF = datetime(2026, 11, 26, tzinfo=UTC)  # some labels known, some not: nullable targets with gaps
PII_KEY = b"unit-test-pii-key-0123456789"
CHUNK = 500  # 2,700 rows with context: six entity parts
ROW_GROUP = 256  # several row groups, cut inside key ranges and across them


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage root with DAYS ingested as the ingest DAG does (landed, GX raw suite, PII tokenised)."""
    path = tmp_path_factory.mktemp("streamed-root")
    for day in DAYS:
        ingest_day(Storage(str(path)), USE_CASE, day, PII_KEY, rows=ROWS)
    return path


@pytest.fixture(scope="module")
def labels(root: Path) -> pd.DataFrame:
    """Every label delivered for DAYS (known or not by AS_OF)."""
    delivered = read_delivered_labels(Storage(str(root)), USE_CASE, DAYS, AS_OF)
    assert delivered is not None
    return delivered


@pytest.fixture
def small_row_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paths cut row groups every ROW_GROUP rows, so a small window spans several."""
    monkeypatch.setattr(snapshot_module, "ROW_GROUP_ROWS", ROW_GROUP)


def _copy(root: Path, tmp_path: Path, name: str) -> Storage:
    """Return a storage over a fresh copy of the validated partitions (no snapshot yet)."""
    shutil.copytree(root / "validated", tmp_path / name / "validated")
    return Storage(str(tmp_path / name))


def test_streamed_snapshot_is_bit_for_bit_the_in_memory_one(
    root: Path, labels: pd.DataFrame, tmp_path: Path, small_row_groups: None, caplog: pytest.LogCaptureFixture
) -> None:
    whole, streamed = _copy(root, tmp_path, "whole"), _copy(root, tmp_path, "streamed")
    in_memory = create_snapshot(whole, USE_CASE, WINDOW, labels=labels, as_of=AS_OF, chunk_rows=10**9)
    with caplog.at_level(logging.INFO, logger="mlloop"):
        chunked = create_snapshot(streamed, USE_CASE, WINDOW, labels=labels, as_of=AS_OF, chunk_rows=CHUNK)

    assert "into 6 entity parts" in caplog.text  # the streamed path ran, over several parts
    assert "Snapshot features: entity part 6/6" in caplog.text and "peak RSS" in caplog.text
    assert chunked.digest == in_memory.digest
    assert whole.read_bytes(in_memory.data_key) == streamed.read_bytes(chunked.data_key)
    assert pq.ParquetFile(tmp_path / "streamed" / chunked.data_key).metadata.num_row_groups == -(
        -chunked.row_count // ROW_GROUP
    )
    assert chunked.model_dump(exclude={"feature_validation"}) == in_memory.model_dump(
        exclude={"feature_validation"}
    )
    assert chunked.feature_validation is not None and chunked.feature_validation.success
    assert chunked.feature_validation.evaluated == in_memory.feature_validation.evaluated  # type: ignore[union-attr]
    parts = streamed.read_json(chunked.feature_validation.report_key)["parts"]
    assert len(parts) == 6 and all(streamed.exists(uri) for uri in parts)

    # The window is a real test of the history features: entities span days (so files and parts'
    # boundaries of the merge), their history reaches into the context day, and labels have gaps.
    frame, _ = load_snapshot(streamed, chunked.digest)
    validated = [streamed.read_frame(s.key) for s in chunked.source_partitions]
    customers = [set(v["customer_id"]) for v in validated]
    assert customers[0] & customers[1] and customers[0] & customers[2]
    assert (frame["customer_count_7d"] > frame["customer_count_24h"]).any()
    assert frame[USE_CASE.target_column].isna().any() and frame[USE_CASE.target_column].notna().any()


def test_streamed_without_labels_and_again_writes_nothing_new(
    root: Path, tmp_path: Path, small_row_groups: None
) -> None:
    whole, streamed = _copy(root, tmp_path, "whole"), _copy(root, tmp_path, "streamed")
    in_memory = create_snapshot(whole, USE_CASE, WINDOW, labels=None, as_of=AS_OF, validate=False)
    chunked = create_snapshot(
        streamed, USE_CASE, WINDOW, labels=None, as_of=AS_OF, validate=False, chunk_rows=CHUNK
    )
    assert chunked == in_memory
    assert chunked.labels.known == 0
    again = create_snapshot(
        streamed, USE_CASE, list(reversed(WINDOW)), labels=None, as_of=AS_OF, validate=False, chunk_rows=700
    )
    assert again == chunked


def test_streamed_refuses_a_key_in_two_batches(root: Path, tmp_path: Path) -> None:
    storage = _copy(root, tmp_path, "dup")
    first, second = (storage.list(f"validated/transactions/date={d.isoformat()}")[0] for d in WINDOW)
    frame = storage.read_frame(second)
    frame.loc[0, "transaction_id"] = storage.read_frame(first).loc[3, "transaction_id"]
    storage.write_frame(second, frame)
    with pytest.raises(SnapshotError, match="share a transaction_id"):
        create_snapshot(storage, USE_CASE, WINDOW, labels=None, as_of=AS_OF, validate=False, chunk_rows=CHUNK)
    assert storage.list("snapshots") == []


def test_streamed_features_failing_their_contract_write_nothing(
    root: Path, labels: pd.DataFrame, tmp_path: Path
) -> None:
    storage = _copy(root, tmp_path, "contract")
    drifted = USE_CASE.features.model_copy(update={"log1p": []})  # no longer what the suite expects
    use_case = USE_CASE.model_copy(update={"features": drifted})
    with pytest.raises(FeatureContractError, match="log1p_amount") as err:
        create_snapshot(storage, use_case, WINDOW, labels=labels, as_of=AS_OF, chunk_rows=CHUNK)
    assert storage.list("snapshots") == []
    assert storage.exists(err.value.report_uri)


def test_streamed_without_history_features_parts_by_key(root: Path, tmp_path: Path) -> None:
    plain = USE_CASE.model_copy(update={"features": USE_CASE.features.model_copy(update={"history": None})})
    whole, streamed = _copy(root, tmp_path, "whole"), _copy(root, tmp_path, "streamed")
    in_memory = create_snapshot(whole, plain, WINDOW, labels=None, as_of=AS_OF, validate=False)
    chunked = create_snapshot(
        streamed, plain, WINDOW, labels=None, as_of=AS_OF, validate=False, chunk_rows=CHUNK
    )
    assert chunked == in_memory
    assert in_memory.context_days_missing == []  # no history: no context read
