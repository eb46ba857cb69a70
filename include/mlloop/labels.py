"""Delayed ground truth: which labels count as known at a time, one rule for training, serving and monitoring.

Labels arrive in ``labels/<dataset>/date=D/`` long after their events, each with the instant it became
known (``label_time``), and a label may be corrected by a later delivery. The rule, everywhere:

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
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING

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


def read_known_labels(
    storage: Storage, use_case: UseCase, days: Iterable[date | str], as_of: datetime
) -> pd.DataFrame | None:
    """Return the labels delivered for ``days`` known at ``as_of`` (``known_labels``); None when none."""
    delivered = storage.read_days(LABELS_AREA, use_case.dataset, days)
    if delivered is None:
        return None
    return known_labels(delivered, as_of, key_column=use_case.key_column)
