"""The scoring service's test stack, shared by tests/serving and tests/faults: a real registry with two
trained versions, and the service run as a process (``python -m mlloop.serving``).

Both folders' conftests import the fixtures from here; the registry is built once per session whichever
folder asks first (a session fixture defined in two conftests would otherwise train twice).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from mlloop.data.generator import generate_day
from mlloop.ingestion.batches import ingest_day
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

DAYS = [dt.date(2026, 10, 1) + dt.timedelta(days=i) for i in range(3)]
ROWS = 8000
PII_KEY = "serving-tests-pii-key-0123456789"
_BUILT: dict[str, Registry] = {}


@dataclass(frozen=True)
class Registry:
    """Where the trained versions live: tracking URI, model name, data root, the next day's traffic."""

    tracking_uri: str
    model_name: str
    data_root: Path
    traffic: pd.DataFrame


@pytest.fixture(scope="session")
def registry(mlflow_server: str, tmp_path_factory) -> Registry:
    """Ingest three days, snapshot them, train two XGBoost versions (seeds 1, 2); v1 is the champion."""
    if mlflow_server not in _BUILT:
        _BUILT[mlflow_server] = _build_registry(mlflow_server, tmp_path_factory)
    return _BUILT[mlflow_server]


def _build_registry(mlflow_server: str, tmp_path_factory) -> Registry:
    """Train and promote the registry's versions (once per MLflow server)."""
    import mlflow
    from mlflow import MlflowClient

    from mlloop.config import get_settings
    from mlloop.registry.champion import promote
    from mlloop.training.fit import TrainConfig
    from mlloop.training.train import train
    from mlloop.training.windows import snapshot_days

    root = tmp_path_factory.mktemp("serving-data")
    name = f"serving-{uuid.uuid4().hex[:8]}"
    saved = {
        k: os.environ.get(k) for k in ("MLLOOP_DATA_ROOT", "MLLOOP_MLFLOW_TRACKING_URI", "MLLOOP_MODEL_NAME")
    }
    os.environ.update(
        MLLOOP_DATA_ROOT=str(root), MLLOOP_MLFLOW_TRACKING_URI=mlflow_server, MLLOOP_MODEL_NAME=name
    )
    get_settings.cache_clear()
    try:  # the settings point at this registry only while training; tests get them explicitly
        storage = Storage(str(root))
        use_case = load_use_case("card_fraud")
        for day in DAYS:
            ingest_day(storage, use_case, day, PII_KEY.encode(), rows=ROWS)
        manifest = snapshot_days(storage, use_case, DAYS, as_of=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
        mlflow.set_tracking_uri(mlflow_server)
        for seed in (1, 2):
            train(
                TrainConfig(snapshot=manifest.digest, seed=seed, dag_run_id=f"serving-{seed}", max_rounds=200)
            )
        client = MlflowClient(mlflow_server, mlflow_server)
        promote(client, name, "1", actor="tests", reason="serving tests", gate_report="none")
        traffic = generate_day(
            DAYS[-1] + dt.timedelta(days=1), rows=3000, seed=use_case.source.seed
        ).transactions
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
    return Registry(mlflow_server, name, root, traffic)


class ServiceProcess:
    """The scoring service in its own process (``python -m mlloop.serving``) on a free port."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlloop.serving", "--port", str(port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a fault test kills the group
        )

    def wait_ready(self, timeout_s: float = 120.0, status: int = 200) -> dict:
        """Wait until /ready answers ``status`` with the first model check done; return its body.

        A 503 whose reason is still "loading" means a use case has not looked for its model yet, so it
        is not an answer to wait for.
        """
        import json

        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, self.log()
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=2) as resp:
                    if resp.status == status:
                        return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                if exc.code == status:
                    body = json.loads(exc.read())
                    if body.get("reason") != "loading":
                        return body
            except OSError:
                pass
            assert time.monotonic() < deadline, f"service not ready in {timeout_s}s\n{self.log()}"
            time.sleep(0.3)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send ``sig`` and wait for the process to exit; return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def launch(
    registry: Registry, port: int, folder: Path, data_root: Path | None = None, **overrides: str | None
) -> ServiceProcess:
    """Start the service against ``registry``; ``overrides`` are MLLOOP_* settings (name without prefix).

    By default it serves card_fraud alone, under the registry's model name; an override of None unsets
    that setting.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLLOOP_")}
    env.update(
        MLLOOP_DATA_ROOT=str(data_root or folder / "service-data"),
        MLLOOP_MLFLOW_TRACKING_URI=registry.tracking_uri,
        MLLOOP_MODEL_NAME=registry.model_name,
        MLLOOP_USE_CASES="card_fraud",
        MLLOOP_PII_KEY=PII_KEY,
        MLLOOP_SERVING_POLL_SECONDS="0.5",
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(f"MLLOOP_{key.upper()}", None)
        else:
            env[f"MLLOOP_{key.upper()}"] = str(value)
    return ServiceProcess(env, port, folder / f"service-{port}.log")


@pytest.fixture
def start_service(registry: Registry, free_port, tmp_path: Path):
    """Return a function starting the service against ``registry`` (settings overrides as keyword args)."""
    started: list[ServiceProcess] = []

    def _start(data_root: Path | None = None, **overrides: str | None) -> ServiceProcess:
        service = launch(registry, free_port(), tmp_path, data_root, **overrides)
        started.append(service)
        return service

    yield _start
    for service in started:
        service.stop(signal.SIGKILL)
