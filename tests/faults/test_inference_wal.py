"""The inference log's write-ahead file: torn tails are cut, a replay repeated writes no row twice."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from mlloop.serving.inference_log import InferenceLog
from mlloop.serving.wal import (
    SUFFIX,
    WalLockedError,
    WriteAheadLog,
    encode,
    read_segment,
    segment_stamp,
)
from mlloop.storage import Storage

DAY = dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.UTC)


def _rows(start: int, n: int) -> list[dict]:
    """Served rows as the service logs them: aware datetimes, floats, flags, ids, a null."""
    return [
        {
            "transaction_id": f"t{start + i}",
            "event_time": DAY + dt.timedelta(hours=(start + i) % 30),  # two event days
            "amount": 10.5 + i,
            "merchant": None,
            "score": 0.25,
            "flagged": (start + i) % 2 == 0,
            "request_id": f"r{(start + i) // 10}",
            "served_at": pd.Timestamp("2026-09-02T08:00:00.123456Z"),
        }
        for i in range(n)
    ]


def _segments(wal_dir: Path) -> set[str]:
    """Return the segments in a WAL folder (each is two lane files)."""
    return {segment_stamp(p) for p in wal_dir.glob(f"*{SUFFIX}")}


def _logged(root: Path) -> pd.DataFrame:
    storage = Storage(str(root))
    keys = [k for k in storage.list("inference/tx") if k.endswith(".parquet")]
    return pd.concat([storage.read_frame(k) for k in keys], ignore_index=True) if keys else pd.DataFrame()


def _log(root: Path, wal_dir: Path, **kwargs) -> InferenceLog:
    wal = WriteAheadLog(wal_dir, kwargs.pop("sync", "interval"), 0.002)
    return InferenceLog(Storage(str(root)), "tx", "event_time", flush_rows=10**6, flush_seconds=3600,
                        wal=wal, **kwargs)  # fmt: skip


def _kill_writer(wal_dir: Path, batches: int) -> None:
    """Append ``batches`` of 10 rows from another process, then SIGKILL it (nothing is flushed)."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_inference_wal import _log, _rows
        from pathlib import Path
        log = _log(Path({str(wal_dir.parent / "unused")!r}), Path({str(wal_dir)!r}))
        for b in range({batches}):
            log.append(_rows(10 * b, 10))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]


def test_records_read_back_with_the_same_types(tmp_path: Path) -> None:
    segment = tmp_path / f"s{SUFFIX}"
    rows = _rows(0, 5)
    segment.write_bytes(encode(rows[:2]) + encode(rows[2:]))
    contents = read_segment(segment)
    assert contents.records == 2 and contents.cut_bytes == 0
    assert contents.rows == [{**r, "served_at": r["served_at"].to_pydatetime()} for r in rows]


@pytest.mark.parametrize("damage", ["torn", "flipped", "garbage"])
def test_a_torn_or_corrupt_tail_is_cut_and_counted(tmp_path: Path, damage: str, caplog) -> None:
    wal_dir = tmp_path / "wal"
    wal_dir.mkdir()
    good = encode(_rows(0, 10)) + encode(_rows(10, 10))
    last = encode(_rows(20, 10))
    tail = {
        "torn": last[: len(last) // 2],  # the process died inside write()
        "flipped": last[:-5] + bytes([last[-5] ^ 0xFF]) + last[-4:],  # a bit rotted on disk
        "garbage": b"\x00" * 3,  # shorter than a header
    }[damage]
    (wal_dir / f"20260902T080000-aaaaaaaaaaaa.0{SUFFIX}").write_bytes(good + tail)
    with caplog.at_level(logging.WARNING, logger="mlloop.serving.wal"):
        log = _log(tmp_path / "data", wal_dir)
    assert log.rows_replayed == 20 and log.pending == 0
    assert f"cut a torn or corrupt tail of {len(tail)} bytes after 2 intact records" in caplog.text
    log.close()
    assert sorted(_logged(tmp_path / "data")["transaction_id"]) == sorted(f"t{i}" for i in range(20))
    assert list(wal_dir.glob(f"*{SUFFIX}")) == []


def test_rows_of_a_killed_process_are_replayed_once_even_when_replayed_twice(tmp_path: Path) -> None:
    wal_dir, root = tmp_path / "wal", tmp_path / "data"
    _kill_writer(wal_dir, batches=7)
    segments = {p.name: p.read_bytes() for p in wal_dir.glob(f"*{SUFFIX}")}
    assert len(_segments(wal_dir)) == 1 and len(segments) == 2  # one segment, two lanes

    first = _log(root, wal_dir)
    assert first.rows_replayed == 70
    first.close()
    files = sorted(p.relative_to(root) for p in root.rglob("*.parquet"))
    assert len(files) == 2  # two event days, one file each, named after the segment
    stamp = segment_stamp(Path(next(iter(segments))))
    assert all(p.name == f"part-{stamp}.parquet" for p in files)

    # A crash after the replay wrote its files but before it deleted the segment: replay again.
    for name, data in segments.items():
        (wal_dir / name).write_bytes(data)
    second = _log(root, wal_dir)
    second.close()
    assert sorted(p.relative_to(root) for p in root.rglob("*.parquet")) == files
    logged = _logged(root)
    assert len(logged) == 70 and logged["transaction_id"].is_unique
    assert str(logged["event_time"].dtype) == "datetime64[ns, UTC]"
    assert logged.loc[logged["transaction_id"] == "t3", "amount"].item() == 13.5


@pytest.mark.parametrize("sync", ["interval", "batch"])
def test_flushes_store_each_segment_and_delete_it(tmp_path: Path, sync: str) -> None:
    wal_dir, root = tmp_path / "wal", tmp_path / "data"
    log = _log(root, wal_dir, sync=sync)
    log.append(_rows(0, 10))
    assert log.flush() == 10
    log.append(_rows(10, 5))
    assert len(_segments(wal_dir)) == 1  # the current segment only
    log.close()
    assert list(wal_dir.glob(f"*{SUFFIX}")) == []
    assert sorted(_logged(root)["transaction_id"]) == sorted(f"t{i}" for i in range(15))


class _FailingStorage(Storage):
    fail = True

    def write_frame(self, uri_or_key: str, frame: pd.DataFrame) -> str:
        if self.fail:
            raise OSError("bucket unreachable")
        return super().write_frame(uri_or_key, frame)


def test_rows_storage_refuses_at_shutdown_stay_in_the_wal_for_the_next_start(tmp_path: Path) -> None:
    wal_dir, root = tmp_path / "wal", tmp_path / "data"
    broken = _FailingStorage(str(root))
    log = InferenceLog(broken, "tx", "event_time", flush_rows=10**6, flush_seconds=3600,
                       wal=WriteAheadLog(wal_dir))  # fmt: skip
    log.append(_rows(0, 12))
    assert log.flush() == 0 and log.pending == 12
    log.close(attempts=1)
    assert _logged(root).empty and len(_segments(wal_dir)) == 1

    restarted = _log(root, wal_dir)
    restarted.close()
    assert sorted(_logged(root)["transaction_id"]) == sorted(f"t{i}" for i in range(12))


def test_a_second_process_cannot_take_a_held_folder(tmp_path: Path) -> None:
    held = WriteAheadLog(tmp_path / "wal")
    code = (
        "from pathlib import Path; from mlloop.serving.wal import WriteAheadLog; "
        f"WriteAheadLog(Path({str(tmp_path / 'wal')!r}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and WalLockedError.__name__ in proc.stderr
    assert "MLLOOP_INFERENCE_WAL_DIR" in proc.stderr
    held.close()
    held.release()


def test_records_of_both_lanes_are_replayed(tmp_path: Path) -> None:
    wal_dir, root = tmp_path / "wal", tmp_path / "data"
    wal = WriteAheadLog(wal_dir, "batch")
    wal.current.append(encode(_rows(0, 4)))
    assert wal.current.switch() == 0  # what the syncer does before each fsync
    wal.current.append(encode(_rows(4, 3)))
    assert all(p.stat().st_size > 0 for p in wal.current.paths)
    wal.release()  # the process "dies" here: nothing stored, nothing deleted
    restarted = _log(root, wal_dir)
    assert restarted.rows_replayed == 7
    restarted.close()
    assert sorted(_logged(root)["transaction_id"]) == sorted(f"t{i}" for i in range(7))
