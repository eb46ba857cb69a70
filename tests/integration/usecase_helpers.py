"""What the declared-use-case tests share: GX suite documents, deliveries, their deployment and DAG runs.

``test_third_use_case`` (pump_failure, binary) and ``test_regression_use_case`` (parcel_eta, regression)
each declare a small use case in temporary folders, deliver its days as a ``files`` source would and run
its DAGs with ``dag.test()``; only their declarations, data and assertions differ.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlloop.labels import feed_files
from mlloop.validation.suite import EXPECTATIONS_DIR


def expectation(kind: str, **kwargs: object) -> dict:
    """Return one GX 1.x expectation document."""
    return {"type": kind, "kwargs": kwargs, "meta": {}, "severity": "critical"}


def text(column: str) -> dict:
    """Return a string-type expectation: an object column by its values, a string-dtype one by its dtype."""
    return expectation(
        "expect_column_values_to_be_in_type_list", column=column, type_list=["str", "StringDtype"]
    )


def dtype(column: str, name: str) -> dict:
    """Return an expectation that ``column`` has the dtype ``name``."""
    return expectation("expect_column_values_to_be_in_type_list", column=column, type_list=[name])


def of_type(column: str, type_: str) -> dict:
    """Return an expectation that ``column``'s values are of the GX type ``type_``."""
    return expectation("expect_column_values_to_be_of_type", column=column, type_=type_)


def between(column: str, low: float, high: float) -> dict:
    """Return a range expectation."""
    return expectation("expect_column_values_to_be_between", column=column, min_value=low, max_value=high)


def suite(
    name: str,
    columns: list[str],
    types: list[dict],
    ranges: dict[str, tuple[float, float]],
    value_set: tuple[str, list[str]],
    key: str,
) -> dict:
    """Return a GX 1.x suite: ordered columns, row count, types, not null, ranges, a value set, unique key."""
    category, values = value_set
    return {
        "name": name,
        "id": None,
        "expectations": [
            expectation("expect_table_columns_to_match_ordered_list", column_list=columns),
            expectation("expect_table_row_count_to_be_between", min_value=1, max_value=1_000_000),
            *types,
            *(expectation("expect_column_values_to_not_be_null", column=c) for c in columns),
            *(between(column, low, high) for column, (low, high) in ranges.items()),
            expectation("expect_column_values_to_be_in_set", column=category, value_set=values),
            expectation("expect_column_values_to_be_unique", column=key),
        ],
        "meta": {},
        "notes": None,
    }


def write_suites(folder: Path, *suites: dict) -> None:
    """Copy the bundled suites into ``folder`` (declarations copied from them name them), then ``suites``."""
    for source in EXPECTATIONS_DIR.glob("*.json"):
        shutil.copy(source, folder / source.name)
    for document in suites:
        (folder / f"{document['name']}.json").write_text(json.dumps(document, indent=2))


def deliver(inbox: Path, dataset: str, day: date, rows: pd.DataFrame, labels: pd.DataFrame) -> None:
    """Write a day's delivery and its label feed into ``inbox`` as a ``files`` source expects them."""
    delivery = inbox / dataset / f"date={day.isoformat()}" / "part-0.parquet"
    for path, frame in [(delivery, rows), *((inbox / k, f) for k, f in feed_files(labels, dataset, day))]:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)


@contextmanager
def deployed(root: Path, tracking_uri: str, pii_key: str) -> Iterator[None]:
    """Point MLLOOP_* at ``root``'s usecases/, expectations/ and data/ and at the MLflow server."""
    from mlloop.config import get_settings

    with pytest.MonkeyPatch.context() as env:
        for variable in ("MLLOOP_MODEL_NAME", "MLLOOP_USE_CASES", "MLLOOP_USE_CASE"):
            env.delenv(variable, raising=False)
        env.setenv("MLLOOP_USECASES_DIR", str(root / "usecases"))
        env.setenv("MLLOOP_EXPECTATIONS_DIR", str(root / "expectations"))
        env.setenv("MLLOOP_DATA_ROOT", str(root / "data"))
        env.setenv("MLLOOP_MLFLOW_TRACKING_URI", tracking_uri)
        env.setenv("MLLOOP_PII_KEY", pii_key)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


def run_dag(dag: Any, logical_date: datetime, **conf: Any) -> tuple[Any, dict[str, str]]:
    """Run ``dag`` with dag.test; return the run and its task states. Every run states its Params."""
    dag_run = dag.test(logical_date=logical_date, run_conf=conf)
    return dag_run, {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def xcom(dag_run: Any, task_id: str) -> Any:
    """Return what task ``task_id`` of ``dag_run`` returned."""
    (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == task_id]
    return ti.xcom_pull(task_ids=task_id)


def serve_one(name: str, row: dict) -> tuple[dict, dict, str]:
    """Start the scoring service in-process for ``name`` until it serves; return /ready, answer, /metrics."""
    from fastapi.testclient import TestClient

    from mlloop.config import get_settings
    from mlloop.serving.app import create_app

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLLOOP_USE_CASE", name)
        env.setenv("MLLOOP_SERVING_POLL_SECONDS", "0.5")
        get_settings.cache_clear()
        with TestClient(create_app(get_settings())) as http:
            deadline = time.monotonic() + 120
            while (ready := http.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, ready.json()
                time.sleep(0.5)
            answer = http.post(f"/predict/{name}", json=row)
            assert answer.status_code == 200, (name, answer.text)
            body = answer.json()
            metrics = http.get("/metrics").text
    get_settings.cache_clear()
    return ready.json(), body, metrics
