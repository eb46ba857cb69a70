"""Pieces every mlloop DAG shares: default task arguments and the window Params (light: parse time)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param

DEFAULT_ARGS: dict[str, Any] = {"owner": "mlloop", "retries": 1, "retry_delay": timedelta(seconds=30)}


def window_params(*, days: int, maximum: int, days_help: str, end_day_help: str) -> dict[str, Param]:
    """Return the ``window_days`` and ``end_day`` Params of a DAG that reads a window of validated days."""
    return {
        "window_days": Param(
            days, type="integer", minimum=1, maximum=maximum, title="Window (days)", description=days_help
        ),
        "end_day": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Last day",
            description=f"Last day of the window (YYYY-MM-DD). {end_day_help}",
        ),
    }
