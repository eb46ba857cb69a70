"""A real registry with two trained champions-to-be, and a way to run the scoring service as a process.

``use_case_folder`` adds a use-case folder declaring more than one use case (copies of card_fraud with
their own dataset and model), for the tests of one service serving several.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlloop.data.generator import generate_day
from mlloop.ingestion.batches import ingest_day
from mlloop.storage import Storage
from mlloop.usecase import USECASE_DIR, load_use_case

DAYS = [dt.date(2026, 10, 1) + dt.timedelta(days=i) for i in range(3)]
ROWS = 8000
PII_KEY = "serving-tests-pii-key-0123456789"


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


@pytest.fixture(scope="module")
def shared_service(registry: Registry, free_port, tmp_path_factory) -> Iterator[ServiceProcess]:
    """One running service for tests that change nothing (the request contract)."""
    service = launch(registry, free_port(), tmp_path_factory.mktemp("shared-service"))
    service.wait_ready()
    yield service
    service.stop(signal.SIGKILL)


@dataclass(frozen=True)
class UseCaseFolder:
    """A use-case folder: card_fraud, two copies with their own dataset and model, one broken declaration.

    ``card_fraud`` serves the registry's model (champion v1); ``card_fraud_eu`` its own registered model
    (the same two trained runs registered again, champion v2) and takes one more field, ``region``;
    ``card_fraud_apac`` a model that has no version (no champion); ``broken`` does not load (it
    declares no dataset).
    """

    path: Path
    models: dict[str, str]
    datasets: dict[str, str]


@pytest.fixture(scope="session")
def use_case_folder(registry: Registry, tmp_path_factory) -> UseCaseFolder:
    """Write the declarations and register card_fraud_eu's two versions (no training: the runs exist)."""
    from mlflow import MlflowClient

    from mlloop.registry.champion import promote

    folder = tmp_path_factory.mktemp("usecases")
    base = yaml.safe_load((USECASE_DIR / "card_fraud.yaml").read_text())
    models = {
        "card_fraud": registry.model_name,
        "card_fraud_eu": f"{registry.model_name}-eu",
        "card_fraud_apac": f"{registry.model_name}-apac-never-registered",
    }
    datasets = {
        "card_fraud": "transactions",
        "card_fraud_eu": "transactions_eu",
        "card_fraud_apac": "transactions_apac",
    }
    for name, model in models.items():
        declaration = {**base, "name": name, "dataset": datasets[name], "model_name": model}
        if name == "card_fraud_eu":  # a contract of its own: one optional field card_fraud refuses
            declaration["schema"] = {**base["schema"], "region": "string"}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(declaration, sort_keys=False))
    broken = {k: v for k, v in base.items() if k != "dataset"} | {"name": "broken"}
    (folder / "broken.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))

    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    eu = models["card_fraud_eu"]
    client.create_registered_model(eu)
    for version in ("2", "1"):  # eu v1 is card_fraud's v2 (seed 2), eu v2 its v1 (seed 1)
        source = client.get_model_version(registry.model_name, version)
        model_id = source.model_id or source.source.removeprefix("models:/")  # the logged model
        client.create_model_version(
            eu, source=source.source, run_id=source.run_id, tags=source.tags, model_id=model_id
        )
    promote(client, eu, "2", actor="tests", reason="serving tests", gate_report="none")
    return UseCaseFolder(folder, models, datasets)


@pytest.fixture(scope="module")
def many_service(registry: Registry, use_case_folder: UseCaseFolder, free_port, tmp_path_factory):
    """One service serving ``use_case_folder`` (card_fraud the default), writing each answer at once."""
    folder = tmp_path_factory.mktemp("many-service")
    service = launch(
        registry,
        free_port(),
        folder,
        folder / "data",
        usecases_dir=str(use_case_folder.path),
        use_cases=None,
        model_name=None,
        inference_flush_rows="1",
    )
    service.wait_ready()
    yield service, folder / "data"
    service.stop(signal.SIGKILL)
