"""The ingestion DAG run for real (dag.test) on generated days: clean days publish, faults quarantine."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlloop.data.scenarios import FAULT_SCENARIOS
from mlloop.storage import Storage

PII_KEY = "canary-hmac-key-do-not-log-7f3a91c2"
ROWS = 3000
# Which expectation must be named for each fault (the generator's fault, the contract's rule).
EXPECTED_FAILURE = {
    "fault_nulls": "expect_column_values_to_not_be_null",
    "fault_wrong_types": "expect_column_values_to_be_in_type_list",
    "fault_out_of_range": "expect_column_values_to_be_between",
    "fault_renamed_column": "expect_table_columns_to_match_ordered_list",
    "fault_missing_column": "expect_table_columns_to_match_ordered_list",
    "fault_duplicate_ids": "expect_column_values_to_be_unique",
    "fault_empty": "expect_table_row_count_to_be_between",
    "fault_malformed": "file_is_readable_parquet",
}


@pytest.fixture(scope="module")
def ingest_dag(load_dag):
    return load_dag("ingest_card_fraud")


@pytest.fixture
def env(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Storage:
    monkeypatch.setenv("MLLOOP_PII_KEY", PII_KEY)
    return Storage(str(data_root))


_counter = iter(range(10_000))


def _run(dag, day: str, scenario: str):
    """Run the DAG once through dag.test with the day/scenario Params; return the finished DagRun."""
    logical = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=next(_counter))
    return dag.test(logical_date=logical, run_conf={"day": day, "scenario": scenario, "rows": ROWS})


def _task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _asset_events(dag_run) -> list:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(AssetEvent).filter(AssetEvent.source_run_id == dag_run.run_id).all()


def test_clean_day_is_published_with_asset_event_and_no_raw_pii(ingest_dag, env: Storage, capfd) -> None:
    dag_run = _run(ingest_dag, "2026-11-20", "none")
    assert str(dag_run.state) == "success", _task_states(dag_run)
    raw_keys = env.list("raw/transactions/date=2026-11-20")
    validated_keys = env.list("validated/transactions/date=2026-11-20")
    assert len(raw_keys) == 1 and len(validated_keys) == 1
    assert env.list("quarantine/transactions") == []
    validated = env.read_frame(validated_keys[0])
    raw = pd.read_parquet(io.BytesIO(env.read_bytes(raw_keys[0])))
    assert len(validated) == len(raw) == ROWS
    assert "card_number" not in validated.columns
    as_text = validated.astype(str).to_csv(index=False)
    assert not any(card in as_text for card in raw["card_number"].head(500))
    events = _asset_events(dag_run)
    assert len(events) == 1
    assert events[0].extra["day"] == "2026-11-20" and events[0].extra["rows"] == ROWS
    assert env.list("reports/validation/transactions/date=2026-11-20"), "GX result not kept"
    out, err = capfd.readouterr()
    logs = out + err + "".join(p.read_text(errors="ignore") for p in _airflow_logs())
    assert PII_KEY not in logs


def _airflow_logs() -> list[Path]:
    import os

    return [p for p in (Path(os.environ["AIRFLOW_HOME"]) / "logs").rglob("*") if p.is_file()]


def test_rerunning_a_day_writes_the_same_objects(ingest_dag, env: Storage) -> None:
    first = _run(ingest_dag, "2026-11-21", "none")
    before = {k: env.read_bytes(k) for k in env.list("validated/transactions") + env.list("raw/transactions")}
    second = _run(ingest_dag, "2026-11-21", "none")
    after = {k: env.read_bytes(k) for k in env.list("validated/transactions") + env.list("raw/transactions")}
    assert str(first.state) == str(second.state) == "success"
    assert before == after and len(after) == 2


@pytest.mark.parametrize("scenario", FAULT_SCENARIOS)
def test_fault_is_quarantined_and_nothing_is_published(
    ingest_dag, env: Storage, scenario: str, capfd
) -> None:
    dag_run = _run(ingest_dag, "2026-11-22", scenario)
    states = _task_states(dag_run)
    assert str(dag_run.state) == "failed"
    assert states["land"] == "success"
    assert states["validate"] == "failed"
    assert states["publish"] == "upstream_failed"
    assert env.list("validated/transactions") == []
    assert _asset_events(dag_run) == []
    reasons = [k for k in env.list("quarantine/transactions/date=2026-11-22") if k.endswith("reason.json")]
    assert len(reasons) == 1
    reason = env.read_json(reasons[0])
    failed = {f["expectation"] for f in reason["failures"]}
    assert EXPECTED_FAILURE[scenario] in failed, failed
    assert reason["scenario"] == scenario
    assert env.exists(reason["quarantined_uri"])
    out, err = capfd.readouterr()
    logs = out + err + "".join(p.read_text(errors="ignore") for p in _airflow_logs())
    assert EXPECTED_FAILURE[scenario] in logs, "the task failure does not name the failed expectation"
    assert reason["quarantined_uri"] in logs, "the task failure does not name the quarantine path"
