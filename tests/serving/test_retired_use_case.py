"""A retired use case answers 410 Gone on its route, naming the retirement, while the others still score.

The service serves card_fraud and a copy of it, card_fraud_retired, whose model is a copy of the
registry's v2 (its own artifacts, so archiving them at retirement deletes nothing the other tests load).
The copy is retired for real (``mlloop.lifecycle.retire`` against the real registry) while the service
runs; no Airflow runs here, so the fake API knows none of its DAGs (nothing to pause).
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request

import pytest
import yaml
from service_stack import launch

from mlloop.ops.airflow_api import AirflowAPIError
from mlloop.serving.client import request_rows
from mlloop.usecase import USECASE_DIR, load_use_case

pytestmark = pytest.mark.slow
RETIRED = "card_fraud_retired"
COPY_PATH = "retired-use-case-model"


class NoDagsAirflow:
    """An Airflow API where none of the use case's DAGs is registered (no Airflow runs in this test)."""

    def get(self, path: str) -> dict:
        raise AirflowAPIError(f"GET /api/v2{path} -> HTTP 404: not found", 404)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        raise AssertionError(f"{dag_id} is not registered and cannot be paused")


def post(url: str, body: object) -> tuple[int, dict]:
    """POST ``body`` as JSON to ``url``; return (status, JSON body) whatever the status."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def retiring_service(registry, free_port, tmp_path, monkeypatch):
    """A service serving card_fraud and card_fraud_retired (champion: a copy of v2); the client too."""
    import mlflow
    from mlflow import MlflowClient

    from mlloop.config import get_settings
    from mlloop.registry.champion import promote

    base = yaml.safe_load((USECASE_DIR / "card_fraud.yaml").read_text())
    folder = tmp_path / "usecases"
    folder.mkdir()
    models = {"card_fraud": registry.model_name, RETIRED: f"{registry.model_name}-retired"}
    for name, model in models.items():
        dataset = "transactions" if name == "card_fraud" else "transactions_retired"
        declaration = {**base, "name": name, "dataset": dataset, "model_name": model}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(declaration, sort_keys=False))

    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    source = client.get_model_version(registry.model_name, "2")
    downloaded = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{registry.model_name}/2",
        dst_path=str(tmp_path / "model-copy"),
        tracking_uri=registry.tracking_uri,
    )
    # The copy lives in v2's run (the server takes a version's files from its run), beside its snapshot.
    copy = f"{COPY_PATH}-{tmp_path.name}"
    client.log_artifacts(source.run_id, downloaded, copy)
    client.create_registered_model(models[RETIRED])
    run_uri = client.get_run(source.run_id).info.artifact_uri
    version = client.create_model_version(
        models[RETIRED], source=f"{run_uri}/{copy}", run_id=source.run_id, tags=source.tags
    )
    assert not version.model_id, "the copy must not be v2's logged model: retiring deletes its files"
    promote(client, models[RETIRED], "1", actor="tests", reason="serving tests", gate_report="none")

    # This process retires the copy: it must read the same folder and registry as the service.
    monkeypatch.setenv("MLLOOP_USECASES_DIR", str(folder))
    monkeypatch.setenv("MLLOOP_MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.delenv("MLLOOP_MODEL_NAME", raising=False)
    get_settings.cache_clear()
    service = launch(
        registry,
        free_port(),
        tmp_path,
        tmp_path / "data",
        usecases_dir=str(folder),
        use_cases=None,
        model_name=None,
    )
    service.wait_ready()
    yield service, client, (source.run_id, copy)
    service.stop(signal.SIGKILL)
    get_settings.cache_clear()


def test_a_retired_use_case_answers_410_naming_the_retirement_while_another_answers_200(
    registry, retiring_service
) -> None:
    from mlloop.lifecycle.retire import retire

    service, client, copy = retiring_service
    row = request_rows(registry.traffic.iloc[:1], load_use_case("card_fraud"))[0]
    status, before = post(f"{service.url}/predict/{RETIRED}", row)
    assert status == 200, before

    result = retire(
        RETIRED, "tests:carol", "replaced by card_fraud", apply=True, client=client, airflow=NoDagsAirflow()
    )
    assert result["changed"]
    assert client.list_artifacts(*copy) == []  # its one version archived: the copy's files deleted

    deadline = time.monotonic() + 30
    while (answer := post(f"{service.url}/predict/{RETIRED}", row))[0] != 410:
        assert answer[0] == 200, answer  # served until the follower sees the alias gone, then 410
        assert time.monotonic() < deadline, f"still {answer} after 30 s\n{service.log()}"
        time.sleep(0.3)
    status, gone = answer
    detail = gone["detail"]
    assert f"use case '{RETIRED}' was retired on {result['retirement']['at']} by tests:carol" in detail
    assert "(replaced by card_fraud)" in detail
    assert "Call another use case" in detail and "platform team" in detail
    assert gone["retired"] == {**result["retirement"], "use_case": RETIRED}
    status, batch = post(f"{service.url}/predict/{RETIRED}", [row, row])
    assert status == 410 and batch["detail"] == detail  # batches too, before their rows are read

    status, served = post(f"{service.url}/predict/card_fraud", row)
    assert status == 200, served
    assert (served["model_name"], served["model_version"]) == (registry.model_name, "1")
    with urllib.request.urlopen(f"{service.url}/ready", timeout=10) as resp:
        ready = json.loads(resp.read())
    assert resp.status == 200 and ready["use_cases"][RETIRED]["status"] == "retired"
    assert ready["use_cases"][RETIRED]["reason"] == detail
