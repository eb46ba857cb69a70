"""Land a source batch immutably, validate it against its contract, then publish or quarantine it.

Layout (DESIGN.md): ``raw/<dataset>/date=D/<batch_id>.parquet`` (never rewritten),
``quarantine/<dataset>/date=D/<batch_id>/`` (the batch plus ``reason.json``),
``validated/<dataset>/date=D/<batch_id>.parquet`` (PII tokenised) and
``reports/validation/<dataset>/date=D/<batch_id>.json`` (the full GX result). The batch id is the
sha256 of the delivered bytes, so a re-run of the same day writes the same objects and duplicates nothing.
"""

from __future__ import annotations

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


def read_source_batch(
    use_case: UseCase, day: date, scenario: str, rows: int | None
) -> tuple[bytes, bytes | None]:
    """Return the day's delivery and, when the source has them, its labels file (generator or files)."""
    source = use_case.source
    if source.kind == "generator":
        from mlloop.data.generator import generate_day

        generated = generate_day(day, rows=rows or source.rows_per_day, seed=source.seed, scenario=scenario)
        return generated.to_file_bytes(), generated.labels_file_bytes()
    inbox = open_inbox(use_case)
    prefix = f"{use_case.dataset}/date={day.isoformat()}"
    files = [k for k in inbox.list(prefix) if k.endswith(".parquet")]
    if len(files) != 1:
        raise StorageError(
            f"files source {inbox.root}: expected exactly one .parquet file under {inbox.uri(prefix)}, "
            f"found {len(files)}; deliver one file per day (see README, 'Bring your own data')."
        )
    label_files = [k for k in inbox.list(f"labels/date={day.isoformat()}") if k.endswith(".parquet")]
    return inbox.read_bytes(files[0]), inbox.read_bytes(label_files[0]) if label_files else None


def source_day(use_case: UseCase, day: date, scenario: str = "none", rows: int | None = None) -> pd.DataFrame:
    """Return the rows of the day's delivery as a frame (what production traffic of that day asked about)."""
    data, _ = read_source_batch(use_case, day, scenario, rows)
    return _read_parquet(data)


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
    key = f"{partition_key('raw', use_case.dataset, day)}/{batch_id}.parquet"
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


def _read_parquet(data: bytes) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(data))


def validate_landed_batch(storage: Storage, use_case: UseCase, batch: LandedBatch) -> dict[str, Any]:
    """Validate a landed batch with the use case's raw suite; quarantine it and raise when it fails.

    Returns:
        ``{"raw_uri", "report_uri", "rows", "summary"}`` for a batch that passed.

    Raises:
        BatchRejectedError: naming the failed expectations, the quarantine folder and the reason file.
    """
    from mlloop.validation import validate_frame

    suite_name = use_case.suites["raw"]
    day = date.fromisoformat(batch.day)
    data = storage.read_bytes(batch.raw_uri)
    report_key = f"reports/validation/{use_case.dataset}/date={batch.day}/{batch.batch_id}.json"
    try:
        frame = _read_parquet(data)
    except Exception as exc:
        reason = {
            "suite": suite_name,
            "success": False,
            "failures": [
                {
                    "expectation": "file_is_readable_parquet",
                    "column": None,
                    "details": f"cannot be read as Parquet: {type(exc).__name__}: {exc}",
                }
            ],
        }
        summary = f"batch {batch.batch_id}: the delivered file is not readable Parquet ({type(exc).__name__})"
        _quarantine(storage, use_case, batch, data, reason, summary)

    log.info("Validating %d rows of %s against suite %r", len(frame), batch.raw_uri, suite_name)
    report = validate_frame(frame, suite_name)
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
    batch_uri = storage.write_bytes(f"{folder}/batch.parquet", data)
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
    frame = _read_parquet(storage.read_bytes(batch.raw_uri))
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
