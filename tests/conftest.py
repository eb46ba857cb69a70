"""Test-wide setup: an isolated Airflow home (SQLite) and data root per session, before Airflow imports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="mlloop-tests-"))

# Airflow reads its configuration when first imported: point it at a throwaway home before that.
os.environ.update(
    {
        "AIRFLOW_HOME": str(_SESSION_DIR / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_SESSION_DIR / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "MLLOOP_DATA_ROOT": str(_SESSION_DIR / "data"),
    }
)
(_SESSION_DIR / "airflow").mkdir(parents=True, exist_ok=True)


# The tier of each test is its folder under tests/: `-m unit`, `-m "unit or dags"` (`make test-fast`).
TIER_BY_FOLDER = {
    "unit": "unit",
    "dags": "dags",
    "integration": "integration",
    "serving": "integration",
    "production": "production",
    "e2e": "e2e",
    "faults": "faults",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier, read from its folder; a test in no tier folder is an error."""
    tests_root = Path(__file__).resolve().parent
    for item in items:
        path = Path(item.path).resolve()
        if not path.is_relative_to(tests_root):
            continue
        folder = path.relative_to(tests_root).parts[0]
        if folder not in TIER_BY_FOLDER:
            raise pytest.UsageError(
                f"{path.relative_to(REPO_ROOT)} is in no test tier: move it under one of "
                f"{', '.join(f'tests/{name}/' for name in TIER_BY_FOLDER)} "
                "or add its folder to TIER_BY_FOLDER in tests/conftest.py"
            )
        item.add_marker(TIER_BY_FOLDER[folder])


@pytest.fixture(scope="session", autouse=True)
def _remove_session_dir():
    """Delete the session's Airflow home and data root when the test session ends."""
    yield
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Create the session's Airflow metadata DB once (``airflow db migrate``)."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return _SESSION_DIR / "airflow" / "airflow.db"


@pytest.fixture
def mlloop_env(monkeypatch: pytest.MonkeyPatch):
    """Return a function setting ``MLLOOP_<NAME>`` env vars for one test (settings cache cleared)."""
    from mlloop.config import get_settings

    def _set(**values: object) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"MLLOOP_{name.upper()}", str(value))
        get_settings.cache_clear()

    yield _set
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def load_dag(airflow_db):
    """Return a function loading one DAG from ``dags/use_cases.py`` through a DagBag (import errors fail)."""

    def _load(dag_id: str):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "use_cases.py"))
        assert bag.import_errors == {}
        assert dag_id in bag.dag_ids, f"{dag_id} is not among the DAGs built: {sorted(bag.dag_ids)}"
        return bag.get_dag(dag_id)

    return _load


@pytest.fixture
def data_root(tmp_path: Path, mlloop_env) -> Path:
    """Point MLLOOP_DATA_ROOT at a fresh folder for one test."""
    root = tmp_path / "data"
    mlloop_env(data_root=root)
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """Return a function giving a TCP port on 127.0.0.1 that is free right now."""
    return _free_port


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, free_port) -> str:
    """Start a real MLflow tracking server (SQLite, local artifacts) on 127.0.0.1; yield its URI."""
    import signal
    import time
    import urllib.request

    from mlloop.ops.services import mlflow_server_argv

    home = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log_file = open(home / "server.log", "wb")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(
        mlflow_server_argv(port, home),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=home,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "MLflow server did not answer /health in 180 s"
            time.sleep(1)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log_file.close()


@pytest.fixture
def asset_events():
    """Return a function listing the extras of the events a DAG run emitted for the Asset named ``name``."""

    def _events(dag_run, name: str) -> list[dict]:
        from airflow.models.asset import AssetEvent, AssetModel
        from airflow.utils.session import create_session

        with create_session() as session:
            events = (
                session.query(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetEvent.source_run_id == dag_run.run_id, AssetModel.name == name)
                .all()
            )
            return [dict(e.extra) for e in events]

    return _events
