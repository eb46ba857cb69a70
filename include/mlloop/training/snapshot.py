"""Content-addressed training sets (DVC-like) built from validated partitions, and their time split.

A snapshot is one canonical Parquet file and its manifest::

    snapshots/<sha256>/data.parquet    rows sorted by key, fixed column order, no volatile metadata
    snapshots/<sha256>/manifest.json   sources (partitions and batch ids), counts, time range,
                                       feature spec version and fingerprint, labels known, digest

The digest is the sha256 of the data bytes, so the same inputs give the same snapshot and a re-run
writes nothing; ``load_snapshot`` re-hashes the bytes and refuses a file that does not match. The
bytes are canonical for the pinned pyarrow (its version is the Parquet ``created_by`` field). The
first manifest of a digest is kept: the same data reached again (say with a later ``as_of`` that
adds no label) returns that manifest unchanged.

Columns: ``key, time, target, LABEL_KNOWN_COLUMN, *feature_columns(spec)``.

Labels not known yet: a label counts only if its ``label_time`` is at or before ``as_of``, and a corrected
label counts with its latest correction (``mlloop.labels.known_labels``, the one rule). Rows whose
label is not known by then are *kept*, with a null target and ``label_known`` false: dropping them
would silently bias the set (positives are often confirmed later than negatives, as chargebacks are,
so recent days look cleaner than they are) and they still serve unsupervised checks. Training filters on
``label_known``; the manifest counts known and unknown labels per day so the bias is visible. The
label time itself is not kept: its delay differs by class, which would leak the target.

History features need the days before the window: up to the longest history window of earlier
validated partitions is read as context (rows used for history only, not kept). A missing context
day is recorded in the manifest, not an error; a missing window day is.

Bounded memory: above ``MLLOOP_SNAPSHOT_CHUNK_ROWS`` rows (window plus context) the snapshot is built in
entity parts (``mlloop.training.chunked``): rows are split by a hash of the history entity, so each
entity's events stay together and in order, every part goes through the same feature function, feature
suite and label join as the whole window would, and the key-sorted parts are merged into the same
canonical file, row group by row group. The bytes, hence the digest, do not depend on the chunk size.
Peak memory then follows the chunk size and the labels frame (which the caller still passes whole).
Two checks are per part there, not over the whole window: the feature suite runs on each part (every
part must pass; its results are listed at the snapshot's report key), so a table-level expectation such
as a row-count bound sees a part, not the window; and a key found twice is refused at the merge among
the window's rows (the in-memory path also compares them with the context days' keys).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from mlloop.config import get_settings
from mlloop.features.spec import FeatureSpec, feature_columns
from mlloop.labels import LABEL_TIME_COLUMN, known_labels
from mlloop.orchestration.names import dag_names
from mlloop.storage import Storage, StorageError, StorageUnavailableError, partition_key
from mlloop.training.chunked import (
    Progress,
    key_range_bounds,
    merge_sorted_parts,
    partition_by_entity,
    read_part,
    write_sorted_part,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from mlloop.usecase import UseCase
    from mlloop.validation.report import ValidationReport

log = logging.getLogger(__name__)

SNAPSHOT_AREA = "snapshots"
LABEL_KNOWN_COLUMN = "label_known"
VALIDATED_AREA = "validated"
PARQUET_COMPRESSION = "zstd"
ROW_GROUP_ROWS = 1 << 20  # pyarrow's default, pinned: both snapshot paths cut row groups here
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_DIGEST_IN_KEY = re.compile(rf"(?:^|/){SNAPSHOT_AREA}/([0-9a-f]{{64}})(?:/|$)")


class SnapshotError(RuntimeError):
    """Raised when a snapshot cannot be created or loaded; the message names the cause and the fix."""


class MissingPartitionsError(SnapshotError):
    """Raised when validated partitions of the requested window are missing."""

    def __init__(self, message: str, missing_days: list[str]) -> None:
        super().__init__(message)
        self.missing_days = missing_days


class SnapshotIntegrityError(SnapshotError):
    """Raised when a snapshot's bytes do not hash to its digest."""


class FeatureContractError(SnapshotError):
    """Raised when the built features fail the use case's feature suite; nothing is written."""

    def __init__(self, message: str, report_uri: str) -> None:
        super().__init__(message)
        self.report_uri = report_uri


class SourcePartition(BaseModel):
    """One validated partition read for a snapshot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    day: str
    key: str
    batch_id: str
    rows: int
    role: Literal["window", "context"]


class LabelCounts(BaseModel):
    """How many rows have a label known by ``as_of``, and the mean of the known targets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    known: int
    unknown: int
    target_mean: float | None


class FeatureValidation(BaseModel):
    """The feature-suite outcome recorded with a snapshot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str
    success: bool
    evaluated: int
    report_key: str


class SnapshotManifest(BaseModel):
    """What a snapshot holds and where it came from (``snapshots/<digest>/manifest.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    digest: str
    data_key: str
    manifest_key: str
    use_case: str
    dataset: str
    days: list[str]
    as_of: datetime
    key_column: str
    time_column: str
    target_column: str
    label_known_column: str
    feature_spec_version: str
    feature_spec_fingerprint: str
    feature_spec: dict[str, Any]
    feature_columns: list[str]
    columns: list[str]
    column_dtypes: dict[str, str]
    row_count: int
    time_start: datetime | None
    time_end: datetime | None
    source_partitions: list[SourcePartition]
    context_days_missing: list[str]
    labels: LabelCounts
    labels_per_day: dict[str, LabelCounts]
    feature_validation: FeatureValidation | None
    parquet: dict[str, str]

    def spec(self) -> FeatureSpec:
        """Return the feature spec the snapshot was built with."""
        return FeatureSpec.model_validate(self.feature_spec)


def snapshot_keys(digest: str) -> tuple[str, str]:
    """Return the data and manifest keys of snapshot ``digest``."""
    folder = f"{SNAPSHOT_AREA}/{digest}"
    return f"{folder}/data.parquet", f"{folder}/manifest.json"


def create_snapshot(
    storage: Storage,
    use_case: UseCase,
    days: list[date],
    *,
    labels: pd.DataFrame | None,
    as_of: datetime,
    label_time_column: str = LABEL_TIME_COLUMN,
    validate: bool = True,
    chunk_rows: int | None = None,
) -> SnapshotManifest:
    """Build features for ``days`` of validated data, join labels known by ``as_of``, store one snapshot.

    Args:
        storage: the storage root holding ``validated/<dataset>/date=D/``.
        use_case: the declaration (dataset, key/time/target columns, feature spec, feature suite).
        days: the window; every day needs exactly one validated batch.
        labels: key, target and ``label_time_column`` rows (any days), or None when none are known yet.
        as_of: a timezone-aware instant; only labels with ``label_time <= as_of`` are used.
        label_time_column: the labels' column saying when each label became known.
        validate: run the use case's ``features`` suite on the built features before writing.
        chunk_rows: rows above which (window plus history context) the snapshot is built in entity parts
            of about this many rows, in bounded memory; None takes ``MLLOOP_SNAPSHOT_CHUNK_ROWS``. Both
            ways give the same bytes, so the same digest.

    Returns:
        The manifest; an identical existing snapshot is returned as it is, not rewritten.

    Raises:
        MissingPartitionsError: naming the days without a validated batch and how to produce them.
        FeatureContractError: when the features fail their suite (report kept, nothing written).
        SnapshotError: for ambiguous partitions, duplicate keys, or bad arguments.
    """
    started = time.perf_counter()
    window, as_of_ts = _check_request(use_case, days, as_of)
    parts, context_missing = _window_partitions(storage, use_case, window)
    chunk = chunk_rows if chunk_rows is not None else get_settings().snapshot_chunk_rows
    if chunk < 1:
        raise SnapshotError(
            f"create_snapshot: chunk_rows={chunk} must be at least 1 (MLLOOP_SNAPSHOT_CHUNK_ROWS)"
        )
    known = _known_targets(use_case, labels, as_of_ts, label_time_column)
    total_rows = sum(_parquet_rows(storage, key) for _, key, _ in parts)
    if total_rows > chunk:
        log.info(
            "Snapshot of %d rows (window and history context) over %d-row chunks: streamed by entity parts",
            total_rows,
            chunk,
        )
        return _create_streamed(
            storage,
            use_case,
            window,
            parts,
            context_missing,
            known=known,
            as_of=as_of_ts,
            chunk_rows=chunk,
            validate=validate,
            started=started,
        )

    validated, in_window, sources = _read_window(storage, use_case, parts)
    features = window_features(validated, in_window, use_case)
    snapshot = _attach_labels(features, use_case, known)
    snapshot = snapshot.sort_values(use_case.key_column, kind="mergesort").reset_index(drop=True)
    data = canonical_parquet_bytes(snapshot)
    digest = hashlib.sha256(data).hexdigest()
    data_key = snapshot_keys(digest)[0]
    existing = _existing_snapshot(storage, digest, len(snapshot), len(data))
    if existing is not None:
        return existing

    feature_validation = None
    if validate:
        report_key = _suite_report_key(use_case, digest)
        report = _validate_features(storage, use_case, features, report_key)
        feature_validation = FeatureValidation(
            suite=report.suite, success=True, evaluated=report.evaluated, report_key=report_key
        )
    manifest = _describe(
        _Summary.of(snapshot, use_case),
        use_case,
        digest=digest,
        window=window,
        as_of=as_of_ts,
        sources=sources,
        context_missing=context_missing,
        feature_validation=feature_validation,
    )
    if not storage.exists(data_key) or hashlib.sha256(storage.read_bytes(data_key)).hexdigest() != digest:
        storage.write_bytes(data_key, data)
    return _commit(storage, manifest, started)


def window_features(validated: pd.DataFrame, in_window: Any, use_case: UseCase) -> pd.DataFrame:
    """Build the use case's features over validated rows (window and history context), keep the window's.

    The one feature step of a snapshot, whether it holds the whole window or one entity part of it.
    """
    from mlloop.features.build import build_features

    return build_features(
        validated,
        use_case.features,
        key_column=use_case.key_column,
        time_column=use_case.time_column,
    ).loc[in_window]


def _commit(storage: Storage, manifest: SnapshotManifest, started: float) -> SnapshotManifest:
    """Write the manifest (its presence commits the snapshot, so it goes last) and log the outcome."""
    _write_manifest(storage, manifest)
    log.info(
        "Wrote snapshot %s: %d rows, %d known labels, in %.1fs",
        storage.uri(f"{SNAPSHOT_AREA}/{manifest.digest}"),
        manifest.row_count,
        manifest.labels.known,
        time.perf_counter() - started,
    )
    return manifest


def _create_streamed(
    storage: Storage,
    use_case: UseCase,
    window: list[date],
    parts: list[tuple[str, str, str]],
    context_missing: list[str],
    *,
    known: pd.Series,
    as_of: pd.Timestamp,
    chunk_rows: int,
    validate: bool,
    started: float,
) -> SnapshotManifest:
    """Build the snapshot in entity parts of about ``chunk_rows`` rows: memory bounded by the part size.

    Rows are split by a hash of the history entity (each entity's events, window and context, in one
    part, in the order ``_read_window`` reads them), each part goes through the very same feature, suite
    and label steps as the whole window would, and the key-sorted parts are merged into the canonical
    Parquet file: the bytes, so the digest, are those of the in-memory path.
    """
    import pyarrow as pa

    key = use_case.key_column
    history = use_case.features.history
    sources = [
        SourcePartition(day=day, key=k, batch_id=_batch_id(k), rows=_parquet_rows(storage, k), role=role)
        for day, k, role in parts
    ]
    total = sum(s.rows for s in sources)
    n_parts = max(1, math.ceil(total / chunk_rows))
    suite_reports: list[str] = []
    evaluated = 0
    with tempfile.TemporaryDirectory(prefix="mlloop-snapshot-") as scratch:
        folder = Path(scratch)
        entity_parts = partition_by_entity(
            (pa.BufferReader(storage.read_bytes(s.key)) for s in sources),
            history.entity_column if history is not None else key,
            n_parts,
            folder,
            leading_sources=sum(1 for s in sources if s.role == "window"),
            total_rows=total,
        )
        log.info(
            "Split %d rows of %d partitions into %d entity parts under %s",
            total,
            len(sources),
            n_parts,
            folder,
        )
        progress = Progress("Snapshot features", sum(entity_parts.leading_rows))
        summary: _Summary | None = None
        samples: list[Any] = []
        sorted_parts, schemas = [], []
        for number, path in enumerate(entity_parts.paths):
            validated = read_part(path)
            path.unlink()
            features = window_features(
                validated, validated.index < entity_parts.leading_rows[number], use_case
            )
            del validated
            if validate and len(features):
                report_key = (
                    f"reports/validation/{use_case.dataset}/snapshots/parts/"
                    f"{window[0].isoformat()}_{window[-1].isoformat()}_{number:05d}-of-{n_parts:05d}.json"
                )
                evaluated = _validate_features(storage, use_case, features, report_key).evaluated
                suite_reports.append(report_key)
            chunk = _attach_labels(features, use_case, known)
            del features
            if len(chunk):
                part_summary = _Summary.of(chunk, use_case)
                summary = part_summary if summary is None else summary
                if summary is not part_summary:
                    summary.add(part_summary)
            table = canonical_table(chunk)
            sorted_parts.append(folder / f"sorted-{number:05d}.arrow")
            samples += write_sorted_part(table, key, sorted_parts[-1])
            schemas.append(table.schema)
            progress.advance(len(chunk), f"entity part {number + 1}/{n_parts}")
            del chunk, table
        if summary is None:
            raise SnapshotError(
                "create_snapshot: the window's validated batches hold no rows; ingest data first"
            )

        def refuse_duplicates(ranged: pa.Table) -> None:
            """Refuse a key held by two rows (adjacent in a key-sorted range)."""
            import pyarrow.compute as pc

            keys = ranged.column(key)
            if len(keys) > 1:
                repeated = pc.equal(keys.slice(1), keys.slice(0, len(keys) - 1))
                if pc.any(repeated).as_py():
                    duplicated = keys.slice(1).filter(repeated).to_pylist()
                    _refuse_duplicates(use_case, 2 * len(duplicated), duplicated)

        data_path = folder / "data.parquet"
        merge_sorted_parts(
            sorted_parts,
            key,
            key_range_bounds(samples, chunk_rows),
            data_path,
            schema=pa.unify_schemas(schemas),
            row_group_rows=ROW_GROUP_ROWS,
            compression=PARQUET_COMPRESSION,
            check_range=refuse_duplicates,
        )
        digest = _file_sha256(data_path)
        existing = _existing_snapshot(storage, digest, summary.rows, data_path.stat().st_size)
        if existing is not None:
            return existing
        feature_validation = None
        if validate:
            report_key = _suite_report_key(use_case, digest)
            storage.write_json(
                report_key, {"success": True, "parts": [storage.uri(k) for k in suite_reports]}
            )
            feature_validation = FeatureValidation(
                suite=_feature_suite(use_case), success=True, evaluated=evaluated, report_key=report_key
            )
        manifest = _describe(
            summary,
            use_case,
            digest=digest,
            window=window,
            as_of=as_of,
            sources=sources,
            context_missing=context_missing,
            feature_validation=feature_validation,
        )
        storage.write_file(manifest.data_key, data_path)
    return _commit(storage, manifest, started)


def _existing_snapshot(storage: Storage, digest: str, rows: int, size: int) -> SnapshotManifest | None:
    """Return the manifest of snapshot ``digest`` when it is already stored (it is not rewritten)."""
    data_key, manifest_key = snapshot_keys(digest)
    log.info("Snapshot of %d rows is %s (%d bytes)", rows, digest, size)
    if storage.exists(manifest_key) and storage.exists(data_key):
        log.info("Snapshot %s already exists at %s; not rewriting it", digest, storage.uri(manifest_key))
        return SnapshotManifest.model_validate(storage.read_json(manifest_key))
    return None


def _suite_report_key(use_case: UseCase, digest: str) -> str:
    """Return where the feature-suite result of snapshot ``digest`` is kept."""
    return f"reports/validation/{use_case.dataset}/snapshots/{digest}.json"


def _parquet_rows(storage: Storage, key: str) -> int:
    """Return the row count a Parquet object's footer records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(pa.BufferReader(storage.read_bytes(key))).metadata.num_rows)


def _file_sha256(path: Path) -> str:
    """Return the sha256 of a local file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_request(use_case: UseCase, days: list[date], as_of: datetime) -> tuple[list[date], pd.Timestamp]:
    """Return the window's sorted days and ``as_of`` in UTC; refuse an empty window or clashing names."""
    window = sorted(set(days))
    if not window:
        raise SnapshotError(
            "create_snapshot: no days given; pass the window's days, e.g. [date(2026, 11, 20)]"
        )
    reserved = {use_case.key_column, use_case.time_column, use_case.target_column, LABEL_KNOWN_COLUMN}
    clashing = sorted(reserved & set(feature_columns(use_case.features)))
    if clashing:
        raise SnapshotError(
            f"create_snapshot: feature names {clashing} clash with the snapshot's key/time/label columns; "
            "rename them in the use case's features"
        )
    return window, _utc_instant(as_of)


def _window_partitions(
    storage: Storage, use_case: UseCase, window: list[date]
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Return the window's validated batches then the history context's, and the context days without one.

    Raises:
        MissingPartitionsError: naming the window's days without a validated batch.
    """
    window_parts, missing = _find_partitions(storage, use_case, window, role="window")
    if missing:
        raise MissingPartitionsError(
            f"create_snapshot: no validated {use_case.dataset} batch for {len(missing)} day(s) of the "
            f"window: {', '.join(missing)} (looked under "
            f"{storage.uri(f'{VALIDATED_AREA}/{use_case.dataset}')}/). "
            f"Ingest them first (trigger the {dag_names(use_case.name).ingest} DAG for each day; a "
            "quarantined day has a reason.json under quarantine/), or leave them out of the window.",
            missing,
        )
    context_days = _context_days(window, use_case.features)
    context_parts, context_missing = _find_partitions(storage, use_case, context_days, role="context")
    if context_missing:
        log.warning(
            "History context: no validated batch for %s; history features of the first window days see "
            "less history (recorded in the manifest)",
            ", ".join(context_missing),
        )
    return window_parts + context_parts, context_missing


def _read_window(
    storage: Storage, use_case: UseCase, parts: list[tuple[str, str, str]]
) -> tuple[pd.DataFrame, Any, list[SourcePartition]]:
    """Read the validated batches (window first, then history context) into one frame.

    Returns the rows, a mask of the window's rows and the partitions read.

    Raises:
        SnapshotError: when one key is in two batches.
    """
    import pandas as pd

    frames, sources = [], []
    for day, key, role in parts:
        frame = storage.read_frame(key)
        log.info("Read %d rows of %s (%s)", len(frame), storage.uri(key), role)
        frames.append(frame)
        sources.append(SourcePartition(day=day, key=key, batch_id=_batch_id(key), rows=len(frame), role=role))
    validated = pd.concat(frames, ignore_index=True)
    in_window = validated.index < sum(s.rows for s in sources if s.role == "window")
    duplicated = validated[use_case.key_column].duplicated(keep=False)
    if duplicated.any():
        _refuse_duplicates(use_case, int(duplicated.sum()), validated.loc[duplicated, use_case.key_column])
    return validated, in_window, sources


def _refuse_duplicates(use_case: UseCase, count: int, keys: Any) -> None:
    """Raise the error of a key found in two batches, with a few of the keys."""
    sample = list(keys[:5])
    raise SnapshotError(
        f"create_snapshot: {count} rows share a {use_case.key_column} across the partitions read (e.g. "
        f"{sample}); one row is in two batches. Remove the stale batch from validated/ (raw/ keeps every "
        "delivery) and retry."
    )


@dataclass
class _LabelTally:
    """Known and unknown label counts and the sum of the known targets, mergeable across chunks."""

    known: int = 0
    unknown: int = 0
    total: float = 0.0
    summed: int = 0  # known targets that are not null (what the mean divides by)

    def add(self, other: _LabelTally) -> None:
        """Add another chunk's tally."""
        self.known += other.known
        self.unknown += other.unknown
        self.total += other.total
        self.summed += other.summed

    def counts(self) -> LabelCounts:
        """Return the counts with the mean of the known targets."""
        mean = self.total / self.summed if self.summed else (float("nan") if self.known else None)
        return LabelCounts(known=self.known, unknown=self.unknown, target_mean=mean)


@dataclass
class _Summary:
    """What a manifest says about a snapshot's rows; built from the whole frame or merged over chunks.

    Merged over chunks, a float target's mean may differ from the whole frame's in the last bits (the
    sums are added in another order); counts and 0/1 targets are exact.
    """

    columns: list[str]
    dtypes: dict[str, str]
    rows: int
    time_start: Any
    time_end: Any
    labels: _LabelTally
    per_day: dict[str, _LabelTally]

    @classmethod
    def of(cls, snapshot: pd.DataFrame, use_case: UseCase) -> _Summary:
        """Summarise a snapshot frame (or one chunk of it)."""
        target, when = use_case.target_column, use_case.time_column
        days = snapshot[when].dt.tz_convert("UTC").dt.normalize()
        return cls(
            columns=[str(c) for c in snapshot.columns],
            dtypes={str(c): str(t) for c, t in snapshot.dtypes.items()},
            rows=len(snapshot),
            time_start=snapshot[when].min(),
            time_end=snapshot[when].max(),
            labels=_label_tally(snapshot, target),
            per_day={
                day.strftime("%Y-%m-%d"): _label_tally(part, target) for day, part in snapshot.groupby(days)
            },
        )

    def add(self, other: _Summary) -> None:
        """Merge another chunk's summary into this one."""
        if other.rows == 0:
            return
        if self.rows == 0:
            self.time_start, self.time_end = other.time_start, other.time_end
        else:
            self.time_start = min(self.time_start, other.time_start)
            self.time_end = max(self.time_end, other.time_end)
        self.rows += other.rows
        self.labels.add(other.labels)
        for day, tally in other.per_day.items():
            self.per_day.setdefault(day, _LabelTally()).add(tally)


def _describe(
    summary: _Summary,
    use_case: UseCase,
    *,
    digest: str,
    window: list[date],
    as_of: pd.Timestamp,
    sources: list[SourcePartition],
    context_missing: list[str],
    feature_validation: Any,
) -> SnapshotManifest:
    """Return the manifest of a snapshot: where it lives, what it holds, where it came from."""
    spec = use_case.features
    data_key, manifest_key = snapshot_keys(digest)
    return SnapshotManifest(
        digest=digest,
        data_key=data_key,
        manifest_key=manifest_key,
        use_case=use_case.name,
        dataset=use_case.dataset,
        days=[d.isoformat() for d in window],
        as_of=as_of.to_pydatetime(),
        key_column=use_case.key_column,
        time_column=use_case.time_column,
        target_column=use_case.target_column,
        label_known_column=LABEL_KNOWN_COLUMN,
        feature_spec_version=spec.version,
        feature_spec_fingerprint=spec.fingerprint(),
        feature_spec=spec.model_dump(mode="json"),
        feature_columns=feature_columns(spec),
        columns=summary.columns,
        column_dtypes=summary.dtypes,
        row_count=summary.rows,
        time_start=_instant_or_none(summary.time_start),
        time_end=_instant_or_none(summary.time_end),
        source_partitions=sources,
        context_days_missing=context_missing,
        labels=summary.labels.counts(),
        labels_per_day={day: summary.per_day[day].counts() for day in sorted(summary.per_day)},
        feature_validation=feature_validation,
        parquet={"compression": PARQUET_COMPRESSION, "pyarrow": _pyarrow_version()},
    )


def load_snapshot(storage: Storage, digest_or_uri: str) -> tuple[pd.DataFrame, SnapshotManifest]:
    """Read a snapshot by digest, key or URI (folder, data or manifest), verifying its digest.

    Raises:
        SnapshotError: when the reference names no snapshot or the snapshot does not exist.
        SnapshotIntegrityError: when the stored bytes do not hash to the digest.
    """
    import pyarrow.parquet as pq

    from mlloop.features.build import categorical_dtype

    digest = _digest_of(storage, digest_or_uri)
    data_key, manifest_key = snapshot_keys(digest)
    try:
        manifest = SnapshotManifest.model_validate(storage.read_json(manifest_key))
        data = storage.read_bytes(data_key)
    except StorageUnavailableError:
        raise  # the store failed, not the snapshot: its message says which endpoint and what to check
    except StorageError as exc:
        raise SnapshotError(
            f"snapshot {digest} is not complete under {storage.root}: {exc}. Create it with "
            "create_snapshot (its data is written before its manifest), or check the data root."
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest or manifest.digest != digest:
        raise SnapshotIntegrityError(
            f"snapshot {storage.uri(data_key)} hashes to {actual}, not {digest} (manifest says "
            f"{manifest.digest}): the object was altered or corrupted. Do not train on it; delete "
            f"{storage.uri(f'{SNAPSHOT_AREA}/{digest}')}/ and recreate it from the partitions its "
            "manifest lists."
        )
    frame = pq.read_table(io.BytesIO(data)).to_pandas()
    spec = manifest.spec()
    if (
        feature_columns(spec) != manifest.feature_columns
        or spec.fingerprint() != manifest.feature_spec_fingerprint
    ):
        raise SnapshotIntegrityError(
            f"snapshot {digest}: its manifest's feature spec does not match its feature columns or "
            "fingerprint; the manifest was edited. Recreate the snapshot."
        )
    vocabularies = spec.categorical
    for column, dtype in manifest.column_dtypes.items():
        if column in vocabularies:
            frame[column] = frame[column].astype(categorical_dtype(vocabularies[column]))
        elif str(frame[column].dtype) != dtype:
            frame[column] = frame[column].astype(dtype)
    log.info("Loaded snapshot %s: %d rows, digest verified", digest, len(frame))
    return frame[manifest.columns], manifest


def canonical_table(frame: pd.DataFrame) -> pa.Table:
    """Return ``frame`` as a snapshot stores it: no index or schema metadata, categoricals as text.

    ``load_snapshot`` restores the declared vocabularies.
    """
    import pandas as pd
    import pyarrow as pa

    plain = frame.copy()
    for column in plain.columns:
        if isinstance(plain[column].dtype, pd.CategoricalDtype):
            plain[column] = plain[column].astype(object).where(plain[column].notna(), None)
    return pa.Table.from_pandas(plain, preserve_index=False).replace_schema_metadata(None)


def canonical_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Return ``frame`` as Parquet bytes that depend only on its values, columns and dtypes.

    One compression and one row-group size, pinned (the streamed path writes the same row groups).
    """
    return canonical_table_bytes(canonical_table(frame))


def canonical_table_bytes(table: pa.Table) -> bytes:
    """Return a canonical table (``canonical_table``'s, or a row subset of a stored one) as snapshot bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=PARQUET_COMPRESSION,
        store_schema=False,
        row_group_size=ROW_GROUP_ROWS,
    )
    return sink.getvalue().to_pybytes()


def rewrite_snapshot(
    storage: Storage,
    use_case: UseCase,
    manifest: SnapshotManifest,
    kept: pa.Table,
    sources: list[SourcePartition],
) -> SnapshotManifest:
    """Store ``kept``, a row subset of ``manifest``'s snapshot, as a new snapshot under its own digest.

    Its manifest is the old one's (window, ``as_of``, spec, feature validation) with the new digest, row
    counts, time range and label counts, and ``sources`` as its partitions. The old snapshot is left for the
    caller to remove (write new, then remove old). Used by erasure (``mlloop.lifecycle.erasure``).
    """
    started = time.perf_counter()
    data = canonical_table_bytes(kept)
    digest = hashlib.sha256(data).hexdigest()
    data_key, manifest_key = snapshot_keys(digest)
    summary = _Summary.of(kept.to_pandas(), use_case)
    rewritten = manifest.model_copy(
        update={
            "digest": digest,
            "data_key": data_key,
            "manifest_key": manifest_key,
            "row_count": summary.rows,
            "time_start": _instant_or_none(summary.time_start),
            "time_end": _instant_or_none(summary.time_end),
            "labels": summary.labels.counts(),
            "labels_per_day": {day: summary.per_day[day].counts() for day in sorted(summary.per_day)},
            "source_partitions": sources,
        }
    )
    storage.write_bytes(data_key, data)
    return _commit(storage, rewritten, started)


@dataclass(frozen=True)
class Split:
    """A time-ordered split: every train time < every validation time < every holdout time."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    validation_start: pd.Timestamp | None
    holdout_start: pd.Timestamp | None

    def sizes(self) -> dict[str, int]:
        """Return the row count of each part."""
        return {"train": len(self.train), "validation": len(self.validation), "holdout": len(self.holdout)}


def time_split(
    frame: pd.DataFrame, time_column: str, *, validation_fraction: float, holdout_fraction: float
) -> Split:
    """Split ``frame`` by time into train, validation and holdout (the latest rows), without leakage.

    The cut points are the times at the requested fractions of the time-sorted rows; every row at a
    cut time goes to the later part, so the parts never share a timestamp (sizes may drift from the
    fractions when many rows tie). Each part is in time order and keeps the frame's index.

    Raises:
        ValueError: for fractions outside [0, 1) or summing to 1 or more, null times, or a requested
            part that comes out empty (naming the sizes and the fix).
    """
    for name, value in (("validation_fraction", validation_fraction), ("holdout_fraction", holdout_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"time_split: {name}={value} must be in [0, 1)")
    if validation_fraction + holdout_fraction >= 1.0:
        raise ValueError(
            f"time_split: validation_fraction + holdout_fraction = {validation_fraction + holdout_fraction} "
            "leaves nothing to train on; keep their sum below 1"
        )
    import pandas as pd

    times = frame[time_column]
    if times.isna().any():
        raise ValueError(
            f"time_split: {int(times.isna().sum())} rows have a null {time_column!r}; drop them first"
        )
    ordered = frame.sort_values(time_column, kind="mergesort")
    sorted_times = ordered[time_column]
    n = len(ordered)
    n_holdout = round(n * holdout_fraction)
    n_validation = round(n * validation_fraction)
    holdout_start = sorted_times.iloc[n - n_holdout] if n_holdout else None
    validation_start = sorted_times.iloc[n - n_holdout - n_validation] if n_validation else None

    nowhere = pd.Series(False, index=sorted_times.index)
    in_holdout = sorted_times >= holdout_start if holdout_start is not None else nowhere
    in_validation = (
        (sorted_times >= validation_start) & ~in_holdout if validation_start is not None else nowhere
    )
    split = Split(
        train=ordered[~in_holdout & ~in_validation],
        validation=ordered[in_validation],
        holdout=ordered[in_holdout],
        validation_start=validation_start,
        holdout_start=holdout_start,
    )
    sizes = split.sizes()
    empty = [
        part
        for part, wanted in (
            ("train", True),
            ("validation", validation_fraction > 0),
            ("holdout", holdout_fraction > 0),
        )
        if wanted and sizes[part] == 0
    ]
    if empty:
        raise ValueError(
            f"time_split: {', '.join(empty)} came out empty ({sizes} from {n} rows; rows at a cut time go to "
            "the later part). Use more days of data, other fractions, or a fraction of 0 for a part you "
            "do not need."
        )
    log.info(
        "Time split of %d rows: %s (validation from %s, holdout from %s)",
        n,
        sizes,
        validation_start,
        holdout_start,
    )
    return split


def _utc_instant(as_of: datetime) -> pd.Timestamp:
    """Return ``as_of`` as a UTC timestamp; reject a naive datetime."""
    import pandas as pd

    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise SnapshotError(
            f"as_of {as_of!r} has no timezone; label times are UTC, pass a timezone-aware datetime such "
            "as datetime(2026, 11, 30, tzinfo=UTC)"
        )
    return pd.Timestamp(as_of).tz_convert("UTC")


def _instant_or_none(value: Any) -> datetime | None:
    """Return a pandas timestamp as a datetime (None for NaT)."""
    import pandas as pd

    return None if pd.isna(value) else pd.Timestamp(value).to_pydatetime()


def _context_days(window: list[date], spec: FeatureSpec) -> list[date]:
    """Return the days before each window day that history features may look into, outside the window."""
    if spec.history is None:
        return []
    reach = math.ceil(spec.history.lookback / timedelta(days=1))
    wanted = {day - timedelta(days=k) for day in window for k in range(1, reach + 1)}
    return sorted(wanted - set(window))


def _find_partitions(
    storage: Storage, use_case: UseCase, days: list[date], *, role: str
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Return ``(day, key, role)`` of each day's validated batch and the days that have none.

    Raises:
        SnapshotError: when a day holds more than one validated batch (which one is current is unknown).
    """
    found, missing = [], []
    for day in days:
        prefix = partition_key(VALIDATED_AREA, use_case.dataset, day)
        keys = [k for k in storage.list(prefix) if k.endswith(".parquet")]
        if not keys:
            missing.append(day.isoformat())
        elif len(keys) > 1:
            raise SnapshotError(
                f"create_snapshot: {storage.uri(prefix)} holds {len(keys)} validated batches "
                f"({', '.join(_batch_id(k) for k in keys)}); a snapshot needs exactly one per day. Delete "
                "the superseded batch from validated/ (raw/ keeps every delivery) and retry."
            )
        else:
            found.append((day.isoformat(), keys[0], role))
    return found, missing


def _batch_id(key: str) -> str:
    """Return the batch id of a validated partition object (its file name without extension)."""
    return key.rsplit("/", 1)[-1].removesuffix(".parquet")


def _known_targets(
    use_case: UseCase, labels: pd.DataFrame | None, as_of: pd.Timestamp, label_time_column: str
) -> pd.Series:
    """Return the target of every key whose label is known by ``as_of`` (its latest correction), by key.

    An integer or boolean target becomes a pandas nullable dtype, so a missing label stays missing; without
    labels the result is an empty float series (every target unknown, NaN).
    """
    import numpy as np
    import pandas as pd

    key, target = use_case.key_column, use_case.target_column
    if labels is None:
        return pd.Series(dtype=np.float64, index=pd.Index([], dtype=object, name=key), name=target)
    missing = [c for c in (key, target, label_time_column) if c not in labels.columns]
    if missing:
        raise SnapshotError(
            f"create_snapshot: the labels frame lacks columns {missing}; it needs {key!r}, {target!r} "
            f"and {label_time_column!r} (pass label_time_column= if yours is named differently)"
        )
    chosen = known_labels(labels, as_of, key_column=key, label_time_column=label_time_column)
    known = pd.Series(
        _nullable(chosen[target]).array, index=pd.Index(chosen[key].to_numpy(), name=key), name=target
    )
    if not known.index.is_unique:
        raise SnapshotError(
            f"create_snapshot: the known labels hold a {key} twice after picking each key's latest "
            "correction; the labels frame is malformed (check known_labels' input)"
        )
    return known


def _attach_labels(features: pd.DataFrame, use_case: UseCase, known: pd.Series) -> pd.DataFrame:
    """Return ``key, time, target, label_known, *features`` with the known targets (``_known_targets``).

    A row without a known label keeps a null target (NaN, or NA for nullable dtypes).
    """
    import pandas as pd

    key, time_column, target = use_case.key_column, use_case.time_column, use_case.target_column
    position = known.index.get_indexer(features[key].to_numpy())
    front = pd.DataFrame(
        {
            key: features[key].array,
            time_column: features[time_column].array,
            target: known.array.take(position, allow_fill=True),
            LABEL_KNOWN_COLUMN: position >= 0,
        },
        index=features.index,
    )
    rest = [c for c in features.columns if c not in (key, time_column)]
    return pd.concat([front, features[rest]], axis=1)


def _nullable(values: pd.Series) -> pd.Series:
    """Return integer or boolean targets as pandas nullable dtypes, so a missing label stays missing."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean")
    if pd.api.types.is_integer_dtype(values.dtype) and isinstance(values.dtype, np.dtype):
        return values.astype(f"Int{values.dtype.itemsize * 8}")
    return values


def _label_tally(frame: pd.DataFrame, target: str) -> _LabelTally:
    """Count known and unknown labels and sum the known targets."""
    known = frame[LABEL_KNOWN_COLUMN]
    n_known = int(known.sum())
    targets = frame.loc[known, target].astype(float) if n_known else None
    return _LabelTally(
        known=n_known,
        unknown=len(frame) - n_known,
        total=float(targets.sum()) if targets is not None else 0.0,
        summed=int(targets.notna().sum()) if targets is not None else 0,
    )


def _feature_suite(use_case: UseCase) -> str:
    """Return the name of the use case's feature suite; raise naming the fix when it declares none."""
    suite = use_case.suites.get("features")
    if suite is None:
        raise SnapshotError(
            f"use case {use_case.name!r} declares no 'features' suite under suites:; add one (e.g. "
            "features: <dataset>_features) or call create_snapshot(validate=False)"
        )
    return suite


def _validate_features(
    storage: Storage, use_case: UseCase, features: pd.DataFrame, report_key: str
) -> ValidationReport:
    """Run the feature suite, keep its GX result at ``report_key``; raise FeatureContractError if it fails."""
    from mlloop.validation import validate_frame

    suite = _feature_suite(use_case)
    report = validate_frame(features, suite)
    report_uri = storage.write_json(report_key, report.result)
    if not report.success:
        raise FeatureContractError(
            f"create_snapshot: the features fail their contract {suite!r}:\n{report.summary()}\n"
            f"Full result at {report_uri}. No snapshot was written. Fix the feature spec or the code that "
            "builds the features, or the suite if the contract itself changed.",
            report_uri,
        )
    return report


def _write_manifest(storage: Storage, manifest: SnapshotManifest) -> str:
    """Write the manifest as indented JSON in field order (the spec's column order matters)."""
    text = json.dumps(manifest.model_dump(mode="json"), indent=2)
    return storage.write_bytes(manifest.manifest_key, text.encode())


def _digest_of(storage: Storage, digest_or_uri: str) -> str:
    """Return the digest a reference names: a digest, or a key/URI under ``snapshots/<digest>``."""
    reference = digest_or_uri.strip()
    if _DIGEST.match(reference):
        return reference
    try:
        key = storage.key(reference)
    except StorageError as exc:
        raise SnapshotError(f"{reference!r} is not a snapshot of this data root: {exc}") from exc
    match = _DIGEST_IN_KEY.search(key)
    if not match:
        raise SnapshotError(
            f"{reference!r} names no snapshot; pass a sha256 digest or a URI like "
            f"{storage.uri(f'{SNAPSHOT_AREA}/<sha256>/data.parquet')}"
        )
    return match.group(1)


def _pyarrow_version() -> str:
    """Return the pyarrow version that wrote the bytes (the digest is stable for a pinned version)."""
    import pyarrow

    return str(pyarrow.__version__)
