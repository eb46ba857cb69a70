"""Data quality of a monitored window: missing shares per column and categories the model never learned.

Evidently 0.7 computes the numbers (``MissingValueCount`` per column, ``OutListValueCount`` against each
categorical column's declared vocabulary) and renders the HTML report; the values outside the vocabulary
are listed by pandas so the record can name them. On built features every unseen category already reads
``__unknown__`` (``categorical_column``), so that is what it counts there; on raw batches it names them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger("mlloop.monitoring")


@dataclass(frozen=True)
class ColumnQuality:
    """One column of the window: missing share and, for a categorical, what lies outside its vocabulary."""

    column: str
    missing_share: float
    new_category_share: float | None = None  # of the non-missing values; None for numeric columns
    new_categories: tuple[str, ...] = ()  # the most frequent ones, at most five


@dataclass(frozen=True)
class QualityResult:
    """Data quality of one window."""

    rows: int
    columns: list[ColumnQuality]
    seconds: float
    report_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return asdict(self)

    def findings(self, min_share: float = 0.001) -> list[str]:
        """Return one line per column with missing values or new categories above ``min_share``."""
        lines = []
        for c in self.columns:
            if c.missing_share > min_share:
                lines.append(f"{c.column}: {c.missing_share:.1%} missing")
            if c.new_category_share and c.new_category_share > min_share:
                lines.append(
                    f"{c.column}: {c.new_category_share:.1%} new categories ({', '.join(c.new_categories)})"
                )
        return lines


def quality_changes(
    current: QualityResult, reference: QualityResult, min_increase: float = 0.01
) -> list[str]:
    """Return the findings of ``current`` that ``reference`` does not share (missing or new shares up by more
    than ``min_increase``): history features are missing by design for a customer's first payment."""
    before = {c.column: c for c in reference.columns}
    lines = []
    for c in current.columns:
        base = before.get(c.column)
        if base is None:
            continue
        if c.missing_share - base.missing_share > min_increase:
            lines.append(f"{c.column}: {c.missing_share:.1%} missing (reference {base.missing_share:.1%})")
        new, old = c.new_category_share or 0.0, base.new_category_share or 0.0
        if new - old > min_increase:
            lines.append(
                f"{c.column}: {new:.1%} new categories (reference {old:.1%}; {', '.join(c.new_categories)})"
            )
    return lines


def check_quality(
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    vocabularies: Mapping[str, Sequence[str]],
    html_path: str | Path | None = None,
) -> QualityResult:
    """Return missing shares of every column and new-category shares of the categorical ones.

    Raises:
        ValueError: when a declared column is missing from ``current`` or the frame is empty.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MissingValueCount, OutListValueCount

    started = time.perf_counter()
    absent = [c for c in [*numeric, *categorical] if c not in current.columns]
    if absent:
        raise ValueError(f"check_quality: columns {absent} are not in the window; rebuild its features")
    if current.empty:
        raise ValueError("check_quality: the window has no rows; ingest the day before monitoring it")
    known = {c: list(vocabularies.get(c, ())) for c in categorical}
    frame = current[[*numeric, *categorical]].copy()
    for column in categorical:
        frame[column] = frame[column].astype("object")
    metrics = [MissingValueCount(column=c) for c in [*numeric, *categorical]]
    metrics += [OutListValueCount(column=c, values=known[c]) for c in categorical]
    definition = DataDefinition(numerical_columns=list(numeric), categorical_columns=list(categorical))
    snapshot = Report(metrics).run(Dataset.from_pandas(frame, data_definition=definition), None)
    values = {
        (m["config"]["type"].rsplit(":", 1)[-1], m["config"]["column"]): m["value"]
        for m in snapshot.dict()["metrics"]
    }
    columns = []
    for column in [*numeric, *categorical]:
        missing = float(values[("MissingValueCount", column)]["share"])
        if column not in known:
            columns.append(ColumnQuality(column, missing))
            continue
        outside = frame[column][frame[column].notna() & ~frame[column].isin(known[column])]
        top = tuple(str(v) for v in outside.value_counts().head(5).index)
        share = float(values[("OutListValueCount", column)]["share"])
        columns.append(ColumnQuality(column, missing, share, top))
    report = None
    if html_path is not None:
        snapshot.save_html(str(html_path))  # Evidently writes only when given a str
        report = str(html_path)
    result = QualityResult(len(current), columns, round(time.perf_counter() - started, 2), report)
    log.info("Data quality of %d rows: %s", len(current), "; ".join(result.findings()) or "no finding")
    return result
