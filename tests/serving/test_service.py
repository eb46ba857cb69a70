"""The scoring service as a process against a real MLflow registry: contract, swap, shutdown, metrics."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mlloop.serving.client import request_rows
from mlloop.usecase import load_use_case

pytestmark = pytest.mark.slow
USE_CASE = load_use_case("card_fraud")


def post(url: str, body: bytes, timeout: float = 30.0, path: str = "/predict/card_fraud") -> tuple[int, dict]:
    """POST ``body`` to ``url`` + ``path``; return (status, JSON body) whatever the status."""
    request = urllib.request.Request(
        f"{url}{path}", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def rows(registry, n: int, start: int = 0) -> list[dict]:
    return request_rows(registry.traffic.iloc[start : start + n], USE_CASE)


def test_scores_one_row_and_a_batch_with_the_champion(registry, start_service) -> None:
    service = start_service()
    ready = service.wait_ready()
    assert ready["model_version"] == "1" and 0 < ready["threshold"] < 1
    status, body = post(service.url, json.dumps(rows(registry, 1)[0]).encode())
    assert status == 200, body
    assert body["model_version"] == "1" and body["model_name"] == registry.model_name
    prediction = body["prediction"]
    assert prediction["transaction_id"] == registry.traffic.iloc[0]["transaction_id"]
    assert 0.0 <= prediction["score"] <= 1.0
    assert prediction["flagged"] == (prediction["score"] >= body["threshold"])

    batch = rows(registry, 100, start=1)
    status, body = post(service.url, json.dumps(batch).encode())
    assert status == 200, body
    assert [p["transaction_id"] for p in body["predictions"]] == [r["transaction_id"] for r in batch]
    assert len({p["score"] for p in body["predictions"]}) > 10


def test_scores_equal_the_training_feature_path(registry, start_service) -> None:
    """Serving applies the same feature code as training: row by row with history == whole-day features."""
    import mlflow

    from mlloop.features import model_matrix
    from mlloop.features.build import build_features
    from mlloop.serving.scorer import load_served_model

    service = start_service()
    service.wait_ready()
    day = registry.traffic.sort_values("event_time").iloc[:400]
    served_scores = []
    for start in range(0, len(day), 40):  # in time order, as traffic arrives
        status, body = post(
            service.url, json.dumps(request_rows(day.iloc[start : start + 40], USE_CASE)).encode()
        )
        assert status == 200, body
        served_scores += [p["score"] for p in body["predictions"]]
    mlflow.set_tracking_uri(registry.tracking_uri)
    served = load_served_model(mlflow.MlflowClient(), registry.model_name, "champion")
    features = build_features(day, served.spec, key_column="transaction_id", time_column="event_time")
    expected = served.model.predict_proba(model_matrix(features, served.spec, list(served.columns)))[:, 1]
    assert served_scores == pytest.approx(expected.tolist(), abs=1e-6)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": -5.0}, "amount"),
        ({"amount": "12.5"}, "amount"),
        ({"customer_age": 7}, "customer_age"),
        ({"customer_age": 30.5}, "customer_age"),
        ({"currency": "XYZ"}, "currency"),
        ({"card_number": "1234"}, "card_number"),
        ({"event_time": "2026-10-04T10:00:00"}, "event_time"),
        ({"unexpected": 1}, "unexpected"),
        ({"is_fraud": 1}, "is_fraud"),
    ],
)
def test_schema_violations_get_422_naming_the_field(registry, shared_service, change, field) -> None:
    service = shared_service
    row = {**rows(registry, 1)[0], **change}
    status, body = post(service.url, json.dumps(row).encode())
    assert status == 422, body
    assert field in body["detail"] and body["errors"][0]["field"] == field
    assert "Traceback" not in json.dumps(body) and row["card_number"] not in json.dumps(body)


def test_malformed_bodies_get_clear_answers(registry, shared_service) -> None:
    service = shared_service
    row = rows(registry, 1)[0]
    cases = {
        b"{not json": 422,
        b"[]": 422,
        json.dumps({k: v for k, v in row.items() if k != "amount"}).encode(): 422,
        json.dumps(row).replace('"amount": ' + json.dumps(row["amount"]), '"amount": NaN').encode(): 422,
        json.dumps(row).replace('"amount": ' + json.dumps(row["amount"]), '"amount": 1e999').encode(): 422,
        json.dumps([row] * 1001).encode(): 422,  # more rows than MLLOOP_SERVING_MAX_ROWS
    }
    for body, expected in cases.items():
        status, answer = post(service.url, body)
        assert status == expected, (body[:80], answer)
        assert answer["detail"] and "Traceback" not in answer["detail"]
    status, answer = post(service.url, json.dumps([row] * 1001).encode())
    assert "at most 1000" in json.dumps(answer)


def _oversize(url: str, chunked: bool) -> tuple[int, dict]:
    """Send a body over the 1 MiB limit: declared by Content-Length (body never sent), or streamed."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/predict/card_fraud")
    conn.putheader("Content-Type", "application/json")
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"[" + b" " * 65_535
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server may stop reading
            for _ in range(20):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    else:
        conn.putheader("Content-Length", str(5 * 1_048_576))
        conn.endheaders()
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed"])
def test_oversize_bodies_get_413(shared_service, chunked: bool) -> None:
    status, answer = _oversize(shared_service.url, chunked)
    assert status == 413, answer
    assert "exceeds 1048576 bytes" in answer["detail"] and "at most 1000 rows" in answer["detail"]


def test_health_ready_and_metrics(registry, start_service) -> None:
    service = start_service()
    service.wait_ready()
    post(service.url, json.dumps(rows(registry, 5)).encode())
    post(service.url, b"{}")
    with urllib.request.urlopen(f"{service.url}/health", timeout=5) as resp:
        assert json.loads(resp.read()) == {"status": "ok"}
    with urllib.request.urlopen(f"{service.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'mlloop_requests_total{status="200",use_case="card_fraud"} 1.0' in text
    assert 'mlloop_requests_total{status="422",use_case="card_fraud"} 1.0' in text
    assert 'mlloop_scored_rows_total{use_case="card_fraud"} 5.0' in text
    assert "mlloop_request_seconds_bucket" in text and "mlloop_score_bucket" in text
    assert f'mlloop_model_version{{model="{registry.model_name}",use_case="card_fraud"}} 1.0' in text


def test_no_champion_means_not_ready_and_503(registry, start_service) -> None:
    service = start_service(model_name="never-registered-model")
    body = service.wait_ready(status=503)
    assert "no version with alias 'champion'" in body["reason"] or "no champion" in body["reason"]
    status, answer = post(service.url, json.dumps(rows(registry, 1)[0]).encode())
    assert status == 503 and "train and promote" in answer["detail"]
    status, answer = post(service.url, json.dumps(rows(registry, 1)[0]).encode(), path="/predict")
    assert status == 503 and "train and promote" in answer["detail"]


def _traffic(url: str, payloads: list[bytes], stop: threading.Event, answers: list, failures: list) -> None:
    i = 0
    while not stop.is_set():
        try:
            status, body = post(url, payloads[i % len(payloads)], timeout=30)
        except OSError as exc:
            failures.append(repr(exc))
        else:
            (answers if status == 200 else failures).append(body if status == 200 else (status, body))
        i += 1


@contextlib.contextmanager
def traffic(url: str, payloads: list[bytes], clients: int) -> Iterator[tuple[list[list[dict]], list]]:
    """Keep ``clients`` threads posting ``payloads`` back to back; yield (answers per client, failures)."""
    stop, failures = threading.Event(), []
    answers: list[list[dict]] = [[] for _ in range(clients)]
    threads = [
        threading.Thread(target=_traffic, args=(url, payloads, stop, answers[i], failures), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        yield answers, failures
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


def test_promotion_under_traffic_fails_no_request_and_mixes_no_version(registry, start_service) -> None:
    from mlflow import MlflowClient

    from mlloop.registry.champion import promote, rollback

    service = start_service()
    service.wait_ready()
    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    all_rows = rows(registry, 400)
    payloads = [json.dumps(all_rows[i : i + 4]).encode() for i in range(0, 400, 4)]
    with traffic(service.url, payloads, clients=4) as (answers, failures):
        time.sleep(2)
        promote(client, registry.model_name, "2", actor="tests", reason="swap under traffic", gate_report="-")
        deadline = time.monotonic() + 60
        while not any(a and a[-1]["model_version"] == "2" for a in answers):
            assert time.monotonic() < deadline, service.log()
            time.sleep(0.2)
        time.sleep(2)
        rollback(client, registry.model_name, "1", actor="tests", reason="back under traffic")
        deadline = time.monotonic() + 60
        while not all(a and a[-1]["model_version"] == "1" for a in answers):
            assert time.monotonic() < deadline, service.log()
            time.sleep(0.2)
    assert failures == []
    for per_client in answers:
        versions = [a["model_version"] for a in per_client]
        # each client saw v1, then v2, then v1 again: one switch each way, never back and forth
        switches = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
        assert switches == ["1", "2", "1"], switches
        assert all(len(a["predictions"]) == 4 for a in per_client)


def test_sigterm_under_traffic_loses_no_inference_log_row(registry, start_service, tmp_path: Path) -> None:
    from mlloop.storage import Storage

    data_root = tmp_path / "sigterm-data"
    # Nothing is flushed before shutdown: every row must come from the SIGTERM path.
    service = start_service(data_root, inference_flush_rows="1000000", inference_flush_seconds="3600")
    service.wait_ready()
    all_rows = rows(registry, 1000)
    payloads = [json.dumps(all_rows[i : i + 2]).encode() for i in range(0, 1000, 2)]
    with traffic(service.url, payloads, clients=6) as (answers, _):
        time.sleep(3)
        # uvicorn finishes in-flight requests, runs the shutdown (the log's flush), then re-raises SIGTERM
        assert service.stop(signal.SIGTERM) in (0, -signal.SIGTERM), service.log()
    answered = [p["transaction_id"] for per_client in answers for a in per_client for p in a["predictions"]]
    assert len(answered) > 100, "too little traffic reached the service to test anything"
    storage = Storage(str(data_root))
    keys = [k for k in storage.list("inference/transactions") if k.endswith(".parquet")]
    logged = pd.concat([storage.read_frame(k) for k in keys], ignore_index=True)
    assert len(logged) == len(answered), service.log()
    assert sorted(logged["transaction_id"]) == sorted(answered)
    # PII never lands raw in the log; each row names the version that answered it
    assert not set(logged["card_number"]) & set(registry.traffic["card_number"])
    assert set(logged["model_version"]) == {"1"}
    assert {"score", "flagged", "served_at", "request_id"} <= set(logged.columns)
