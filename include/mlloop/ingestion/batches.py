"""Land a source batch immutably, validate it against its contract, then publish or quarantine it.

Layout (DESIGN.md): ``raw/<dataset>/date=D/<batch_id>.<parquet or csv>`` (the delivered bytes, never
rewritten), ``quarantine/<dataset>/date=D/<batch_id>/`` (the batch plus ``reason.json``),
``validated/<dataset>/date=D/<batch_id>.parquet`` (PII tokenised) and
``reports/validation/<dataset>/date=D/<batch_id>.json`` (the full GX result). The batch id is the
sha256 of the delivered bytes, so a re-run of the same day writes the same objects and duplicates nothing.
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

from mlloop.storage import Storage, StorageError, partition_key

if TYPE_CHECKING:
    import pandas as pd

    from mlloop.usecase import UseCase

log = logging.getLogger(__name__)
BATCH_ID_CHARS = 16


class BatchRejectedError(RuntimeError):
    """Raised when a batch fails its contract; the message names the failures and the evidence paths."""

    def __init__(self, message: str, reason_uri: str) -> None:
        super().__init__(message)
        self.reason_uri = reason_uri


@dataclass(frozen=True)
class LandedBatch:
    """A batch as it sits in ``raw/``."""

    dataset: str
    day: str
    batch_id: str
    raw_uri: str
    size_bytes: int
    scenario: str
    newly_landed: bool

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (what goes through XCom)."""
        return asdict(self)


def batch_id_of(data: bytes) -> str:
    """Return the content id of a delivered file (first 16 hex chars of its sha256)."""
    return hashlib.sha256(data).hexdigest()[:BATCH_ID_CHARS]


def open_inbox(use_case: UseCase) -> Storage:
    """Open a files source's inbox with the data root's storage settings (S3 endpoint and connection).

    ``source.uri`` is a local folder, ``file://`` or ``s3://`` URI, or a path relative to the data root
    (``MLLOOP_DATA_ROOT``), e.g. ``inbox/flight_delay``.
    """
    from mlloop.config import get_settings

    settings = get_settings()
    uri = str(use_case.source.uri)
    if "://" not in uri and not uri.startswith(("/", "~")):
        uri = f"{settings.data_root.rstrip('/')}/{uri}"
    return Storage(uri, s3_endpoint_url=settings.s3_endpoint_url, conn_id=settings.storage_conn_id)


class DeliveryMissingError(StorageError):
    """Raised when a files source's delivery for a day is not there (or is ambiguous)."""


def delivery_key(use_case: UseCase, day: date) -> tuple[Storage, str | None, str]:
    """Return (inbox, the day's delivery key or None when absent, the folder looked in).

    Raises:
        DeliveryMissingError: when the folder holds more than one delivery file for the day.
    """
    inbox = open_inbox(use_case)
    prefix = f"{use_case.dataset}/date={day.isoformat()}"
    suffix = use_case.source.suffix
    files = sorted(k for k in inbox.list(prefix) if k.endswith(suffix))
    if len(files) > 1:
        raise DeliveryMissingError(
            f"files source {inbox.root}: expected one {suffix} file under {inbox.uri(prefix)}, found "
            f"{len(files)} ({', '.join(k.rsplit('/', 1)[-1] for k in files[:5])}); deliver one file per day "
            "(see README, 'Bring your own data')."
        )
    return inbox, (files[0] if files else None), inbox.uri(prefix)


def read_source_batch(
    use_case: UseCase, day: date, scenario: str, rows: int | None
) -> tuple[bytes, bytes | None]:
    """Return the day's delivery and, when the source has them, its labels file (generator or files).

    Raises:
        DeliveryMissingError: naming the folder when a files source has no delivery for the day.
    """
    source = use_case.source
    if source.kind == "generator":
        from mlloop.data.generator import generate_day

        generated = generate_day(day, rows=rows or source.rows_per_day, seed=source.seed, scenario=scenario)
        return generated.to_file_bytes(), generated.labels_file_bytes()
    inbox, key, folder = delivery_key(use_case, day)
    if key is None:
        raise DeliveryMissingError(
            f"files source {inbox.root}: no {source.suffix} delivery for {day} under {folder}; deliver the "
            "day's file there and re-run the day (see README, 'Bring your own data')."
        )
    label_files = sorted(k for k in inbox.list(f"labels/date={day.isoformat()}") if k.endswith(".parquet"))
    return inbox.read_bytes(key), inbox.read_bytes(label_files[0]) if label_files else None


def source_day(use_case: UseCase, day: date, scenario: str = "none", rows: int | None = None) -> pd.DataFrame:
    """Return the rows of the day's delivery as a frame (what production traffic of that day asked about)."""
    data, _ = read_source_batch(use_case, day, scenario, rows)
    return read_delivery(data, use_case)


def land_batch(
    storage: Storage, use_case: UseCase, day: date, *, scenario: str = "none", rows: int | None = None
) -> LandedBatch:
    """Fetch the day's delivery and write it to ``raw/`` unless that exact batch is already there.

    Labels delivered with it (each with the time it became known) go to ``labels/<dataset>/date=D/``
    under the same batch id; snapshots only use those known by their ``as_of``.
    """
    started = time.perf_counter()
    data, labels = read_source_batch(use_case, day, scenario, rows)
    batch_id = batch_id_of(data)
    key = f"{partition_key('raw', use_case.dataset, day)}/{batch_id}{use_case.source.suffix}"
    newly_landed = not storage.exists(key)
    if newly_landed:
        storage.write_bytes(key, data)
        log.info("Landed %s (%d bytes) in %.1fs", storage.uri(key), len(data), time.perf_counter() - started)
    else:
        log.info(
            "Batch %s is already in raw/ (%s); raw is immutable, not rewriting", batch_id, storage.uri(key)
        )
    labels_key = f"{partition_key('labels', use_case.dataset, day)}/{batch_id}.parquet"
    if labels is not None and not storage.exists(labels_key):
        storage.write_bytes(labels_key, labels)
        log.info("Landed the batch's delayed labels at %s", storage.uri(labels_key))
    return LandedBatch(
        use_case.dataset, day.isoformat(), batch_id, storage.uri(key), len(data), scenario, newly_landed
    )


def read_delivery(data: bytes, use_case: UseCase) -> pd.DataFrame:
    """Return a delivered file as a frame: Parquet as written, CSV typed by the declared schema.

    CSV cells are read as text and converted column by column: datetime (ISO 8601; without an offset in
    ``source.csv.timezone``) to UTC, float and integer by the declared decimal mark, boolean from
    true/false/1/0. A column that does not convert stays text, so the raw suite's type expectation
    rejects the batch with the column named instead of a silent null.
    """
    import pandas as pd

    if use_case.source.format == "parquet":
        return pd.read_parquet(io.BytesIO(data))
    options = use_case.source.csv
    encoding = "utf-8-sig" if codecs.lookup(options.encoding).name == "utf-8" else options.encoding
    text = data.decode(encoding).removeprefix("\ufeff")
    frame = pd.read_csv(
        io.StringIO(text), sep=options.delimiter, dtype=str, keep_default_na=False, na_values=[""]
    )
    for column, kind in use_case.schema_.items():
        if column in frame.columns and kind != "string":
            frame[column] = _typed(frame[column], kind, options.decimal, options.timezone)
    return frame


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
    data = storage.read_bytes(batch.raw_uri)
    report_key = f"reports/validation/{use_case.dataset}/date={batch.day}/{batch.batch_id}.json"
    try:
        frame = read_delivery(data, use_case)
    except Exception as exc:
        reason = {
            "suite": suite_name,
            "success": False,
            "failures": [
                {
                    "expectation": f"file_is_readable_{use_case.source.format}",
                    "column": None,
                    "details": f"cannot be read as {use_case.source.format}: {type(exc).__name__}: {exc}",
                }
            ],
        }
        summary = (
            f"batch {batch.batch_id}: the delivered file is not readable {use_case.source.format} "
            f"({type(exc).__name__})"
        )
        _quarantine(storage, use_case, batch, data, reason, summary)

    log.info("Validating %d rows of %s against suite %r", len(frame), batch.raw_uri, suite_name)
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
    storage: Storage, use_case: UseCase, batch: LandedBatch, data: bytes, reason: dict[str, Any], summary: str
) -> NoReturn:
    """Copy a rejected batch to ``quarantine/`` with its reason, then raise BatchRejectedError."""
    folder = f"{partition_key('quarantine', use_case.dataset, batch.day)}/{batch.batch_id}"
    batch_uri = storage.write_bytes(f"{folder}/batch{use_case.source.suffix}", data)
    reason = reason | {
        "dataset": use_case.dataset,
        "day": batch.day,
        "batch_id": batch.batch_id,
        "raw_uri": batch.raw_uri,
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
    """Tokenise the PII columns of a validated batch and write it to ``validated/`` atomically."""
    from mlloop.ingestion.pii import tokenise_frame

    started = time.perf_counter()
    frame = read_delivery(storage.read_bytes(batch.raw_uri), use_case)
    tokenised = tokenise_frame(frame, use_case.pii_columns, pii_key)
    key = f"{partition_key('validated', use_case.dataset, batch.day)}/{batch.batch_id}.parquet"
    uri = storage.write_frame(key, tokenised)
    log.info(
        "Published %d rows to %s (PII columns %s tokenised) in %.1fs",
        len(tokenised),
        uri,
        use_case.pii_columns,
        time.perf_counter() - started,
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
