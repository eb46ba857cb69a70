"""Turn a frame of a use case's rows into scoring requests (JSON rows), as a client sends them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from mlloop.usecase import UseCase


def request_rows(frame: pd.DataFrame, use_case: UseCase) -> list[dict[str, Any]]:
    """Return one JSON-ready dict per row: the schema's columns minus the target, times in ISO 8601."""
    import pandas as pd

    columns = [c for c in use_case.schema_ if c != use_case.target_column and c in frame.columns]
    out = frame[columns].copy()
    for column in columns:
        if use_case.schema_[column] == "datetime":
            out[column] = pd.DatetimeIndex(out[column]).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    out = out.astype(object).where(out.notna(), None)
    return out.to_dict("records")
