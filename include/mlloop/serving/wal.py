"""The inference log's write-ahead file: answered rows on local disk before the answer leaves the process.

A segment is two append-only files ("lanes", written in turn between fsyncs) of records, each framed as
``<length u32><crc32 u32><payload>`` (little endian); the payload is one JSON document
``{"dt": [datetime columns], "rows": [...]}``. A write reaches the page cache before the service answers,
so a killed process (SIGKILL, OOM kill) loses nothing; ``fsync`` makes it survive the machine too, per
batch or every few milliseconds (``WalSync``). Reading stops at the first record that is short or fails
its checksum (a torn write) and reports what it cut.

The folder holds one segment per flush of the inference log; a segment is deleted once its rows are in
``inference/``. A lock file keeps a second process off the folder.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

log = logging.getLogger(__name__)
WalSync = Literal["batch", "interval", "off"]
HEADER = struct.Struct("<II")
SUFFIX = ".wal"
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class WalLockedError(RuntimeError):
    """Raised when another live process holds the write-ahead folder."""


def _default(value: Any) -> Any:
    """Serialise what orjson does not: datetime subclasses (pandas Timestamps) as ISO 8601."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"an inference-log value of type {type(value).__name__} cannot be written to the WAL")


def encode(rows: list[dict[str, Any]]) -> bytes:
    """Return one framed record holding ``rows`` (their datetime columns named, to be read back as such)."""
    datetimes = sorted({k for row in rows for k, v in row.items() if isinstance(v, dt.datetime)})
    payload = orjson.dumps({"dt": datetimes, "rows": rows}, default=_default, option=_OPTIONS)
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class SegmentContents:
    """What a segment holds: its rows, its good length in bytes, and what was cut after it."""

    rows: list[dict[str, Any]]
    good_bytes: int
    cut_bytes: int
    records: int


def read_segment(path: Path) -> SegmentContents:
    """Return the rows of every intact record; stop at the first torn or corrupt one."""
    data = path.read_bytes()
    rows: list[dict[str, Any]] = []
    offset = records = 0
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        start, end = offset + HEADER.size, offset + HEADER.size + length
        if end > len(data) or zlib.crc32(data[start:end]) != crc:
            break
        try:
            record = orjson.loads(data[start:end])
        except orjson.JSONDecodeError:
            break
        for row in record["rows"]:
            for column in record["dt"]:
                if row.get(column) is not None:
                    row[column] = dt.datetime.fromisoformat(row[column])
        rows.extend(record["rows"])
        offset, records = end, records + 1
    return SegmentContents(rows, offset, len(data) - offset, records)


def segment_stamp(path: Path) -> str:
    """Return the ``<UTC time>-<12 hex>`` a segment's files are named by (its partition files are too)."""
    return path.name.removesuffix(SUFFIX).rsplit(".", 1)[0]


class Segment:
    """One open segment: two files ("lanes") taking records in turn between group commits.

    The syncer switches lanes before it fsyncs the one just written, so an append never writes into a
    page under writeback (where ``write`` can wait for the disk: measured, up to tens of milliseconds).
    """

    def __init__(self, folder: Path) -> None:
        """Create a new, empty segment in ``folder`` and make its names durable."""
        self.stamp = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        self.paths = tuple(folder / f"{self.stamp}.{lane}{SUFFIX}" for lane in (0, 1))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        self.fds = [os.open(path, flags, 0o600) for path in self.paths]
        self.dirty = [False, False]
        self.lane = 0
        _sync_folder(folder)

    def append(self, record: bytes) -> None:
        """Write one record to the current lane (to the page cache: a killed process keeps it)."""
        lane = self.lane
        view = memoryview(record)
        while view:
            view = view[os.write(self.fds[lane], view) :]
        self.dirty[lane] = True

    def switch(self) -> int:
        """Send the next records to the other lane; return the lane written until now."""
        lane, self.lane = self.lane, self.lane ^ 1
        return lane

    def sync(self, lane: int | None = None) -> None:
        """Flush what was written to ``lane`` (default: the current one) to the disk."""
        lane = self.lane if lane is None else lane
        if self.dirty[lane]:
            self.dirty[lane] = False
            os.fdatasync(self.fds[lane])

    def close(self) -> None:
        """Sync and close both lanes."""
        for lane in (0, 1):
            self.sync(lane)
            os.close(self.fds[lane])
            self.fds[lane] = -1


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a file created or removed in it stays so after a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriteAheadLog:
    """The segments of one dataset's inference log in one local folder, held by one process at a time."""

    def __init__(self, folder: Path, sync: WalSync = "interval", sync_seconds: float = 0.005) -> None:
        """Take the folder's lock; ``sync``: fsync each batch before answering, or every ``sync_seconds``.

        Raises:
            WalLockedError: when another live process holds the folder.
        """
        self.folder = folder
        self.sync_mode = sync
        self.sync_seconds = sync_seconds
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            raise WalLockedError(
                f"another process holds the inference write-ahead folder {folder}; give each scoring "
                "service process its own folder (MLLOOP_INFERENCE_WAL_DIR)"
            ) from exc
        self.recovered: dict[str, list[Path]] = {}  # what an earlier process left, by segment
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            self.recovered.setdefault(segment_stamp(path), []).append(path)
        self.current = Segment(folder)
        self._sync_lock = threading.Lock()  # held while a segment is synced or closed
        self._closed = threading.Event()
        self._dirty = threading.Event()  # a record waits for the syncer
        self._syncer: threading.Thread | None = None
        if sync == "interval":
            self._syncer = threading.Thread(target=self._sync_loop, name="inference-wal-sync", daemon=True)
            self._syncer.start()

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` as one record of the current segment (synced first in ``batch`` mode).

        Called with the inference log's lock held, so records and rotations never interleave.
        """
        self.current.append(encode(rows))
        if self.sync_mode == "batch":
            self.current.sync()
        elif not self._dirty.is_set():
            self._dirty.set()

    def rotate(self) -> Segment:
        """Start a new segment; return the previous one, still open (``seal`` it outside the log's lock)."""
        previous, self.current = self.current, Segment(self.folder)
        return previous

    def seal(self, segment: Segment) -> None:
        """Sync and close a rotated segment: from now on it holds exactly the rows it was given."""
        with self._sync_lock:
            segment.close()

    def remove(self, paths: Sequence[Path]) -> None:
        """Delete a segment's files (its rows are stored)."""
        for path in paths:
            path.unlink(missing_ok=True)
        _sync_folder(self.folder)

    def _sync_loop(self) -> None:
        """Group commit: once a record arrives, wait ``sync_seconds`` for more, then fsync them together."""
        while True:
            self._dirty.wait()
            if self._closed.wait(self.sync_seconds):
                return
            self._dirty.clear()
            with self._sync_lock:  # a rotated segment is closed only under this lock, by its seal
                segment = self.current
                if not self._closed.is_set():
                    segment.sync(segment.switch())

    def close(self) -> Segment:
        """Stop syncing; return the current segment (to be sealed and stored by the caller)."""
        self._closed.set()
        self._dirty.set()
        if self._syncer is not None:
            self._syncer.join(timeout=5)
        return self.current

    def release(self) -> None:
        """Release the folder's lock (the process is done with it)."""
        os.close(self._lock_fd)


def recover(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Return the rows of a segment left by an earlier process (lane by lane); log any torn tail cut."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        contents = read_segment(path)
        if contents.cut_bytes:
            log.warning(
                "Inference WAL %s: cut a torn or corrupt tail of %d bytes after %d intact records (%d rows "
                "kept); it was never answered in full",
                path,
                contents.cut_bytes,
                contents.records,
                len(contents.rows),
            )
        rows.extend(contents.rows)
    return rows
