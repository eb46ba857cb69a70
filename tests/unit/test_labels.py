"""Labels known at a time: one rule (latest correction wins, ties to the later delivery) on every path."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from mlloop.data.generator import generate_day
from mlloop.ingestion.batches import land_batch, publish_validated
from mlloop.labels import LABELS_AREA, known_labels, labels_cutoff
from mlloop.serving.inference_log import AREA as INFERENCE_AREA
from mlloop.serving.inference_log import labelled_answers
from mlloop.storage import Storage, partition_key
from mlloop.training.snapshot import load_snapshot
from mlloop.training.windows import snapshot_days
from mlloop.usecase import load_use_case

USE_CASE = load_use_case("card_fraud")
DAY = date(2026, 11, 20)
KEY, TARGET = USE_CASE.key_column, USE_CASE.target_column


def _labels(rows: list[tuple[str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            KEY: [r[0] for r in rows],
            TARGET: [r[1] for r in rows],
            "label_time": pd.to_datetime([r[2] for r in rows], utc=True),
        }
    )


def test_known_labels_filter_on_label_time() -> None:
    labels = generate_day(date(2026, 11, 1), rows=5_000, seed=42).labels
    as_of = datetime(2026, 11, 4, tzinfo=UTC)
    known = known_labels(labels, as_of, key_column=KEY)
    assert 0 < len(known) < len(labels)
    assert (known["label_time"] <= pd.Timestamp(as_of)).all()
    assert len(known_labels(labels, datetime(2027, 6, 1, tzinfo=UTC), key_column=KEY)) == len(labels)
    assert len(known_labels(labels, datetime(2026, 11, 1, tzinfo=UTC), key_column=KEY)) == 0
    with pytest.raises(ValueError, match="timezone"):
        known_labels(labels, datetime(2026, 11, 4), key_column=KEY)
    with pytest.raises(ValueError, match="lacks columns"):
        known_labels(labels.drop(columns="label_time"), as_of, key_column=KEY)


def test_latest_correction_wins_and_a_tie_goes_to_the_later_row() -> None:
    labels = _labels(
        [
            ("corrected", 1, "2026-11-22T00:00Z"),  # the correction, delivered first in the frame
            ("corrected", 0, "2026-11-21T00:00Z"),
            ("tied", 0, "2026-11-21T00:00Z"),
            ("tied", 1, "2026-11-21T00:00Z"),  # same time: the later row wins
            ("future", 1, "2026-11-21T00:00Z"),
            ("future", 0, "2026-12-01T00:00Z"),  # not known yet: the earlier label stands
        ]
    )
    as_of = datetime(2026, 11, 23, tzinfo=UTC)
    known = known_labels(labels, as_of, key_column=KEY)
    assert dict(zip(known[KEY], known[TARGET], strict=True)) == {"corrected": 1, "tied": 1, "future": 1}
    assert list(known[KEY]) == ["corrected", "tied", "future"]  # the frame's order
    shuffled = known_labels(labels.iloc[[1, 0, 2, 3, 5, 4]], as_of, key_column=KEY)
    assert dict(zip(shuffled[KEY], shuffled[TARGET], strict=True))["corrected"] == 1


def test_labels_cutoff_is_the_start_of_the_utc_day() -> None:
    assert labels_cutoff(datetime(2026, 11, 23, 18, 30, tzinfo=UTC)) == datetime(2026, 11, 23, tzinfo=UTC)
    early_east = datetime(2026, 11, 24, 1, 0, tzinfo=timezone(timedelta(hours=3)))  # 22:00 UTC the day before
    assert labels_cutoff(early_east) == datetime(2026, 11, 23, tzinfo=UTC)


def test_served_and_snapshot_paths_agree_on_a_corrected_label(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    batch = land_batch(storage, USE_CASE, DAY, rows=300)
    publish_validated(storage, USE_CASE, batch, b"unit-test-pii-key-0123456789")
    delivered = storage.read_days(LABELS_AREA, USE_CASE.dataset, [DAY])
    assert delivered is not None
    as_of = datetime(2027, 1, 1, 12, tzinfo=UTC)
    # Correct one label after delivery, in a file that sorts after the original one.
    original = delivered.iloc[0]
    correction = delivered.iloc[[0]].assign(
        **{TARGET: 1 - int(original[TARGET]), "label_time": original["label_time"] + pd.Timedelta(days=3)}
    )
    folder = partition_key(LABELS_AREA, USE_CASE.dataset, DAY)
    storage.write_frame(f"{folder}/zz-correction.parquet", correction)
    assert storage.list(folder)[-1].endswith("zz-correction.parquet")
    served = delivered[[KEY]].assign(
        served_at=pd.Timestamp("2026-11-20T12:00Z"), score=0.5, model_version="1"
    )
    storage.write_frame(f"{partition_key(INFERENCE_AREA, USE_CASE.dataset, DAY)}/part-0.parquet", served)

    answers = labelled_answers(storage, USE_CASE, [DAY.isoformat()], labels_cutoff(as_of))
    manifest = snapshot_days(storage, USE_CASE, [DAY], as_of=as_of, validate=False)
    snapshot, _ = load_snapshot(storage, manifest.digest)

    key = original[KEY]
    served_target = answers.set_index(KEY)[TARGET]
    snapshot_target = snapshot.set_index(KEY)[TARGET]
    assert served_target[key] == snapshot_target[key] == 1 - int(original[TARGET])
    assert len(answers) == len(delivered)  # one answer per key, the correction adds no row
    both = served_target.sort_index().astype(float), snapshot_target.sort_index().astype(float)
    pd.testing.assert_series_equal(*both, check_names=False)
