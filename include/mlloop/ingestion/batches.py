"""Land a source batch immutably, validate it against its contract, then publish or quarantine it.

Layout (DESIGN.md): ``raw/<dataset>/date=D/<file id>.<parquet or csv>`` (each delivered file's bytes,
never rewritten), ``quarantine/<dataset>/date=D/<batch_id>/`` (the files plus ``reason.json``),
``validated/<dataset>/date=D/<batch_id>.parquet`` (PII tokenised) and
``reports/validation/<dataset>/date=D/<batch_id>.json`` (the full GX result). A file's id is the sha256 of
its bytes, so a re-run of the same day writes the same objects and duplicates nothing.

A day may arrive as several files. The day is the unit of the contract: every file lands in raw/ under its
own id, the day's rows (all files, in file-id order) are validated together, and only when they pass is the
day published, as one validated partition whose batch id is the file id (one file) or the hash of the
sorted file ids (several). A later, different delivery of the day (a file added or corrected) publishes a
new partition and removes the one it supersedes from validated/ (raw/ keeps every file).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import logging
import time
from dataclasses import asdict, dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, NoReturn

from mlloop.labels import LABEL_TIME_COLUMN, LABELS_AREA, target_failures
from mlloop.storage import Storage, StorageError, partition_key

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd

    from mlloop.usecase import CsvOptions, UseCase

log = logging.getLogger(__name__)
BATCH_ID_CHARS = 16


class BatchRejectedError(RuntimeError):
    """Raised when a batch fails its contract; the message names the failures and the evidence paths."""

    def __init__(self, message: str, reason_uri: str) -> None:
        super().__init__(message)
        self.reason_uri = reason_uri


@dataclass(frozen=True)
class LandedBatch:
    """A day's delivery as it sits in ``raw/``: one or several files, in file-id order."""

    dataset: str
    day: str
    batch_id: str
    raw_uris: list[str]
    size_bytes: int
    scenario: str
    newly_landed: bool

    @property
    def raw_uri(self) -> str:
        """Return the first file's URI (the only one of a one-file day)."""
        return self.raw_uris[0]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (what goes through XCom)."""
        return asdict(self) | {"raw_uris": list(self.raw_uris)}


def batch_id_of(data: bytes) -> str:
    """Return the content id of a delivered file (first 16 hex chars of its sha256)."""
    return hashlib.sha256(data).hexdigest()[:BATCH_ID_CHARS]


def day_batch_id(file_ids: list[str]) -> str:
    """Return the id of a day delivered as ``file_ids``: the file's own id, or the hash of the sorted ids."""
    if len(file_ids) == 1:
        return file_ids[0]
    return hashlib.sha256("\n".join(sorted(file_ids)).encode()).hexdigest()[:BATCH_ID_CHARS]


def open_inbox(use_case: UseCase) -> Storage:
    """Open a files source's inbox with the data root's storage settings (S3 endpoint and connection).

    ``source.uri`` is a local folder, ``file://`` or ``s3://`` URI, or a path relative to the data root
    (``MLLOOP_DATA_ROOT``), e.g. ``inbox/flight_delay``.
    """
    return open_folder(str(use_case.source.uri))


def open_folder(uri: str) -> Storage:
    """Open a folder or URI (a path relative to the data root when it is neither) with the root's settings."""
    from mlloop.config import get_settings

    settings = get_settings()
    if not is_absolute(uri):
        uri = f"{settings.data_root.rstrip('/')}/{uri}"
    return Storage(uri, s3_endpoint_url=settings.s3_endpoint_url, conn_id=settings.storage_conn_id)


def is_absolute(uri: str) -> bool:
    """Return whether ``uri`` is a URI or an absolute (or home-relative) path, not a relative one."""
    return "://" in uri or uri.startswith(("/", "~"))


class DeliveryMissingError(StorageError):
    """Raised when a files source's delivery for a day is not there (or is ambiguous)."""


def delivery_keys(use_case: UseCase, day: date) -> tuple[Storage, list[str], str]:
    """Return (inbox, the day's delivery files in name order, the folder looked in).

    The list is empty while the day is not ready: no file yet, or, when the declaration names a
    ``source.ready_marker``, no marker yet (a day written as several files is complete only then).
    """
    inbox = open_inbox(use_case)
    prefix = f"{use_case.dataset}/date={day.isoformat()}"
    files = sorted(k for k in inbox.list(prefix) if k.endswith(use_case.source.suffix))
    marker = use_case.source.ready_marker
    if marker and files and not inbox.exists(f"{prefix}/{marker}"):
        log.info(
            "%d file(s) under %s, but no %s marker yet: not ready", len(files), inbox.uri(prefix), marker
        )
        return inbox, [], inbox.uri(prefix)
    return inbox, files, inbox.uri(prefix)


def read_source_batch(
    use_case: UseCase, day: date, scenario: str, rows: int | None
) -> tuple[list[bytes], bytes | None]:
    """Return the day's delivered files and, for a generator, its labels (a files source's come as a feed).

    Raises:
        DeliveryMissingError: naming the folder when a files source has no (complete) delivery for the day.
    """
    source = use_case.source
    if source.kind == "generator":
        from mlloop.data.generator import generate_day

        generated = generate_day(day, rows=rows or source.rows_per_day, seed=source.seed, scenario=scenario)
        return [generated.to_file_bytes()], generated.labels_file_bytes()
    inbox, keys, folder = delivery_keys(use_case, day)
    if not keys:
        marker = f" with its {source.ready_marker} marker" if source.ready_marker else ""
        raise DeliveryMissingError(
            f"files source {inbox.root}: no {source.suffix} delivery{marker} for {day} under {folder}; "
            "deliver the day's file(s) there and re-run the day (see README, 'Bring your own data')."
        )
    return [inbox.read_bytes(k) for k in keys], None


def source_day(use_case: UseCase, day: date, scenario: str = "none", rows: int | None = None) -> pd.DataFrame:
    """Return the rows of the day's delivery as a frame (what production traffic of that day asked about)."""
    files, _ = read_source_batch(use_case, day, scenario, rows)
    return _concat([read_delivery(data, use_case) for data in files])


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Return the frames one after the other on a fresh index (a one-file day as it is)."""
    import pandas as pd

    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def land_batch(
    storage: Storage, use_case: UseCase, day: date, *, scenario: str = "none", rows: int | None = None
) -> LandedBatch:
    """Fetch the day's delivery and write each file to ``raw/`` unless that exact file is already there.

    A generator's labels (each with the time it became known) go to ``labels/<dataset>/date=D/`` under the
    batch id; a files source's labels arrive as their own feed (``mlloop.ingestion.labels_feed``).
    Snapshots only use labels known by their ``as_of``.
    """
    started = time.perf_counter()
    files, labels = read_source_batch(use_case, day, scenario, rows)
    ids, uris, newly_landed = [], [], False
    for data in sorted(files, key=batch_id_of):
        file_id = batch_id_of(data)
        key = f"{partition_key('raw', use_case.dataset, day)}/{file_id}{use_case.source.suffix}"
        if storage.exists(key):
            log.info(
                "File %s is already in raw/ (%s); raw is immutable, not rewriting", file_id, storage.uri(key)
            )
        else:
            storage.write_bytes(key, data)
            newly_landed = True
            log.info(
                "Landed %s (%d bytes) in %.1fs", storage.uri(key), len(data), time.perf_counter() - started
            )
        ids.append(file_id)
        uris.append(storage.uri(key))
    batch_id = day_batch_id(ids)
    if len(ids) > 1:
        log.info("The delivery of %s is %d files; the day's batch id is %s", day, len(ids), batch_id)
    labels_key = f"{partition_key('labels', use_case.dataset, day)}/{batch_id}.parquet"
    if labels is not None and not storage.exists(labels_key):
        storage.write_bytes(labels_key, labels)
        log.info("Landed the batch's delayed labels at %s", storage.uri(labels_key))
    elif labels is not None and storage.read_bytes(labels_key) != labels:
        log.warning(
            "The day's rows were landed before with other labels (another scenario with the same rows?): "
            "keeping the labels landed first, %s. A day lands once; use other days (or make clean).",
            storage.uri(labels_key),
        )
    size = sum(len(data) for data in files)
    return LandedBatch(use_case.dataset, day.isoformat(), batch_id, uris, size, scenario, newly_landed)


def read_delivery(data: bytes, use_case: UseCase, schema: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Return a delivered file as a frame: Parquet as written, CSV typed by the declared schema.

    CSV cells are read as text and converted column by column: datetime (ISO 8601; without an offset in
    ``source.csv.timezone``) to UTC, float and integer by the declared decimal mark, boolean from
    true/false/1/0. A column that does not convert stays text, so the raw suite's type expectation
    rejects the batch with the column named instead of a silent null. ``schema`` replaces the
    declaration's (a label delivery has its own columns).
    """
    import pandas as pd

    if use_case.source.format == "parquet":
        return pd.read_parquet(io.BytesIO(data))
    options = use_case.source.csv
    text = delivery_text(data, options)
    frame = pd.read_csv(
        io.StringIO(text), sep=options.delimiter, dtype=str, keep_default_na=False, na_values=[""]
    )
    for column, kind in (delivered_schema(use_case) if schema is None else schema).items():
        if column in frame.columns and kind != "string":
            frame[column] = _typed(frame[column], kind, options.decimal, options.timezone)
    return frame


def delivery_text(data: bytes, options: CsvOptions) -> str:
    """Return a CSV delivery's text in its declared encoding, a UTF-8 byte-order mark dropped."""
    encoding = "utf-8-sig" if codecs.lookup(options.encoding).name == "utf-8" else options.encoding
    return data.decode(encoding).removeprefix("\ufeff")


def delivered_schema(use_case: UseCase) -> dict[str, str]:
    """Return the delivered columns' kinds: the schema, and the target when labels come in the file."""
    if use_case.labels.mode == "in_delivery":
        from mlloop.tasks import task_spec

        return {**use_case.schema_, use_case.target_column: task_spec(use_case.task).label_kind}
    return dict(use_case.schema_)


def split_delivered_labels(
    frame: pd.DataFrame, use_case: UseCase
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Return (the delivery without its target, its labels) for in-delivery labels, else (frame, None).

    With ``labels.mode: in_delivery`` each label is known (``label_time``) at its event time plus
    ``label_maturity_days``.
    """
    import pandas as pd

    if use_case.labels.mode != "in_delivery":
        return frame, None
    key, target, when = use_case.key_column, use_case.target_column, use_case.time_column
    maturity = pd.Timedelta(days=use_case.label_maturity_days)
    labels = pd.DataFrame(
        {
            key: frame[key],
            target: frame[target],
            LABEL_TIME_COLUMN: pd.to_datetime(frame[when], utc=True) + maturity,
        }
    )
    return frame.drop(columns=[target]), labels


def _typed(values: pd.Series, kind: str, decimal: str, zone: str) -> pd.Series:
    """Convert one CSV text column to its declared kind, or return it unchanged when it does not convert."""
    import pandas as pd

    try:
        if kind == "datetime":
            parsed = pd.to_datetime(values, format="ISO8601", utc=False)
            if getattr(parsed.dt, "tz", None) is None:
                parsed = parsed.dt.tz_localize(zone)
            return parsed.dt.tz_convert("UTC")
        if kind == "boolean":
            mapped = values.str.lower().map({"true": True, "false": False, "1": True, "0": False})
            if mapped[values.notna()].isna().any():
                return values
            return mapped.astype("boolean") if mapped.isna().any() else mapped.astype(bool)
        numbers = pd.to_numeric(values.str.replace(decimal, ".", regex=False) if decimal != "." else values)
        if kind == "integer" and numbers.notna().all() and (numbers == numbers.round()).all():
            return numbers.astype("int64")
        return numbers.astype("float64")
    except (ValueError, TypeError):
        log.warning(
            "CSV column %r does not read as %s; kept as text for the contract to judge", values.name, kind
        )
        return values


def validate_landed_batch(storage: Storage, use_case: UseCase, batch: LandedBatch) -> dict[str, Any]:
    """Validate a landed batch with the use case's raw suite; quarantine it and raise when it fails.

    Returns:
        ``{"raw_uri", "report_uri", "rows", "summary"}`` for a batch that passed.

    Raises:
        BatchRejectedError: naming the failed expectations, the quarantine folder and the reason file.
    """
    from mlloop.validation import validate_delivery

    suite_name = use_case.suites["raw"]
    day = date.fromisoformat(batch.day)
    data = [storage.read_bytes(uri) for uri in batch.raw_uris]
    report_key = f"reports/validation/{use_case.dataset}/date={batch.day}/{batch.batch_id}.json"
    frames = []
    for uri, content in zip(batch.raw_uris, data, strict=True):
        try:
            frames.append(read_delivery(content, use_case))
        except Exception as exc:
            reason = {
                "suite": suite_name,
                "success": False,
                "failures": [
                    {
                        "expectation": f"file_is_readable_{use_case.source.format}",
                        "column": None,
                        "details": f"{uri} cannot be read as {use_case.source.format}: "
                        f"{type(exc).__name__}: {exc}",
                    }
                ],
            }
            summary = (
                f"batch {batch.batch_id}: the delivered file {uri.rsplit('/', 1)[-1]} is not readable "
                f"{use_case.source.format} ({type(exc).__name__})"
            )
            _quarantine(storage, use_case, batch, data, reason, summary)
    frame = _concat(frames)
    if use_case.labels.mode == "in_delivery":
        target = use_case.target_column
        failures = (
            target_failures(frame, use_case.key_column, target, use_case.task)
            if target in frame.columns
            else [
                {
                    "expectation": "expect_label_columns",
                    "column": target,
                    "details": f"labels.mode is in_delivery but the delivery has no {target} column",
                }
            ]
        )
        if failures:
            reason = {"suite": "labels in the delivery", "success": False, "failures": failures}
            summary = f"batch {batch.batch_id}: its {target} labels fail: " + "; ".join(
                f["details"] for f in failures
            )
            _quarantine(storage, use_case, batch, data, reason, summary)
        frame, _ = split_delivered_labels(frame, use_case)

    where = batch.raw_uri if len(batch.raw_uris) == 1 else f"{len(batch.raw_uris)} files of {batch.day}"
    log.info("Validating %d rows of %s against suite %r", len(frame), where, suite_name)
    report = validate_delivery(storage, use_case, day, frame)  # the raw suite plus the contract defaults
    report_uri = storage.write_json(report_key, report.result)
    log.info("Validation summary:\n%s", report.summary())
    log.info("Full GX result: %s", report_uri)
    if not report.success:
        reason = report.to_reason() | {"gx_result_uri": report_uri}
        _quarantine(storage, use_case, batch, data, reason, report.summary())
    return {
        "raw_uri": batch.raw_uri,
        "report_uri": report_uri,
        "rows": report.row_count,
        "summary": report.summary(),
        "day": day.isoformat(),
    }


def _quarantine(
    storage: Storage,
    use_case: UseCase,
    batch: LandedBatch,
    data: list[bytes],
    reason: dict[str, Any],
    summary: str,
) -> NoReturn:
    """Copy a rejected day's files to ``quarantine/`` with its reason, then raise BatchRejectedError."""
    folder = f"{partition_key('quarantine', use_case.dataset, batch.day)}/{batch.batch_id}"
    suffix = use_case.source.suffix
    if len(data) == 1:
        batch_uri = storage.write_bytes(f"{folder}/batch{suffix}", data[0])
    else:
        for content in data:
            storage.write_bytes(f"{folder}/files/{batch_id_of(content)}{suffix}", content)
        batch_uri = storage.uri(f"{folder}/files/")
    reason = reason | {
        "dataset": use_case.dataset,
        "day": batch.day,
        "batch_id": batch.batch_id,
        "raw_uris": list(batch.raw_uris),
        "quarantined_uri": batch_uri,
        "scenario": batch.scenario,
    }
    reason_uri = storage.write_json(f"{folder}/reason.json", reason)
    failed = ", ".join(
        sorted({f"{f['expectation']}({f.get('column') or 'table'})" for f in reason["failures"]})
    )
    raise BatchRejectedError(
        f"Batch {batch.batch_id} of {use_case.dataset} for {batch.day} failed its data contract: {failed}.\n"
        f"{summary}\nQuarantined at {batch_uri}; reason at {reason_uri}. Nothing was written to validated/. "
        "Fix the source delivery and re-run the day.",
        reason_uri,
    )


def publish_validated(
    storage: Storage, use_case: UseCase, batch: LandedBatch, pii_key: bytes
) -> dict[str, Any]:
    """Tokenise the PII columns of a validated day and write it to ``validated/`` atomically.

    The day's earlier published batch, if a different delivery of it was published before, is removed
    after the new one is written: validated/ holds one batch per day, the latest (raw/ keeps every file).
    """
    from mlloop.ingestion.pii import tokenise_frame

    started = time.perf_counter()
    frame = _concat([read_delivery(storage.read_bytes(uri), use_case) for uri in batch.raw_uris])
    frame, labels = split_delivered_labels(frame, use_case)
    if labels is not None:
        labels_uri = storage.write_frame(
            f"{partition_key(LABELS_AREA, use_case.dataset, batch.day)}/{batch.batch_id}.parquet", labels
        )
        log.info("Published the delivery's %d labels to %s", len(labels), labels_uri)
    tokenised = tokenise_frame(frame, use_case.pii_columns, pii_key)
    prefix = partition_key("validated", use_case.dataset, batch.day)
    key = f"{prefix}/{batch.batch_id}.parquet"
    uri = storage.write_frame(key, tokenised)
    log.info(
        "Published %d rows to %s (PII columns %s tokenised) in %.1fs",
        len(tokenised),
        uri,
        use_case.pii_columns,
        time.perf_counter() - started,
    )
    for superseded in (k for k in storage.list(prefix) if k.endswith(".parquet") and k != key):
        storage.delete(superseded)
        log.warning(
            "Removed %s: superseded by the day's new delivery %s", storage.uri(superseded), batch.batch_id
        )
    return {"validated_uri": uri, "rows": len(tokenised), "day": batch.day, "batch_id": batch.batch_id}


def ingest_day(
    storage: Storage,
    use_case: UseCase,
    day: date,
    pii_key: bytes,
    *,
    scenario: str = "none",
    rows: int | None = None,
) -> dict[str, Any]:
    """Land, validate and publish one day in one call: ``ingest_<use case>``' three tasks, for tools.

    Raises:
        BatchRejectedError: when the day fails its contract (it is quarantined, as in the DAG).
    """
    batch = land_batch(storage, use_case, day, scenario=scenario, rows=rows)
    validate_landed_batch(storage, use_case, batch)
    return publish_validated(storage, use_case, batch, pii_key)
