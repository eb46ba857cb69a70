"""One service process serving several use cases: each its own model, contract, inference log and metrics.

A use case without a champion, or whose declaration does not load, answers 503 on its own route only.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from mlloop.serving.client import request_rows
from mlloop.usecase import load_use_case

pytestmark = pytest.mark.slow
USE_CASE = load_use_case("card_fraud")


def post(url: str, path: str, body: object) -> tuple[int, dict]:
    """POST ``body`` as JSON to ``url + path``; return (status, JSON body) whatever the status."""
    request = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def rows(registry, start: int, n: int) -> list[dict]:
    return request_rows(registry.traffic.iloc[start : start + n], USE_CASE)


def test_each_route_answers_with_its_own_model(registry, use_case_folder, many_service) -> None:
    service, _ = many_service
    row = rows(registry, 0, 1)[0]
    status, fraud = post(service.url, "/predict/card_fraud", row)
    assert status == 200, fraud
    assert (fraud["model_name"], fraud["model_version"]) == (registry.model_name, "1")
    status, eu = post(service.url, "/predict/card_fraud_eu", row)
    assert status == 200, eu
    assert (eu["model_name"], eu["model_version"]) == (use_case_folder.models["card_fraud_eu"], "2")
    # eu v2 is the run card_fraud v1 was registered from: the same row gets the same score
    assert eu["prediction"]["score"] == pytest.approx(fraud["prediction"]["score"], abs=1e-9)


def test_each_use_case_checks_its_own_contract(registry, many_service) -> None:
    service, _ = many_service
    row = {**rows(registry, 1, 1)[0], "region": "west"}
    status, answer = post(service.url, "/predict/card_fraud", row)
    assert status == 422 and answer["errors"][0]["field"] == "region", answer
    assert "'card_fraud'" in answer["detail"]
    status, answer = post(service.url, "/predict/card_fraud_eu", row)
    assert status == 200, answer


def test_predict_is_the_alias_of_the_default_use_case(registry, many_service) -> None:
    service, _ = many_service
    status, answer = post(service.url, "/predict", rows(registry, 2, 3))
    assert status == 200, answer
    assert answer["model_name"] == registry.model_name and len(answer["predictions"]) == 3


def test_a_use_case_without_a_model_answers_503_on_its_route_only(registry, use_case_folder, many_service):
    service, _ = many_service
    row = rows(registry, 3, 1)[0]
    status, answer = post(service.url, "/predict/card_fraud_apac", row)
    assert status == 503, answer
    assert "'card_fraud_apac'" in answer["detail"] and "train and promote" in answer["detail"]
    assert use_case_folder.models["card_fraud_apac"] in answer["detail"]
    status, answer = post(service.url, "/predict/broken", row)
    assert status == 503, answer
    assert "broken.yaml" in answer["detail"] and "dataset: missing" in answer["detail"]
    for route in ("/predict/card_fraud", "/predict/card_fraud_eu"):
        assert post(service.url, route, row)[0] == 200
    assert "broken.yaml" in service.log()  # named at startup too


def test_an_unknown_use_case_gets_404_naming_the_known_ones(registry, many_service) -> None:
    service, _ = many_service
    status, answer = post(service.url, "/predict/churn", rows(registry, 4, 1)[0])
    assert status == 404, answer
    assert "'churn'" in answer["detail"]
    for name in ("card_fraud", "card_fraud_eu", "card_fraud_apac", "broken"):
        assert f"'{name}'" in answer["detail"]


def test_ready_lists_every_use_case(registry, use_case_folder, many_service) -> None:
    service, _ = many_service
    status, body = get(f"{service.url}/ready")
    ready = json.loads(body)
    assert status == 200, ready
    assert ready["default_use_case"] == "card_fraud" and ready["model_version"] == "1"
    states = ready["use_cases"]
    assert set(states) == {"card_fraud", "card_fraud_eu", "card_fraud_apac", "broken"}
    assert (states["card_fraud"]["status"], states["card_fraud"]["model_version"]) == ("serving", "1")
    assert (states["card_fraud_eu"]["status"], states["card_fraud_eu"]["model_version"]) == ("serving", "2")
    assert states["card_fraud_eu"]["model_name"] == use_case_folder.models["card_fraud_eu"]
    assert states["card_fraud_apac"]["status"] == "no champion"
    assert states["broken"]["status"] == "invalid declaration" and "dataset" in states["broken"]["reason"]


def test_metrics_are_labelled_by_use_case(registry, use_case_folder, many_service) -> None:
    service, _ = many_service
    post(service.url, "/predict/card_fraud_eu", rows(registry, 5, 4))
    post(service.url, "/predict/nowhere", {})
    status, body = get(f"{service.url}/metrics")
    assert status == 200
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    eu_model = use_case_folder.models["card_fraud_eu"]
    assert samples[f'mlloop_model_version{{model="{eu_model}",use_case="card_fraud_eu"}}'] == 2.0
    assert samples[f'mlloop_model_version{{model="{registry.model_name}",use_case="card_fraud"}}'] == 1.0
    assert samples['mlloop_requests_total{status="200",use_case="card_fraud_eu"}'] >= 1
    assert samples['mlloop_scored_rows_total{use_case="card_fraud_eu"}'] >= 4
    assert samples['mlloop_request_seconds_count{use_case="card_fraud_eu"}'] >= 1
    assert samples['mlloop_requests_total{status="404",use_case="_unknown"}'] >= 1
    # the path's text never becomes a label value
    assert not any('use_case="nowhere"' in name for name in samples)


def _logged_ids(data_root: Path, dataset: str) -> pd.DataFrame:
    files = sorted((data_root / "inference" / dataset).glob("date=*/*.parquet"))
    if not files:
        return pd.DataFrame({"transaction_id": [], "model_name": []})
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def test_use_cases_sharing_columns_log_under_their_own_dataset(registry, use_case_folder, many_service):
    """card_fraud and card_fraud_eu share every column name; each answer lands under its own dataset."""
    service, data_root = many_service
    fraud_rows, eu_rows, alias_rows = (
        rows(registry, 1000, 30),
        rows(registry, 1100, 30),
        rows(registry, 1200, 5),
    )
    assert post(service.url, "/predict/card_fraud", fraud_rows)[0] == 200
    assert post(service.url, "/predict/card_fraud_eu", eu_rows)[0] == 200
    assert post(service.url, "/predict", alias_rows)[0] == 200
    fraud_ids = {r["transaction_id"] for r in fraud_rows + alias_rows}
    eu_ids = {r["transaction_id"] for r in eu_rows}
    deadline = time.monotonic() + 90  # generous: a loaded 2-core CI machine
    while True:  # the log writes each answer at once (MLLOOP_INFERENCE_FLUSH_ROWS=1), in a thread
        fraud_log, eu_log = _logged_ids(data_root, "transactions"), _logged_ids(data_root, "transactions_eu")
        if fraud_ids <= set(fraud_log["transaction_id"]) and eu_ids <= set(eu_log["transaction_id"]):
            break
        assert time.monotonic() < deadline, service.log()
        time.sleep(0.3)
    assert not eu_ids & set(fraud_log["transaction_id"])
    assert not fraud_ids & set(eu_log["transaction_id"])
    assert set(fraud_log["model_name"]) == {registry.model_name}
    assert set(eu_log["model_name"]) == {use_case_folder.models["card_fraud_eu"]}
    assert sorted(p.name for p in (data_root / "inference").iterdir()) == ["transactions", "transactions_eu"]
