"""An ingestion killed mid-run and retried: no second raw object, nothing published half-written.

``ingest_day`` (landing, validation, publishing: the three tasks of ``ingest_<use case>``) runs in a process
of its own that gets SIGKILL at a chosen moment: as soon as its raw object is visible, or as soon as the
validated one is. The retry, in this process, must land nothing twice (raw is keyed by content hash),
publish exactly one validated object per day, and leave no temporary file a reader would pick up.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlloop.ingestion.batches import ingest_day
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

DAY = dt.date(2026, 10, 5)
ROWS = 20_000
PII_KEY = b"faults-tests-pii-key-0123456789ab"


def _start_ingestion(root: Path) -> subprocess.Popen:
    """Start ``ingest_day`` for DAY in its own process group."""
    code = textwrap.dedent(f"""
        import datetime as dt
        from mlloop.ingestion.batches import ingest_day
        from mlloop.storage import Storage
        from mlloop.usecase import load_use_case
        day = dt.date.fromisoformat({DAY.isoformat()!r})
        ingest_day(Storage({str(root)!r}), load_use_case("card_fraud"), day, {PII_KEY!r}, rows={ROWS})
    """)
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def _objects(root: Path, area: str) -> list[Path]:
    return sorted(p for p in (root / area).rglob("*") if p.is_file()) if (root / area).exists() else []


@pytest.mark.parametrize("kill_when", ["raw landed", "validated published"])
def test_a_killed_ingestion_retried_lands_and_publishes_once(tmp_path: Path, kill_when: str) -> None:
    root = tmp_path / "data"
    area = "raw" if kill_when == "raw landed" else "validated"
    proc = _start_ingestion(root)
    deadline = time.monotonic() + 120
    while not [p for p in _objects(root, area) if not p.name.startswith(".")]:
        assert proc.poll() is None, (
            f"ingestion ended before {kill_when}: {proc.stderr.read().decode()[-2000:]}"
        )
        assert time.monotonic() < deadline, f"nothing {kill_when} within 120 s"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    landed_before = _objects(root, "raw")

    storage = Storage(str(root))
    use_case = load_use_case("card_fraud")
    result = ingest_day(storage, use_case, DAY, PII_KEY, rows=ROWS)

    raw = [p for p in _objects(root, "raw") if not p.name.startswith(".")]
    assert len(raw) == 1, raw  # one delivery file, landed once
    assert [p for p in landed_before if not p.name.startswith(".")] == raw
    validated = storage.list(f"validated/{use_case.dataset}")
    assert [k for k in validated if k.endswith(".parquet")] == [storage.key(result["validated_uri"])]
    published = storage.read_frame(result["validated_uri"])
    assert len(published) == result["rows"] > 0 and published[use_case.key_column].is_unique
    # A temporary file the killed writer left is hidden from every listing the pipeline reads.
    assert all(not k.rsplit("/", 1)[-1].startswith(".") for k in storage.list("")), storage.list("")
