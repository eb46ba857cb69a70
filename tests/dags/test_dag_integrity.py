"""DAG integrity: every DAG file imports cleanly, is documented and retried, and imports nothing heavy.

What a parse costs against a trivial TaskFlow DAG is measured by bench/dag_parse.py (timings are noisy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (REPO_ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = (
    "pandas",
    "numpy",
    "pyarrow",
    "great_expectations",
    "mlflow",
    "torch",
    "xgboost",
    "evidently",
    "sklearn",
    "boto3",
)
EXPECTED_DAG_IDS = {
    "ingest_card_fraud",
    "train_card_fraud",
    "monitor_card_fraud",
    "rollback_card_fraud",
    "housekeeping_card_fraud",
    "retire_card_fraud",
}

PROBE = textwrap.dedent("""
    import runpy, sys, time, json
    import airflow.sdk, pendulum
    started = time.perf_counter()
    runpy.run_path(sys.argv[1])
    elapsed = time.perf_counter() - started
    heavy = [m for m in sys.argv[2].split(",") if m in sys.modules]
    print(json.dumps({"seconds": elapsed, "heavy": heavy}))
""")


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags"))


def test_dag_files_exist() -> None:
    assert DAG_FILES, "dags/ holds no DAG file"


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= EXPECTED_DAG_IDS


def test_every_dag_has_tags_retries_and_docs(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md.strip()) > 80, f"{dag_id} has no doc_md"
        assert dag.default_args.get("owner"), f"{dag_id} has no owner"
        for task in dag.tasks:
            # Validation failures fail fast on purpose (retries=0); every other task retries.
            if task.task_id != "validate":
                assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def _python(*args: str) -> str:
    """Run a fresh interpreter with ``args`` in the test's environment; return its last stdout line."""
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def _run_probe(path: Path, tmp_path: Path) -> dict:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    return json.loads(_python(str(probe), str(path), ",".join(HEAVY_MODULES)))


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_no_heavy_library(path: Path, tmp_path: Path) -> None:
    result = _run_probe(path, tmp_path)
    assert result["heavy"] == [], f"{path.name} imports {result['heavy']} at parse time; import inside tasks"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parse_makes_no_connection_or_variable_lookup(path: Path, airflow_db, monkeypatch) -> None:
    import runpy

    from airflow import settings
    from airflow.sdk import BaseHook, Connection, Variable
    from sqlalchemy import event

    lookups: list[str] = []

    def _forbidden(kind: str):
        def _record(*args, **kwargs):
            lookups.append(f"{kind}{args}")
            raise AssertionError(f"{kind} looked up at parse time")

        return _record

    monkeypatch.setattr(Connection, "get", classmethod(_forbidden("Connection.get")))
    monkeypatch.setattr(Variable, "get", staticmethod(_forbidden("Variable.get")))
    monkeypatch.setattr(BaseHook, "get_connection", classmethod(_forbidden("BaseHook.get_connection")))
    queries: list[str] = []
    engine = settings.engine
    assert engine is not None, "Airflow's ORM is not configured in the test session"

    def _count(conn, cursor, statement, *args):
        queries.append(statement)

    event.listen(engine, "before_cursor_execute", _count)
    try:
        runpy.run_path(str(path))
    finally:
        event.remove(engine, "before_cursor_execute", _count)
    assert lookups == []
    assert len(queries) <= 1, f"{path.name} ran {len(queries)} DB queries at parse: {queries[:3]}"
