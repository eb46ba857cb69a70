"""Pieces every mlloop DAG shares: the common DAG arguments and the window Params (light: parse time)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param

DEFAULT_ARGS: dict[str, Any] = {"owner": "mlloop", "retries": 1, "retry_delay": timedelta(seconds=30)}
START_DATE = pendulum.datetime(2026, 11, 1, tz="UTC")


def dag_arguments(
    use_case: str, *tags: str, doc_md: str, max_active_runs: int = 1, retries: int | None = None
) -> dict[str, Any]:
    """Return the ``@dag`` arguments every use-case DAG shares: start, no catch-up, tags, page, defaults."""
    return {
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": max_active_runs,
        "tags": ["mlloop", use_case, *tags],
        "doc_md": doc_md,
        "default_args": DEFAULT_ARGS if retries is None else DEFAULT_ARGS | {"retries": retries},
    }


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
