"""Training-set snapshots: content-addressed, idempotent, verified on read, labels as of a time; split."""

from __future__ import annotations

import hashlib
import io
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlloop.data.generator import generate_day
from mlloop.features import build_features, feature_columns
from mlloop.ingestion.batches import land_batch, publish_validated
from mlloop.storage import Storage
from mlloop.training import (
    LABEL_KNOWN_COLUMN,
    FeatureContractError,
    MissingPartitionsError,
    SnapshotError,
    SnapshotIntegrityError,
    create_snapshot,
    load_snapshot,
    time_split,
)
from mlloop.training.snapshot import canonical_parquet_bytes
from mlloop.usecase import load_use_case

USE_CASE = load_use_case("card_fraud")
ROWS = 600
FIRST = date(2026, 11, 20)
DAYS = [FIRST + timedelta(days=i) for i in range(3)]  # FIRST is history context for the window
WINDOW = DAYS[1:]
AS_OF = datetime(2026, 11, 26, tzinfo=UTC)
PII_KEY = b"unit-test-pii-key-0123456789"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage root with validated partitions for DAYS, written the way ingestion publishes them."""
    path = tmp_path_factory.mktemp("snapshot-root")
    storage = Storage(str(path))
    for day in DAYS:
        publish_validated(storage, USE_CASE, land_batch(storage, USE_CASE, day, rows=ROWS), PII_KEY)
    return path


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    return pd.concat([generate_day(d, rows=ROWS, seed=USE_CASE.source.seed).labels for d in DAYS])


@pytest.fixture(scope="module")
def manifest(root: Path, labels: pd.DataFrame):
    """One validated snapshot (the GX feature suite runs once for the module)."""
    return create_snapshot(Storage(str(root)), USE_CASE, WINDOW, labels=labels, as_of=AS_OF)


def test_snapshot_is_content_addressed_with_a_manifest(root: Path, labels: pd.DataFrame, manifest) -> None:
    storage = Storage(str(root))
    assert manifest.data_key == f"snapshots/{manifest.digest}/data.parquet"
    assert hashlib.sha256(storage.read_bytes(manifest.data_key)).hexdigest() == manifest.digest
    assert storage.exists(f"snapshots/{manifest.digest}/manifest.json")

    sources = {(s.day, s.role): s for s in manifest.source_partitions}
    assert set(sources) == {(d.isoformat(), "window") for d in WINDOW} | {(FIRST.isoformat(), "context")}
    for source in sources.values():
        assert storage.list(f"validated/transactions/date={source.day}") == [source.key]
        assert source.key.endswith(f"/{source.batch_id}.parquet") and source.rows == ROWS
    missing_context = [(WINDOW[0] - timedelta(days=k)).isoformat() for k in range(7, 1, -1)]
    assert manifest.context_days_missing == missing_context  # 7d of history wanted, one day there

    assert manifest.row_count == ROWS * len(WINDOW)
    assert manifest.time_start >= datetime(2026, 11, 21, tzinfo=UTC)
    assert manifest.time_end < datetime(2026, 11, 23, tzinfo=UTC)
    assert manifest.feature_spec_version == USE_CASE.features.version
    assert manifest.feature_spec_fingerprint == USE_CASE.features.fingerprint()
    assert manifest.feature_validation is not None and manifest.feature_validation.success
    assert storage.exists(manifest.feature_validation.report_key)

    window_keys = set(generate_day(WINDOW[0], rows=ROWS, seed=42).transactions["transaction_id"]) | set(
        generate_day(WINDOW[1], rows=ROWS, seed=42).transactions["transaction_id"]
    )
    in_window = labels[labels["transaction_id"].isin(window_keys)]
    known = in_window[in_window["label_time"] <= AS_OF]
    assert manifest.labels.known == len(known) and manifest.labels.unknown == len(in_window) - len(known)
    assert 0 < manifest.labels.known < manifest.row_count  # some labels are not in yet
    assert manifest.labels.target_mean == pytest.approx(known["is_fraud"].mean())
    assert sum(c.known for c in manifest.labels_per_day.values()) == manifest.labels.known


def test_loaded_snapshot_is_sorted_typed_and_point_in_time(root: Path, manifest) -> None:
    storage = Storage(str(root))
    frame, loaded = load_snapshot(storage, manifest.digest)
    assert loaded == manifest
    key, target = USE_CASE.key_column, USE_CASE.target_column
    leading = [key, USE_CASE.time_column, target, LABEL_KNOWN_COLUMN]
    assert list(frame.columns) == [*leading, *feature_columns(USE_CASE.features)]
    assert frame[key].is_monotonic_increasing and frame[key].is_unique
    assert str(frame[target].dtype) == "Int8"
    assert frame[LABEL_KNOWN_COLUMN].equals(frame[target].notna())
    assert isinstance(frame["merchant_category"].dtype, pd.CategoricalDtype)
    assert "card_number_token" not in frame.columns and "label_time" not in frame.columns

    # History of window rows includes the context day: same as building over all three days.
    validated = pd.concat([storage.read_frame(s.key) for s in manifest.source_partitions], ignore_index=True)
    expected = build_features(
        validated, USE_CASE.features, key_column=key, time_column=USE_CASE.time_column
    ).set_index(key)
    got = frame.set_index(key)
    columns = feature_columns(USE_CASE.features)
    pd.testing.assert_frame_equal(got[columns], expected.loc[got.index, columns], check_exact=True)
    assert got["customer_count_7d"].sum() > 0


def test_same_inputs_give_the_same_snapshot_without_rewriting(
    root: Path, labels: pd.DataFrame, manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(str(root))
    written: list[str] = []
    original = storage.write_bytes
    monkeypatch.setattr(storage, "write_bytes", lambda key, data: written.append(key) or original(key, data))
    again = create_snapshot(
        storage, USE_CASE, list(reversed(WINDOW)), labels=labels.sample(frac=1.0), as_of=AS_OF
    )
    assert again == manifest
    assert written == []
    by_uri = [
        storage.uri(f"snapshots/{manifest.digest}"),
        storage.uri(manifest.data_key),
        manifest.manifest_key,
    ]
    for reference in by_uri:
        assert load_snapshot(storage, reference)[1].digest == manifest.digest


def test_labels_follow_as_of(root: Path, labels: pd.DataFrame, manifest) -> None:
    storage = Storage(str(root))
    later = create_snapshot(
        storage, USE_CASE, WINDOW, labels=labels, as_of=datetime(2027, 6, 1, tzinfo=UTC), validate=False
    )
    assert later.digest != manifest.digest and later.labels.unknown == 0
    none_yet = create_snapshot(storage, USE_CASE, WINDOW, labels=None, as_of=AS_OF, validate=False)
    assert none_yet.labels.known == 0 and none_yet.labels.unknown == none_yet.row_count
    frame, _ = load_snapshot(storage, none_yet.digest)
    assert frame[USE_CASE.target_column].isna().all() and not frame[LABEL_KNOWN_COLUMN].any()
    with pytest.raises(SnapshotError, match="timezone"):
        create_snapshot(storage, USE_CASE, WINDOW, labels=labels, as_of=datetime(2026, 11, 26))
    with pytest.raises(SnapshotError, match="label_time"):
        create_snapshot(storage, USE_CASE, WINDOW, labels=labels.drop(columns="label_time"), as_of=AS_OF)


def test_missing_days_are_named(root: Path, labels: pd.DataFrame) -> None:
    storage = Storage(str(root))
    wanted = [*WINDOW, date(2026, 11, 25), date(2026, 11, 27)]
    with pytest.raises(MissingPartitionsError, match=r"2026-11-25, 2026-11-27.*ingest_card_fraud") as err:
        create_snapshot(storage, USE_CASE, wanted, labels=labels, as_of=AS_OF)
    assert err.value.missing_days == ["2026-11-25", "2026-11-27"]
    with pytest.raises(SnapshotError, match="no days"):
        create_snapshot(storage, USE_CASE, [], labels=labels, as_of=AS_OF)


def test_two_batches_for_one_day_are_refused(root: Path, labels: pd.DataFrame, tmp_path: Path) -> None:
    shutil.copytree(root, tmp_path / "copy")
    storage = Storage(str(tmp_path / "copy"))
    folder = f"validated/transactions/date={WINDOW[0].isoformat()}"
    storage.copy(storage.list(folder)[0], f"{folder}/0123456789abcdef.parquet")
    with pytest.raises(SnapshotError, match="2 validated batches"):
        create_snapshot(storage, USE_CASE, WINDOW, labels=labels, as_of=AS_OF, validate=False)


def test_tampered_snapshot_is_refused(root: Path, manifest, tmp_path: Path) -> None:
    shutil.copytree(root / "snapshots", tmp_path / "copy" / "snapshots")
    storage = Storage(str(tmp_path / "copy"))
    frame, _ = load_snapshot(storage, manifest.digest)
    frame.loc[0, "amount"] = frame.loc[0, "amount"] + 1  # a quiet edit, canonically re-encoded
    storage.write_bytes(manifest.data_key, canonical_parquet_bytes(frame))
    with pytest.raises(SnapshotIntegrityError, match="altered or corrupted"):
        load_snapshot(storage, manifest.digest)
    with pytest.raises(SnapshotError, match="not complete"):
        load_snapshot(storage, "0" * 64)
    with pytest.raises(SnapshotError, match="names no snapshot"):
        load_snapshot(storage, "models/abc")


def test_features_failing_their_contract_write_nothing(
    root: Path, labels: pd.DataFrame, tmp_path: Path
) -> None:
    shutil.copytree(root / "validated", tmp_path / "copy" / "validated")
    storage = Storage(str(tmp_path / "copy"))
    drifted = USE_CASE.features.model_copy(update={"log1p": []})  # no longer what the suite expects
    use_case = USE_CASE.model_copy(update={"features": drifted})
    with pytest.raises(FeatureContractError, match="log1p_amount") as err:
        create_snapshot(storage, use_case, WINDOW, labels=labels, as_of=AS_OF)
    assert storage.list("snapshots") == []
    assert storage.exists(err.value.report_uri)


def test_canonical_bytes_ignore_row_order_and_carry_no_pandas_metadata(root: Path, manifest) -> None:
    frame, _ = load_snapshot(Storage(str(root)), manifest.digest)
    shuffled = frame.sample(frac=1.0, random_state=3).sort_values(USE_CASE.key_column).reset_index(drop=True)
    data = canonical_parquet_bytes(shuffled)
    assert hashlib.sha256(data).hexdigest() == manifest.digest
    assert not pq.read_metadata(io.BytesIO(data)).metadata  # no pandas/Arrow schema key-value metadata


def _times(values: list[int]) -> pd.DataFrame:
    stamps = pd.Timestamp("2026-11-20", tz="UTC") + pd.to_timedelta(values, unit="h")
    return pd.DataFrame({"t": stamps, "row": range(len(values))}).sample(frac=1.0, random_state=0)


def test_time_split_has_no_leakage_and_ties_stay_together() -> None:
    frame = _times([0, 1, 1, 2, 3, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 9, 9, 10, 11, 12])
    split = time_split(frame, "t", validation_fraction=0.2, holdout_fraction=0.2)
    train, validation, holdout = split.train["t"], split.validation["t"], split.holdout["t"]
    assert train.max() < validation.min() and validation.max() < holdout.min()
    assert split.validation_start == validation.min() and split.holdout_start == holdout.min()
    assert sorted(pd.concat([split.train, split.validation, split.holdout])["row"]) == list(range(20))
    # The 20% cut falls inside the four rows at 9h: all of them go to the holdout, none to validation.
    assert split.sizes() == {"train": 12, "validation": 1, "holdout": 7}
    assert train.is_monotonic_increasing

    no_validation = time_split(frame, "t", validation_fraction=0.0, holdout_fraction=0.25)
    assert len(no_validation.validation) == 0 and no_validation.validation_start is None
    assert no_validation.train["t"].max() < no_validation.holdout["t"].min()


def test_time_split_refuses_what_it_cannot_split() -> None:
    with pytest.raises(ValueError, match="below 1"):
        time_split(_times([0, 1, 2]), "t", validation_fraction=0.5, holdout_fraction=0.5)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        time_split(_times([0, 1, 2]), "t", validation_fraction=-0.1, holdout_fraction=0.2)
    with pytest.raises(ValueError, match="train, validation came out empty"):
        time_split(_times([5] * 10), "t", validation_fraction=0.2, holdout_fraction=0.2)
