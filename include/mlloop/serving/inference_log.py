"""The inference log: every request row and the answer given, buffered and written as parquet partitions.

Rows wait in memory and are written to ``inference/<dataset>/date=<event day>/`` (one file per flush
and day) when ``flush_rows`` are waiting, when the oldest has waited ``flush_seconds``, and on close
(the service closes it on shutdown, SIGTERM included). A failed write keeps the rows for the next
attempt.

With a write-ahead log (``serving/wal.py``, the service's default) every row is in a local segment file
before its answer is sent, and each flush stores one sealed segment under the segment's own name, then
deletes it. What a killed process leaves, or what storage refused at shutdown, is replayed at the next
start: the same segment gives the same partition files, so a replay repeated never writes a row twice.
Without one, close retries and then spools what it still holds to a local folder, naming it in the log.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlloop.features.build import epoch_nanoseconds
from mlloop.labels import read_known_labels
from mlloop.serving.wal import WriteAheadLog, recover
from mlloop.storage.store import partition_key

if TYPE_CHECKING:
    from mlloop.storage import Storage
    from mlloop.usecase import UseCase

log = logging.getLogger(__name__)
AREA = "inference"
_EPOCH_DAY = dt.date(1970, 1, 1)
_NS_PER_DAY = 86_400 * 1_000_000_000


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Return rows as a frame; timezone-aware datetime columns are converted by arithmetic, in UTC.

    pandas infers such columns value by value (most of a flush's time, with the GIL held, while the
    service answers requests); the arithmetic gives the same datetime64[ns, UTC] column.
    """
    columns: dict[str, Any] = {}
    for name in rows[0]:
        values = [row.get(name) for row in rows]
        if all(isinstance(v, dt.datetime) and v.tzinfo is not None for v in values):
            ns = epoch_nanoseconds(values)
            columns[name] = pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize(dt.UTC)
        else:
            columns[name] = values
    return pd.DataFrame(columns)


@dataclass
class _Chunk:
    """Rows to store together: one sealed WAL segment (``stamp`` names both) or, without a WAL, one flush."""

    stamp: str
    rows: list[dict[str, Any]]
    segment: tuple[Path, ...] = ()


def _stamp() -> str:
    """Return a new ``<UTC time>-<12 hex>`` name for a flush's partition files."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"


class InferenceLog:
    """A buffered, thread-safe writer of served rows to the storage layer, crash-safe with a WAL."""

    def __init__(
        self,
        storage: Storage,
        dataset: str,
        time_column: str,
        *,
        flush_rows: int = 5000,
        flush_seconds: float = 10.0,
        spool_dir: Path | None = None,
        wal: WriteAheadLog | None = None,
    ) -> None:
        """Replay what ``wal`` holds from an earlier process, then start the background flusher.

        Rows go to ``inference/<dataset>/date=<day of time_column>/``. With ``wal``, every appended row
        is written there first and a flush stores one segment, named like its partition files, so that a
        replay of the same segment rewrites the same objects (never a second copy).
        """
        self.storage = storage
        self.dataset = dataset
        self.time_column = time_column
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.spool_dir = spool_dir
        self.wal = wal
        self.rows_written = 0
        self.rows_replayed = 0
        self.write_errors = 0
        self._buffer: list[dict[str, Any]] = []
        self._chunks: list[_Chunk] = []  # sealed, waiting to be stored (retried after a failure)
        self._oldest: float | None = None
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        if wal is not None and wal.recovered:
            self._replay(wal)
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    def _replay(self, wal: WriteAheadLog) -> None:
        """Store the segments an earlier process left (its crash or a failed final write)."""
        for stamp, paths in wal.recovered.items():
            rows = recover(paths)
            if rows:
                self._chunks.append(_Chunk(stamp, rows, tuple(paths)))
            else:
                wal.remove(paths)
        rows = sum(len(chunk.rows) for chunk in self._chunks)
        if not rows:
            return
        log.info("Inference log: replaying %d rows from %d WAL segment(s) in %s into %s/%s/",
                 rows, len(self._chunks), wal.folder, AREA, self.dataset)  # fmt: skip
        self.flush()
        self.rows_replayed = rows - self.pending

    @property
    def pending(self) -> int:
        """Return the number of rows waiting to be written."""
        return len(self._buffer) + sum(len(chunk.rows) for chunk in self._chunks)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Queue rows (in the WAL first, when there is one); wake the flusher when ``flush_rows`` wait.

        Raises:
            RuntimeError: after close, or when the WAL cannot be written (the rows must not be answered).
        """
        if self._closed.is_set():
            raise RuntimeError("the inference log is closed; rows arriving after shutdown cannot be kept")
        with self._lock:
            if self.wal is not None:
                try:
                    self.wal.append(rows)  # type: ignore[arg-type]
                except OSError as exc:
                    raise RuntimeError(
                        f"the inference write-ahead file in {self.wal.folder} cannot be written ({exc}); "
                        "free space or fix the folder's permissions (MLLOOP_INFERENCE_WAL_DIR)"
                    ) from exc
            if self._oldest is None:
                self._oldest = time.monotonic()
            self._buffer.extend(rows)
            full = len(self._buffer) >= self.flush_rows
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write every waiting row now; return how many were written (rows stay queued on failure)."""
        with self._write_lock:
            with self._lock:
                rows, self._buffer, self._oldest = self._buffer, [], None
                segment = self.wal.rotate() if self.wal is not None and rows else None
            if segment is not None:
                self.wal.seal(segment)  # type: ignore[union-attr]
                self._chunks.append(_Chunk(segment.stamp, rows, segment.paths))
            elif rows:
                self._chunks.append(_Chunk(_stamp(), rows))
            return self._store()

    def _store(self) -> int:
        """Store the sealed chunks in order; stop at the first failure (the rest wait for the next flush)."""
        written = 0
        while self._chunks:
            chunk = self._chunks[0]
            try:
                self._write(chunk.rows, chunk.stamp)
            except Exception:
                self.write_errors += 1
                with self._lock:
                    self._oldest = self._oldest or time.monotonic()
                log.exception("Inference log: writing %d rows failed; kept for the next flush", self.pending)
                break
            if chunk.segment and self.wal is not None:
                self.wal.remove(chunk.segment)
            self._chunks.pop(0)
            written += len(chunk.rows)
        self.rows_written += written
        return written

    def _write(self, rows: list[dict[str, Any]], stamp: str) -> None:
        """Write rows as one parquet file per event day, named ``part-<stamp>.parquet``."""
        frame = _frame(rows)
        day_numbers = pd.DatetimeIndex(frame[self.time_column]).as_unit("ns").asi8 // _NS_PER_DAY
        names = {n: (_EPOCH_DAY + dt.timedelta(days=int(n))).isoformat() for n in set(day_numbers.tolist())}
        days = pd.Series(day_numbers).map(names).to_numpy()
        for day, part in frame.groupby(days, sort=True):
            key = f"{partition_key(AREA, self.dataset, str(day))}/part-{stamp}.parquet"
            self.storage.write_frame(key, part.reset_index(drop=True))
        log.info("Inference log: wrote %d rows over %d day(s)", len(frame), len(names))

    def _run(self) -> None:
        """Flush on size or age until closed."""
        while not self._closed.is_set():
            self._wake.wait(timeout=min(1.0, self.flush_seconds))
            self._wake.clear()
            oldest = self._oldest
            due = oldest is not None and time.monotonic() - oldest >= self.flush_seconds
            if len(self._buffer) >= self.flush_rows or due:
                self.flush()

    def close(self, attempts: int = 3) -> None:
        """Stop the flusher and write everything left; what storage keeps refusing stays on local disk.

        With a WAL its segments stay and are replayed at the next start; without, the rows are spooled to
        ``spool_dir``.
        """
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=30)
        for attempt in range(attempts):
            self.flush()
            if not self.pending:
                break
            time.sleep(0.5 * (attempt + 1))
        if self.wal is not None:
            last = self.wal.close()
            self.wal.seal(last)
            with self._lock:
                if not self._buffer:  # every row was rotated into a stored chunk by the flushes above
                    self.wal.remove(last.paths)
            if self.pending:
                log.error(
                    "Inference log: storage refused %d rows; they stay in %s and are written at the next "
                    "start of the service", self.pending, self.wal.folder,
                )  # fmt: skip
            self.wal.release()
        elif self.pending:
            self._spool()
        log.info("Inference log closed: %d rows written", self.rows_written)

    def _spool(self) -> None:
        """Keep unwritable rows in a local parquet file rather than lose them."""
        rows = [row for chunk in self._chunks for row in chunk.rows] + self._buffer
        self._chunks, self._buffer = [], []
        if self.spool_dir is None:
            log.error("Inference log: %d rows could not be written and no spool folder is set", len(rows))
            return
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / f"inference-{uuid.uuid4().hex[:12]}.parquet"
        pd.DataFrame.from_records(rows).to_parquet(path)
        log.error(
            "Inference log: storage refused %d rows; spooled them to %s (copy them under %s/%s/ once storage "
            "works again)",
            len(rows),
            path,
            AREA,
            self.dataset,
        )


def labelled_answers(
    storage: Storage, use_case: UseCase, days: Sequence[str], as_of: dt.datetime
) -> pd.DataFrame:
    """Return the answers logged for ``days`` with the labels known at ``as_of`` (target NaN if unknown).

    A row answered twice (a replay) counts once, with its latest answer; a corrected label
    counts with its latest correction (``mlloop.labels.known_labels``, as in a training snapshot). Empty
    (no columns beyond the key and target) when nothing was logged for those days.
    """
    key, target = use_case.key_column, use_case.target_column
    served = storage.read_days(AREA, use_case.dataset, days)
    if served is None:
        return pd.DataFrame({key: pd.Series(dtype=object), target: pd.Series(dtype=float)})
    served = served.sort_values("served_at", kind="stable").drop_duplicates(key, keep="last")
    known = read_known_labels(storage, use_case, days, as_of)
    if known is None:
        return served.assign(**{target: float("nan")}).reset_index(drop=True)
    return served.merge(known[[key, target]], on=key, how="left").reset_index(drop=True)
