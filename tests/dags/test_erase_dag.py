"""The erasure DAG run for real (dag.test): a dry run changes nothing, an apply erases and names its run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from mlloop.storage import Storage

PII_KEY = "erase-dag-test-key-0123456789"
INFERENCE = "inference/transactions/date=2030-01-01/part-20300101T000000-abcdefabcdef.parquet"


@pytest.fixture
def storage(data_root: Path, tmp_path: Path, mlloop_env) -> Storage:
    mlloop_env(pii_key=PII_KEY, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    storage = Storage(str(data_root))
    served = pd.DataFrame({"transaction_id": ["T1", "T2", "T3"], "customer_id": ["C1", "C2", "C1"]})
    storage.write_frame(INFERENCE, served.assign(score=0.5))
    return storage


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def test_the_form_dry_runs_then_applies(load_dag, storage: Storage) -> None:
    dag = load_dag("erase_card_fraud")
    conf = {"column": "customer_id", "value": "C1"}

    dry = dag.test(logical_date=datetime(2030, 1, 2, tzinfo=UTC), run_conf=conf)
    assert _states(dry) == {"erase_subject": "success"}
    assert len(storage.read_frame(INFERENCE)) == 3 and not storage.exists("ledger/erasure/transactions.jsonl")

    applied = dag.test(logical_date=datetime(2030, 1, 3, tzinfo=UTC), run_conf=conf | {"apply": True})
    assert _states(applied) == {"erase_subject": "success"}
    assert list(storage.read_frame(INFERENCE).transaction_id) == ["T2"]
    (entry,) = [
        json.loads(line) for line in storage.read_bytes("ledger/erasure/transactions.jsonl").splitlines()
    ]
    assert entry["actor"] == f"airflow:{applied.run_id} by dag_test"  # dag.test triggers as user dag_test
    assert entry["counts"]["inference"] == {"objects": 1, "rows": 2}
