"""A files source's labels as their own feed: landed, checked, then published or quarantined, per file.

Labels arrive apart from the events they judge, any time after them, several deliveries a day, and a later
delivery may correct an earlier one. The feed's folder (``labels.uri``, by default
``<source.uri>/labels/<dataset>/``) holds ``date=D/`` folders named by the day each file was delivered.
Each file is landed on its own, the first time a run looks (``land_labels``: the ingest DAG after each day,
and every snapshot and monitor run before it reads labels, so a late or corrected label is seen by the next
of them):

- ``raw/labels/<dataset>/date=D/<file id>.<ext>``: the delivered bytes, never rewritten;
- checked: the key, target and known-at columns are there; no key or known-at is missing; the target is 0
  or 1 (a finite number for a regression use case, ``mlloop.tasks``); no label is known after the end of
  its delivery day, or before its event (events looked up in the validated days up to
  ``labels.max_delay_days`` back); then the use case's own ``suites.labels`` GX suite,
  when it declares one;
- passed: ``labels/<dataset>/date=D/<file id>.parquet`` (key, target, ``label_time``) for every reader;
- failed: ``quarantine/labels/<dataset>/date=D/<file id>/`` (the file and ``reason.json``); the other
  files still land, and the run that landed them reports the rejection.

Which label counts is one rule everywhere (``mlloop.labels``): the latest known-at of a key, as known at
the run's cut-off. A file id is the sha256 of its bytes, so a re-run lands nothing twice.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from mlloop.ingestion.batches import batch_id_of, is_absolute, open_folder, read_delivery
from mlloop.labels import LABEL_TIME_COLUMN, LABELS_AREA, target_failures
from mlloop.storage import Storage, partition_key
from mlloop.tasks import task_spec

if TYPE_CHECKING:
    import pandas as pd

    from mlloop.usecase import UseCase

log = logging.getLogger(__name__)
RAW_AREA = "raw/labels"
QUARANTINE_AREA = "quarantine/labels"
REPORT_AREA = "reports/validation/labels"
_DAY_FOLDER = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})/")


class EventTimes:
    """The key and time of a use case's validated events, read per day once per look at the feed."""

    def __init__(self, storage: Storage, use_case: UseCase) -> None:
        self.storage, self.use_case = storage, use_case
        self._days: dict[date, pd.DataFrame | None] = {}

    def before(self, day: date) -> pd.DataFrame | None:
        """Return the events of ``day`` and the ``labels.max_delay_days`` before it; None when none."""
        import pandas as pd

        columns = [self.use_case.key_column, self.use_case.time_column]
        days = [day - timedelta(days=k) for k in range(self.use_case.labels.max_delay_days + 1)]
        for d in days:
            if d not in self._days:
                self._days[d] = self.storage.read_days(
                    "validated", self.use_case.dataset, [d], columns=columns
                )
        frames = [self._days[d] for d in days if self._days[d] is not None]
        return pd.concat(frames, ignore_index=True) if frames else None


class LabelsRejectedError(RuntimeError):
    """Raised by the ingest DAG's label step when a label delivery was quarantined (the rest landed)."""


@dataclass
class LabelFeedResult:
    """What one look at the label feed did."""

    landed: list[str] = field(default_factory=list)  # URIs of label files published this time
    rows: int = 0  # label rows in them
    seen: int = 0  # files landed or quarantined by an earlier look
    quarantined: list[str] = field(default_factory=list)  # reason.json URIs of files rejected this time

    def summary(self) -> str:
        """Return one line for the logs and the task's result."""
        return (
            f"{len(self.landed)} label file(s) landed ({self.rows} rows), "
            f"{len(self.quarantined)} quarantined, {self.seen} seen before"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (what goes through XCom)."""
        return {"landed": self.landed, "rows": self.rows, "seen": self.seen, "quarantined": self.quarantined}


def label_inbox(use_case: UseCase) -> Storage:
    """Return the label feed's folder: ``labels.uri``, else ``<source.uri>/labels/<dataset>``."""
    uri = use_case.labels.uri or f"labels/{use_case.dataset}"
    if is_absolute(uri):
        return open_folder(uri)
    return open_folder(f"{str(use_case.source.uri).rstrip('/')}/{uri.strip('/')}")


def land_labels(storage: Storage, use_case: UseCase, through: date) -> LabelFeedResult:
    """Land every label file delivered on or before ``through`` that no earlier look has landed.

    Only the folders of the ``labels.max_delay_days`` days up to ``through`` are looked at.

    A generator source, and a files source whose labels come inside the delivered file
    (``labels.mode: in_delivery``), deliver their labels with each day (``publish_validated``): nothing to do.
    """
    result = LabelFeedResult()
    if use_case.source.kind != "files" or use_case.labels.mode != "feed":
        return result
    inbox = label_inbox(use_case)
    suffix = use_case.source.suffix
    # A folder is named by its delivery day, so older folders were looked at when they were new: each look
    # reads only the last max_delay_days of them, which bounds its cost however long the feed runs.
    oldest = through - timedelta(days=use_case.labels.max_delay_days)
    events = EventTimes(storage, use_case)  # the files of one look share their events' reads
    for key in sorted(inbox.list("")):
        match = _DAY_FOLDER.search(f"/{key}")
        if not key.endswith(suffix) or match is None:
            continue
        day = date.fromisoformat(match.group(1))
        if day > through or day < oldest:
            continue
        data = inbox.read_bytes(key)
        file_id = batch_id_of(data)
        published = f"{partition_key(LABELS_AREA, use_case.dataset, day)}/{file_id}.parquet"
        rejected = f"{partition_key(QUARANTINE_AREA, use_case.dataset, day)}/{file_id}"
        if storage.exists(published) or storage.exists(f"{rejected}/reason.json"):
            result.seen += 1
            continue
        raw_key = f"{partition_key(RAW_AREA, use_case.dataset, day)}/{file_id}{suffix}"
        if not storage.exists(raw_key):
            storage.write_bytes(raw_key, data)
        frame, failures, report_uri = check_label_delivery(storage, use_case, data, day, file_id, events)
        if failures:
            reason = {
                "suite": "labels contract",
                "success": False,
                "failures": failures,
                "dataset": use_case.dataset,
                "day": day.isoformat(),
                "file_id": file_id,
                "inbox_uri": inbox.uri(key),
                "raw_uri": storage.uri(raw_key),
                "gx_result_uri": report_uri,
            }
            storage.write_bytes(f"{rejected}/labels{suffix}", data)
            reason_uri = storage.write_json(f"{rejected}/reason.json", reason)
            result.quarantined.append(reason_uri)
            log.error(
                "Label delivery %s failed its contract (%s); quarantined, reason at %s",
                inbox.uri(key),
                "; ".join(f["details"] for f in failures),
                reason_uri,
            )
            continue
        result.landed.append(storage.write_frame(published, frame))
        result.rows += len(frame)
        log.info("Landed %d labels delivered %s from %s", len(frame), day, inbox.uri(key))
    log.info("Label feed of %s through %s: %s", use_case.name, through, result.summary())
    return result


def check_label_delivery(
    storage: Storage,
    use_case: UseCase,
    data: bytes,
    day: date,
    file_id: str,
    events: EventTimes | None = None,
) -> tuple[pd.DataFrame, list[dict[str, Any]], str | None]:
    """Return (key, target, label_time rows; contract failures; the GX result URI when a suite ran).

    The failures have the raw suite's reason format: ``expectation``, ``column``, ``details``.
    """
    import pandas as pd

    key, target, known = use_case.key_column, use_case.target_column, use_case.labels.known_at_column
    task = task_spec(use_case.task)
    schema = {key: use_case.schema_[key], target: task.label_kind, known: "datetime"}
    try:
        frame = read_delivery(data, use_case, schema)
    except Exception as exc:
        fmt = use_case.source.format
        return pd.DataFrame(), [_failure(f"file_is_readable_{fmt}", None, f"not readable {fmt}: {exc}")], None
    missing = [c for c in (key, target, known) if c not in frame.columns]
    if missing:
        details = f"columns {missing} are missing (the file has {list(frame.columns)}); a label delivery "
        details += f"needs {key}, {target} and {known} (labels.known_at_column)"
        return frame, [_failure("expect_label_columns", None, details)], None
    failures = _row_failures(events or EventTimes(storage, use_case), frame, use_case, day)
    report_uri = None
    suite = use_case.suites.get("labels")
    if suite:
        from mlloop.validation import validate_frame

        report = validate_frame(frame, suite)
        report_key = f"{partition_key(REPORT_AREA, use_case.dataset, day)}/{file_id}.json"
        report_uri = storage.write_json(report_key, report.result)
        failures += [] if report.success else report.to_reason()["failures"]
    if failures:
        return frame, failures, report_uri
    labels = pd.DataFrame(
        {
            key: frame[key],
            target: frame[target].astype(task.label_dtype),
            LABEL_TIME_COLUMN: pd.to_datetime(frame[known], utc=True),
        }
    )
    return labels, [], report_uri


def _row_failures(
    events: EventTimes, frame: pd.DataFrame, use_case: UseCase, day: date
) -> list[dict[str, Any]]:
    """Return the built-in label checks' failures: missing values, target values, known-at bounds."""
    import pandas as pd

    key, target, known = use_case.key_column, use_case.target_column, use_case.labels.known_at_column
    failures = target_failures(frame, key, target, use_case.task)
    nulls = int(frame[known].isna().sum())
    if nulls:
        failures.append(
            _failure("expect_column_values_to_not_be_null", known, f"{nulls} row(s) without a value")
        )
    try:
        times = pd.to_datetime(frame[known], utc=True)
    except (ValueError, TypeError) as exc:
        return [
            *failures,
            _failure("expect_column_values_to_be_in_type_list", known, f"not timestamps: {exc}"),
        ]
    end = pd.Timestamp(datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC))
    late = int((times >= end).sum())
    if late:
        failures.append(
            _failure(
                "expect_label_known_by_its_delivery",
                known,
                f"{late} label(s) known after the end of their delivery day {day} (up to {times.max()}): a "
                "label delivered on a day cannot become known later; deliver it in its own day's folder",
            )
        )
    return failures + _before_event_failures(events, frame.assign(**{known: times}), use_case, day)


def _before_event_failures(
    events: EventTimes, frame: pd.DataFrame, use_case: UseCase, day: date
) -> list[dict[str, Any]]:
    """Return a failure when labels are known before their events (events of ``max_delay_days`` looked up)."""
    key, known, when = use_case.key_column, use_case.labels.known_at_column, use_case.time_column
    looked_up = events.before(day)
    if looked_up is None:
        return []
    import pandas as pd

    joined = frame[[key, known]].merge(looked_up, on=key, how="inner")
    early = joined[joined[known] < pd.to_datetime(joined[when], utc=True)]
    if early.empty:
        return []
    examples = ", ".join(str(v) for v in early[key].head(3))
    return [
        _failure(
            "expect_label_known_after_its_event",
            known,
            f"{len(early)} label(s) known before their event (e.g. {examples}): {known} must not precede "
            f"{when}; check the feed's clock or timezone",
        )
    ]


def _failure(expectation: str, column: str | None, details: str) -> dict[str, Any]:
    """Return one failure in the validation reason format."""
    return {"expectation": expectation, "column": column, "details": details}
