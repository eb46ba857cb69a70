"""Right to erasure: remove every row of one data subject of a use case from every zone, and record it.

``mlloop erase --use-case U --subject COLUMN=VALUE [--apply]`` (``mlloop.lifecycle.erasure_cli``) and the
``erase_<use case>`` DAG call ``erase_subject``. A dry run (the default) lists, per object, the rows
that would go; ``--apply`` removes them.

The subject's rows: those whose COLUMN (a declared column) holds VALUE; for a PII column also those holding
its token (the HMAC ``mlloop.ingestion.pii`` writes at ingest, as ``<column>_token`` in validated/ and in
place of the value in the inference log); and, in every zone, the rows whose key (the declaration's
``key_column``) is the key of one of those rows, so labels and snapshots, which hold no PII, lose them too.

Where: every data object of the dataset in raw/, raw/labels/, quarantine/, quarantine/labels/, validated/,
labels/, inference/, and the use case's snapshots (retention's listing): Parquet, and a files source's CSV
deliveries (read and written back as text in the declared ``source.csv`` dialect, so no value is retyped).
Any other file but JSON is listed as not searched.

Apply rewrites each object without those rows (written first, the old one removed after) and keeps the
content-id invariant of ingestion: an object named by the id of bytes (a raw file's id is the sha256 of
its bytes; validated, labels and quarantine objects carry the id of the raw files they came from, a day
delivered as several files the hash of their ids) is renamed to the id of the new bytes, and every object
named after an old id (reports, ``reason.json``) moves with it, old ids replaced in its JSON. A snapshot
that lost rows is stored under its new digest (``training.snapshot.rewrite_snapshot``), the old one removed,
and the model versions trained on the old digest are tagged ``mlloop.erasure_affected=<ledger id>``
first, so a failed apply never leaves an untagged version. The ledger, ``ledger/erasure/<dataset>.jsonl``,
gets one line per apply that removed rows: its id, who, when, the column, an HMAC of the subject (never the
value), the counts per zone and the objects changed. A second apply finds nothing and changes nothing.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import combinations
from typing import TYPE_CHECKING, Any

from mlloop import clock
from mlloop.config import get_settings
from mlloop.connections import readers
from mlloop.ingestion.batches import batch_id_of, day_batch_id, delivery_text
from mlloop.ingestion.labels_feed import QUARANTINE_AREA as LABELS_QUARANTINE_AREA
from mlloop.ingestion.labels_feed import RAW_AREA as LABELS_RAW_AREA
from mlloop.ingestion.pii import resolve_pii_key, token
from mlloop.lifecycle.retention import ZoneObject, report_prefixes, zone_objects
from mlloop.registry.tags import ERASURE_AFFECTED_TAG, SNAPSHOT_DIGEST_TAG
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from mlflow import MlflowClient

    from mlloop.usecase import CsvOptions, UseCase

log = logging.getLogger(__name__)

LEDGER_AREA = "ledger/erasure"
# The order apply rewrites the zones in: raw first, whose new file ids name what came from those files.
ERASURE_ZONES = ("raw", "quarantine", "validated", "labels", "inference", "snapshots")
MAX_DAY_FILES = 10  # a day's raw files whose every combination is tried as a delivery's batch id
_PROGRESS_EVERY = 200


class ErasureRequestError(ValueError):
    """Raised when an erasure request names no declared column or is not ``COLUMN=VALUE``."""


@dataclass(frozen=True)
class Subject:
    """Whose rows to erase: the column, the value, its PII token (PII columns only) and the key column."""

    column: str
    value: str
    token: str | None
    key_column: str

    @property
    def matches(self) -> frozenset[str]:
        """Return the values that mark a row as the subject's in the subject column (value and token)."""
        return frozenset({self.value} | ({self.token} if self.token else set()))

    @property
    def columns(self) -> tuple[str, ...]:
        """Return the columns that may hold the value or its token."""
        return (self.column, f"{self.column}_token") if self.token else (self.column,)


@dataclass(frozen=True)
class ObjectRows:
    """One object holding rows of the subject: how many of its rows are the subject's."""

    key: str
    zone: str
    rows: int
    total: int


@dataclass
class ErasurePlan:
    """What an erasure removes, per object (never the subject's value nor its keys)."""

    use_case: str
    dataset: str
    column: str
    subject_hash: str
    subject_keys: int = 0
    objects: list[ObjectRows] = field(default_factory=list)
    not_searched: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Return per zone the objects holding rows of the subject and those rows."""
        counts = {zone: {"objects": 0, "rows": 0} for zone in ERASURE_ZONES}
        for obj in self.objects:
            counts[obj.zone]["objects"] += 1
            counts[obj.zone]["rows"] += obj.rows
        return counts

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as JSON-able data."""
        return {
            "use_case": self.use_case,
            "dataset": self.dataset,
            "column": self.column,
            "subject_hash": self.subject_hash,
            "subject_keys": self.subject_keys,
            "counts": self.counts(),
            "rows": sum(o.rows for o in self.objects),
            "objects": [asdict(o) for o in self.objects],
            "not_searched": self.not_searched,
        }


def parse_subject(text: str, use_case: UseCase) -> tuple[str, str]:
    """Return (column, value) of ``COLUMN=VALUE``; the column must be one of ``use_case``'s.

    Raises:
        ErasureRequestError: naming what is wrong and the declared columns (never echoing the value).
    """
    column, sep, value = text.partition("=")
    column = column.strip()
    columns = ", ".join(use_case.columns)
    if not sep or not column or not value:
        missing = "no '='" if not sep else ("an empty column" if not column else "an empty value")
        raise ErasureRequestError(
            f"the subject must be COLUMN=VALUE (it has {missing}), e.g. {use_case.key_column}=<id>; "
            f"COLUMN is one of use case {use_case.name!r}'s columns: {columns}"
        )
    if column not in use_case.columns:
        raise ErasureRequestError(
            f"{column!r} is not a column of use case {use_case.name!r}; use one of: {columns}"
        )
    return column, value


def subject_of(use_case: UseCase, column: str, value: str, pii_key: bytes) -> Subject:
    """Return the subject, with the token ingestion gives ``value`` when ``column`` is a PII column."""
    tokenised = token(value, pii_key) if column in use_case.pii_columns else None
    return Subject(column, value, tokenised, use_case.key_column)


def subject_hash(use_case: UseCase, column: str, value: str, pii_key: bytes) -> str:
    """Return what the ledger records of the subject: a keyed HMAC, distinct from the data's PII token."""
    return token(f"erasure:{use_case.name}:{column}={value}", pii_key) or ""


def _as_text(values: pd.Series) -> pd.Series:
    """Return the values as text for comparison with the request (nulls never match)."""
    return values.astype(str).where(values.notna(), None)


def subject_rows(frame: pd.DataFrame, subject: Subject, keys: frozenset[str]) -> pd.Series:
    """Return which rows of ``frame`` are the subject's: by value or token, or by one of its ``keys``."""
    import pandas as pd

    hit = pd.Series(False, index=frame.index)
    for column in subject.columns:
        if column in frame.columns:
            hit |= _as_text(frame[column]).isin(subject.matches)
    if keys and subject.key_column in frame.columns:
        hit |= _as_text(frame[subject.key_column]).isin(keys)
    return hit


def erasure_objects(storage: Storage, use_case: UseCase) -> list[ZoneObject]:
    """Return the use case's data objects in every zone (retention's listing plus the label feed's areas)."""
    objects = [o for o in zone_objects(storage, use_case) if o.zone != "reports"]
    for zone, area in (("raw", LABELS_RAW_AREA), ("quarantine", LABELS_QUARANTINE_AREA)):
        objects += [
            ZoneObject(o.key, zone, "", o.size) for o in storage.list_objects(f"{area}/{use_case.dataset}")
        ]
    rank = {zone: i for i, zone in enumerate(ERASURE_ZONES)}
    return sorted(objects, key=lambda o: (rank[o.zone], o.key))


def is_data_object(key: str, use_case: UseCase) -> bool:
    """Return whether ``key`` holds rows erasure rewrites: Parquet, or the CSV a files source delivers."""
    return key.endswith(".parquet") or (use_case.source.format == "csv" and key.endswith(".csv"))


def _csv_text(data: bytes, options: CsvOptions) -> pd.DataFrame:
    """Return a delivered CSV file's cells as text (an empty cell as ''), in the declared dialect."""
    import pandas as pd

    text = delivery_text(data, options)
    return pd.read_csv(io.StringIO(text), sep=options.delimiter, dtype=str, keep_default_na=False)


def _read_columns(data: bytes, key: str, use_case: UseCase, columns: list[str]) -> pd.DataFrame | None:
    """Return the ``columns`` a data object has (None when it has none of them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not key.endswith(".parquet"):
        frame = _csv_text(data, use_case.source.csv)
        present = [c for c in columns if c in frame.columns]
        return frame[present] if present else None
    parquet = pq.ParquetFile(pa.BufferReader(data))
    present = [c for c in columns if c in parquet.schema_arrow.names]
    return parquet.read(columns=present).to_pandas() if present else None


def plan_erasure(
    storage: Storage, use_case: UseCase, subject: Subject, hashed: str
) -> tuple[ErasurePlan, frozenset[str]]:
    """Return the plan and the subject's keys, found in two reads of every data object.

    The first read finds the rows holding the value or its token and collects their keys; the second
    counts, per object, the rows matching the value, the token or one of those keys.
    """
    objects = erasure_objects(storage, use_case)
    plan = ErasurePlan(use_case.name, use_case.dataset, subject.column, hashed)
    data_objects = [o for o in objects if is_data_object(o.key, use_case)]
    plan.not_searched = [
        o.key for o in objects if not is_data_object(o.key, use_case) and not o.key.endswith(".json")
    ]
    for key in plan.not_searched:
        log.warning("Not searched (neither Parquet nor a declared CSV delivery): %s", storage.uri(key))
    keys: set[str] = {subject.value} if subject.column == subject.key_column else set()
    wanted = [*subject.columns, subject.key_column]
    for count, obj in enumerate(data_objects, 1):
        frame = _read_columns(storage.read_bytes(obj.key), obj.key, use_case, wanted)
        if frame is not None and subject.key_column in frame.columns:
            hit = subject_rows(frame, subject, frozenset())
            keys |= set(_as_text(frame.loc[hit, subject.key_column]).dropna())
        if count % _PROGRESS_EVERY == 0:
            log.info("Searched %d of %d objects for the subject's keys", count, len(data_objects))
    plan.subject_keys = len(keys)
    found = frozenset(keys)
    for count, obj in enumerate(data_objects, 1):
        frame = _read_columns(storage.read_bytes(obj.key), obj.key, use_case, wanted)
        if frame is not None:
            rows = int(subject_rows(frame, subject, found).sum())
            if rows:
                plan.objects.append(ObjectRows(obj.key, obj.zone, rows, len(frame)))
        if count % _PROGRESS_EVERY == 0:
            log.info("Counted the subject's rows in %d of %d objects", count, len(data_objects))
    log.info(
        "The subject (%s) has %d keys and %d rows in %d of %d data objects of %s",
        subject.column,
        len(found),
        sum(o.rows for o in plan.objects),
        len(plan.objects),
        len(data_objects),
        use_case.name,
    )
    return plan, found


def _table_without_subject(data: bytes, subject: Subject, keys: frozenset[str]) -> tuple[pa.Table, int]:
    """Return a Parquet object's table without the subject's rows, and how many rows went."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    wanted = [c for c in (*subject.columns, subject.key_column) if c in table.column_names]
    hit = subject_rows(table.select(wanted).to_pandas(), subject, keys).to_numpy()
    return table.filter(pa.array(~hit)), int(hit.sum())


def _without_subject(
    data: bytes, key: str, use_case: UseCase, subject: Subject, keys: frozenset[str]
) -> tuple[bytes, int]:
    """Return a data object's bytes without the subject's rows (same format), and how many rows went."""
    import pyarrow.parquet as pq

    if not key.endswith(".parquet"):
        options = use_case.source.csv
        frame = _csv_text(data, options)
        hit = subject_rows(frame, subject, keys)
        text = frame[~hit].to_csv(index=False, sep=options.delimiter, lineterminator="\n")
        return text.encode(options.encoding), int(hit.sum())
    kept, removed = _table_without_subject(data, subject, keys)
    buffer = io.BytesIO()
    pq.write_table(kept, buffer)  # pyarrow's defaults; the table's pandas metadata is kept
    return buffer.getvalue(), removed


class _IdMap:
    """Old content ids and their new ones; renames keys and JSON texts that name an old id."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def add(self, old: str, new: str) -> None:
        """Record that what was named ``old`` is now named ``new``."""
        if old != new:
            self.ids[old] = new

    def _pattern(self) -> re.Pattern[str]:
        return re.compile(r"(?<![0-9a-f])(" + "|".join(map(re.escape, self.ids)) + r")(?![0-9a-f])")

    def replace(self, text: str) -> str:
        """Return ``text`` with every old id (a whole hex word) replaced by its new one."""
        if not self.ids:
            return text
        return self._pattern().sub(lambda m: self.ids[m.group(1)], text)

    def names_old_id(self, text: str) -> bool:
        """Return whether ``text`` names an old id."""
        return bool(self.ids) and self._pattern().search(text) is not None

    def add_day_batches(self, day_files: dict[str, list[str]]) -> None:
        """Map the batch id of every delivery a day's raw files can make (their ids hashed together)."""
        for folder, ids in day_files.items():
            if not any(i in self.ids for i in ids):
                continue
            if len(ids) > MAX_DAY_FILES:
                log.warning(
                    "%s holds %d raw files: the batch ids of its multi-file deliveries are not renamed",
                    folder,
                    len(ids),
                )
                continue
            for size in range(2, len(ids) + 1):
                for files in combinations(ids, size):
                    self.add(day_batch_id(list(files)), day_batch_id([self.ids.get(i, i) for i in files]))


def _raw_day_files(storage: Storage, dataset: str) -> dict[str, list[str]]:
    """Return the file ids of each raw day folder of ``dataset``."""
    days: dict[str, list[str]] = defaultdict(list)
    for key in storage.list(f"raw/{dataset}"):
        folder, _, name = key.rpartition("/")
        days[folder].append(name.split(".", 1)[0])
    return days


def tag_affected_versions(
    client: MlflowClient, model: str, digests: list[str], ledger_id: str
) -> list[dict[str, str]]:
    """Tag every version of ``model`` trained on one of ``digests`` with the ledger id; return them."""
    tagged = []
    for digest in digests:
        query = f"name = '{model}' and tags.`{SNAPSHOT_DIGEST_TAG}` = '{digest}'"
        for version in client.search_model_versions(query):
            earlier = (version.tags or {}).get(ERASURE_AFFECTED_TAG, "")
            ids = [i for i in earlier.split(",") if i]
            if ledger_id not in ids:
                client.set_model_version_tag(
                    model, str(version.version), ERASURE_AFFECTED_TAG, ",".join([*ids, ledger_id])
                )
            log.info(
                "Tagged %s v%s (trained on snapshot %s): %s", model, version.version, digest[:12], ledger_id
            )
            tagged.append({"version": str(version.version), "snapshot": digest})
    return tagged


def _rewrite_object(
    storage: Storage, use_case: UseCase, obj: ObjectRows, subject: Subject, keys: frozenset[str], ids: _IdMap
) -> dict[str, Any]:
    """Write an object without the subject's rows under its (renamed) key, then remove the old one."""
    data = storage.read_bytes(obj.key)
    new_data, removed = _without_subject(data, obj.key, use_case, subject, keys)
    ids.add(batch_id_of(data), batch_id_of(new_data))
    new_key = ids.replace(obj.key)
    storage.write_bytes(new_key, new_data)
    if new_key != obj.key:
        storage.delete(obj.key)
    log.info("Removed %d of %d rows from %s, now %s", removed, obj.total, obj.key, storage.uri(new_key))
    return {"zone": obj.zone, "key": obj.key, "new_key": new_key, "rows_removed": removed}


def _rename_named_objects(storage: Storage, dataset: str, prefixes: list[str], ids: _IdMap) -> list[str]:
    """Move every object named after an old id to its new name (old ids replaced in JSON); return them."""
    moved = []
    for prefix in prefixes:
        for key in storage.list(prefix):
            if not ids.names_old_id(key):
                continue
            data = storage.read_bytes(key)
            if key.endswith(".json"):
                data = ids.replace(data.decode()).encode()
            storage.write_bytes(ids.replace(key), data)
            storage.delete(key)
            moved.append(key)
    log.info("Renamed %d objects of %s named after a rewritten object's id", len(moved), dataset)
    return moved


def _rewrite_snapshots(
    storage: Storage,
    use_case: UseCase,
    digests: list[str],
    subject: Subject,
    keys: frozenset[str],
    ids: _IdMap,
) -> list[dict[str, Any]]:
    """Store each snapshot that loses rows under its new digest, remove the old; relink every manifest."""
    from mlloop.training.snapshot import SnapshotManifest, rewrite_snapshot, snapshot_keys

    rewritten = []
    for digest in digests:
        data_key, manifest_key = snapshot_keys(digest)
        manifest = SnapshotManifest.model_validate(storage.read_json(manifest_key))
        kept, removed = _table_without_subject(storage.read_bytes(data_key), subject, keys)
        sources = [
            source.model_copy(
                update={"key": ids.replace(source.key), "batch_id": ids.replace(source.batch_id)}
            )
            for source in manifest.source_partitions
        ]
        new = rewrite_snapshot(storage, use_case, manifest, kept, sources)
        for key in storage.list(f"snapshots/{digest}"):
            storage.delete(key)
        log.info("Snapshot %s lost %d rows: now %s", digest[:12], removed, new.digest)
        rewritten.append({"from": digest, "to": new.digest, "rows_removed": removed})
    relinked = 0
    for obj in erasure_objects(storage, use_case):
        if obj.zone == "snapshots" and obj.key.endswith("/manifest.json"):
            text = storage.read_bytes(obj.key).decode()
            if ids.names_old_id(text):
                storage.write_bytes(obj.key, ids.replace(text).encode())
                relinked += 1
    log.info("Relinked %d snapshot manifests to the renamed validated partitions", relinked)
    return rewritten


def append_ledger(storage: Storage, dataset: str, entry: dict[str, Any]) -> str:
    """Append one entry to ``ledger/erasure/<dataset>.jsonl`` (rewritten whole: S3 has no append)."""
    key = f"{LEDGER_AREA}/{dataset}.jsonl"
    earlier = storage.read_bytes(key) if storage.exists(key) else b""
    line = json.dumps(entry, sort_keys=True, default=str) + "\n"
    return storage.write_bytes(key, earlier + line.encode())


def apply_erasure(
    storage: Storage,
    use_case: UseCase,
    subject: Subject,
    keys: frozenset[str],
    plan: ErasurePlan,
    *,
    client: MlflowClient,
    model: str,
    actor: str,
    at: datetime,
) -> dict[str, Any]:
    """Remove the planned rows from every object, relink what names them, tag versions, write the ledger."""
    ledger_id = f"erasure-{at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    by_zone: dict[str, list[ObjectRows]] = defaultdict(list)
    for obj in plan.objects:
        by_zone[obj.zone].append(obj)
    digests = sorted({o.key.split("/")[1] for o in by_zone["snapshots"]})
    versions = tag_affected_versions(client, model, digests, ledger_id)

    ids = _IdMap()
    day_files = _raw_day_files(storage, use_case.dataset)
    changed = [_rewrite_object(storage, use_case, obj, subject, keys, ids) for obj in by_zone["raw"]]
    ids.add_day_batches(day_files)
    for zone in ("quarantine", "validated", "labels", "inference"):
        changed += [_rewrite_object(storage, use_case, obj, subject, keys, ids) for obj in by_zone[zone]]
    dataset = use_case.dataset
    prefixes = [
        *(f"{zone}/{dataset}" for zone in ("raw", "quarantine", "validated", "labels")),
        f"{LABELS_RAW_AREA}/{dataset}",
        f"{LABELS_QUARANTINE_AREA}/{dataset}",
        *report_prefixes(dataset),
    ]
    renamed = _rename_named_objects(storage, dataset, prefixes, ids)
    snapshots = _rewrite_snapshots(storage, use_case, digests, subject, keys, ids)

    entry = {
        "ledger_id": ledger_id,
        "at": at.isoformat(),
        "actor": actor,
        "use_case": use_case.name,
        "dataset": dataset,
        "column": subject.column,
        "subject_hash": plan.subject_hash,
        "counts": plan.counts(),
        "objects_changed": changed,
        "objects_renamed": renamed,
        "snapshots": snapshots,
        "versions_tagged": versions,
        "not_searched": plan.not_searched,
    }
    entry["ledger_uri"] = append_ledger(storage, dataset, entry)
    log.info("Erasure %s by %s recorded in %s", ledger_id, actor, entry["ledger_uri"])
    return entry


def erase_subject(
    use_case_name: str,
    subject_text: str,
    *,
    apply: bool,
    actor: str,
    at: datetime | None = None,
    storage: Storage | None = None,
) -> dict[str, Any]:
    """Plan (and with ``apply`` carry out) the erasure of ``COLUMN=VALUE`` from ``use_case_name``'s data.

    Raises:
        FileNotFoundError: for an undeclared use case (naming the declarations there are).
        ErasureRequestError: for a malformed subject or an undeclared column.
        MissingPIIKeyError: when no PII key is configured (tokens could not be searched).
    """
    use_case = load_use_case(use_case_name)
    column, value = parse_subject(subject_text, use_case)
    mask = readers().mask
    if mask is not None:
        mask(value)  # never in a task log
    settings = get_settings()
    pii_key = resolve_pii_key(settings)
    storage = storage or Storage.from_settings(settings)
    subject = subject_of(use_case, column, value, pii_key)
    plan, keys = plan_erasure(storage, use_case, subject, subject_hash(use_case, column, value, pii_key))
    summary = plan.to_dict() | {"dry_run": not apply}
    if not apply:
        log.info("Dry run: nothing changed; apply to remove %d rows", summary["rows"])
        return summary
    if not plan.objects:
        log.info("No row of the subject is left in %s: nothing to erase, nothing recorded", use_case.name)
        return summary | {"ledger_id": None}
    from mlloop.registry.runner import registry_client_and_model

    client, model = registry_client_and_model(use_case.name)
    entry = apply_erasure(
        storage, use_case, subject, keys, plan, client=client, model=model, actor=actor, at=at or clock.now()
    )
    return summary | entry
