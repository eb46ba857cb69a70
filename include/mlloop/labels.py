"""Delayed ground truth: which labels count as known at a time, one rule for training, serving and monitoring.

Labels arrive in ``labels/<dataset>/date=D/`` long after their events, each with the instant it became
known (``label_time``), and a label may be corrected by a later delivery. A generator files its labels
under their events' day D; a files source's label feed (``mlloop.ingestion.labels_feed``) under the day D
they were delivered, any day after the events. Readers therefore take the partitions from the first event
day up to the last one that may hold a delivery by ``as_of`` (``label_partitions``). The rule, everywhere:

- a label is known at ``as_of`` when its ``label_time`` is at or before ``as_of``;
- of a key's known labels the latest ``label_time`` wins (the latest correction);
- a tie (one key, the same ``label_time``) goes to the row that comes last in the frame. ``Storage.read_days``
  reads the days in order and each day's files in key order, so among equally timed labels the later
  delivery wins, and the same files always give the same answer.

Runs judge labels as known at the start of their UTC day (``labels_cutoff``), so every run of one day,
training or monitoring, sees the same labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from mlloop.storage import Storage
    from mlloop.usecase import UseCase

LABELS_AREA = "labels"
LABEL_TIME_COLUMN = "label_time"  # when a delivered label became known


def labels_cutoff(as_of: datetime) -> datetime:
    """Return the start of ``as_of``'s UTC day: the labels known by then count, so a day's runs agree."""
    return datetime.combine(as_of.astimezone(UTC).date(), time.min, tzinfo=UTC)


def known_labels(
    labels: pd.DataFrame, as_of: datetime, *, key_column: str, label_time_column: str = LABEL_TIME_COLUMN
) -> pd.DataFrame:
    """Return the labels known at ``as_of``, one row per key: its latest correction (see the module).

    Args:
        labels: delivered label rows (key, target, ``label_time_column``, any other columns), any days.
        as_of: a timezone-aware instant.
        key_column: the column naming what each label is about.
        label_time_column: when each label became known (timezone-aware, or naive UTC).

    Returns:
        The chosen rows with all their columns, in the frame's order, on a fresh index.

    Raises:
        ValueError: for a naive ``as_of`` or a frame without ``key_column`` or ``label_time_column``.
    """
    import pandas as pd

    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError(
            f"as_of {as_of!r} has no timezone; label times are UTC, pass a timezone-aware datetime "
            "such as datetime(2026, 11, 20, tzinfo=UTC)"
        )
    missing = [c for c in (key_column, label_time_column) if c not in labels.columns]
    if missing:
        raise ValueError(f"the labels frame lacks columns {missing} (it has {list(labels.columns)})")
    frame = labels.reset_index(drop=True)
    times = pd.to_datetime(frame[label_time_column], utc=True)
    known = times[times <= pd.Timestamp(as_of).tz_convert("UTC")]
    # Stable sort: equally timed labels keep the frame's order, so the last of them wins a tie.
    latest = known.sort_values(kind="mergesort").index
    chosen = frame.loc[latest, key_column].drop_duplicates(keep="last").index
    return frame.loc[chosen.sort_values()].reset_index(drop=True)


def label_partitions(days: Iterable[date | str], as_of: datetime) -> list[date]:
    """Return the label partitions that may hold labels of ``days``' events delivered before ``as_of``.

    Those are ``days`` themselves and every day from the first of them to the last that began before
    ``as_of``: a delivery filed under day D may be there from D's start, never before its events.
    """
    wanted = {d if isinstance(d, date) else date.fromisoformat(d) for d in days}
    if not wanted:
        return []
    last = (as_of.astimezone(UTC) - timedelta(microseconds=1)).date()
    span = (last - min(wanted)).days
    return sorted(wanted | {min(wanted) + timedelta(days=k) for k in range(span + 1)})


def read_delivered_labels(
    storage: Storage, use_case: UseCase, days: Iterable[date | str], as_of: datetime
) -> pd.DataFrame | None:
    """Return every label row that may judge ``days``' events by ``as_of`` (any times); None when none.

    A generator files each day's labels under that day, so only ``days`` are read for it.
    """
    partitions = label_partitions(days, as_of) if use_case.source.kind == "files" else list(days)
    return storage.read_days(LABELS_AREA, use_case.dataset, partitions)


def read_known_labels(
    storage: Storage, use_case: UseCase, days: Iterable[date | str], as_of: datetime
) -> pd.DataFrame | None:
    """Return the labels of ``days``' events known at ``as_of`` (``known_labels``); None when none.

    Labels of other days' events delivered in the same partitions come along; joins on the key drop them.
    """
    delivered = read_delivered_labels(storage, use_case, days, as_of)
    if delivered is None:
        return None
    return known_labels(delivered, as_of, key_column=use_case.key_column)


def feed_files(
    labels: pd.DataFrame, dataset: str, events_day: date, *, known_at_column: str = LABEL_TIME_COLUMN
) -> list[tuple[str, pd.DataFrame]]:
    """Return (key, rows) of the label feed files of one day's events, by the UTC day each became known.

    Keys are ``labels/<dataset>/date=K/<dataset>-<events day>.parquet``, relative to an inbox (the layout
    ``mlloop.ingestion.labels_feed`` reads), one per day K on which some of those labels became known.
    """
    import pandas as pd

    known_day = pd.to_datetime(labels[known_at_column], utc=True).dt.date
    return [
        (f"labels/{dataset}/date={day.isoformat()}/{dataset}-{events_day.isoformat()}.parquet", rows)
        for day, rows in ((d, labels[known_day == d].reset_index(drop=True)) for d in sorted(set(known_day)))
    ]


def target_failures(
    frame: pd.DataFrame, key_column: str, target_column: str, task: str = "binary"
) -> list[dict[str, Any]]:
    """Return the failures of delivered labels' key and target: a value missing, a target the task refuses.

    The task (``mlloop.tasks``) says which targets are valid: 0 or 1, or a finite number. Each failure has
    the validation reason format (``expectation``, ``column``, ``details``).
    """
    import pandas as pd

    from mlloop.tasks import task_spec

    spec = task_spec(task)

    failures = []
    for column in (key_column, target_column):
        nulls = int(frame[column].isna().sum())
        if nulls:
            failures.append(
                {
                    "expectation": "expect_column_values_to_not_be_null",
                    "column": column,
                    "details": f"{nulls} row(s) without a value",
                }
            )
    values = pd.to_numeric(frame[target_column], errors="coerce")
    bad = frame.loc[frame[target_column].notna() & spec.invalid_labels(values), target_column]
    if len(bad):
        failures.append(
            {
                "expectation": "expect_column_values_to_be_in_set",
                "column": target_column,
                "details": f"{len(bad)} value(s) not {spec.valid_labels}, e.g. {bad.head(3).tolist()}",
            }
        )
    return failures
