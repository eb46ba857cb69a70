"""A real registry with two trained champions-to-be, and a way to run the scoring service as a process.

The registry and the service process live in ``service_stack.py`` (tests/faults uses them too).
``use_case_folder`` adds a use-case folder declaring more than one use case (copies of card_fraud with
their own dataset and model), for the tests of one service serving several.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from service_stack import PII_KEY, Registry, ServiceProcess, launch, registry, start_service

from mlloop.usecase import USECASE_DIR

__all__ = ["PII_KEY", "registry", "start_service"]


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
