"""The pipeline registers and promotes through MLflow on Postgres with S3 artifacts and basic auth on.

Every process that talks to MLflow gets the server only by configuration (``MLLOOP_MLFLOW_TRACKING_URI``,
``MLFLOW_TRACKING_USERNAME``/``PASSWORD``) and holds no S3 keys: artifacts go through the server's proxy.
The assertions read what the servers hold (rows in the Postgres backend, objects in the bucket), so they
fail on a SQLite backend or a local artifact folder; canary secrets are grepped for everywhere.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import canary
import pytest

pytestmark = pytest.mark.slow

DAYS = [dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(3)]
ROWS = 4000
# This test is about where things land, not speed: a loaded CI machine must not fail the latency budget.
# The skill floors stay on (relative to no-skill scores, they hold on this small window too).
GATE_OVERRIDES = {"max_batch_latency_ms_per_1k_rows": 1e6}
GATE_AND_PROMOTE = """
import json, sys
from mlloop.training.pipeline import gate_challenger, promote_or_reject
result = json.loads(open(sys.argv[1]).read())
decision = gate_challenger(result, json.loads(sys.argv[2]), use_case="card_fraud")
record = promote_or_reject(result, decision, "production-test", promote=True, use_case="card_fraud")
print(json.dumps({"decision": decision, "record": record}))
"""


@dataclass(frozen=True)
class Promoted:
    """What the pipeline did through the auth server, and everything it printed."""

    server: Any
    s3: Any
    model_name: str
    data_root: Path
    result: dict[str, Any]
    result_text: str
    gate: dict[str, Any]
    outputs: str
    env: dict[str, str]


def _client_env(server, **settings: str) -> dict[str, str]:
    """The environment of a pipeline process: the server and credentials by configuration, no S3 keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLLOOP_", "MLFLOW_", "AWS_"))}
    env.update(server.client_env())
    env.update({f"MLLOOP_{k.upper()}": v for k, v in settings.items()})
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def _run(argv: list[str], env: dict[str, str], cwd: Path, what: str) -> tuple[str, str]:
    """Run a pipeline step in ``cwd``; return (stdout, stdout + stderr) or fail with its output."""
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}):\n{output[-4000:]}"
    return proc.stdout, output


@pytest.fixture(scope="module")
def promoted(mlflow_auth_server, s3_server, tmp_path_factory) -> Promoted:
    """Ingest three days locally, train with the CLI, gate and promote to champion, all through the server."""
    from mlloop.ingestion.batches import ingest_day
    from mlloop.storage import Storage
    from mlloop.training.windows import snapshot_days
    from mlloop.usecase import load_use_case

    root = tmp_path_factory.mktemp("prod-data") / "data"
    workdir = root.parent / "work"  # the pipeline processes' working folder: must stay empty of artifacts
    workdir.mkdir()
    storage = Storage(str(root))
    use_case = load_use_case("card_fraud")
    for day in DAYS:
        ingest_day(storage, use_case, day, canary.PII_KEY.encode(), rows=ROWS)
    manifest = snapshot_days(storage, use_case, DAYS, as_of=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))

    name = f"prod-fraud-{uuid.uuid4().hex[:8]}"
    env = _client_env(mlflow_auth_server, data_root=str(root), model_name=name, pii_key=canary.PII_KEY)
    result_path = workdir / "result.json"
    _, train_out = _run(
        [sys.executable, "-m", "mlloop.training.train", "--snapshot", manifest.digest,
         "--dag-run-id", "prod-1", "--result-path", str(result_path)],
        env, workdir, "the training CLI",
    )  # fmt: skip
    result_text = result_path.read_text()
    gate_stdout, gate_out = _run(
        [sys.executable, "-c", GATE_AND_PROMOTE, str(result_path), json.dumps(GATE_OVERRIDES)],
        env,
        workdir,
        "gate and promotion",
    )
    gate = json.loads(gate_stdout.strip().splitlines()[-1])
    return Promoted(
        mlflow_auth_server,
        s3_server,
        name,
        root,
        json.loads(result_text),
        result_text,
        gate,
        train_out + gate_out,
        env,
    )


def _backend(promoted: Promoted):
    import psycopg2

    return psycopg2.connect(promoted.server.backend_url.replace("postgresql+psycopg2://", "postgresql://"))


def _rows(promoted: Promoted, sql: str, *args: object) -> list[tuple]:
    with contextlib.closing(_backend(promoted)) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def test_registry_and_runs_are_rows_in_the_postgres_backend(promoted: Promoted) -> None:
    name, run_id = promoted.model_name, promoted.result["run_id"]
    assert promoted.result["version"] == "1"
    assert promoted.gate["decision"]["promote"] and promoted.gate["record"]["action"] == "promote"
    assert _rows(promoted, "SELECT name FROM registered_models WHERE name = %s", name) == [(name,)]
    versions = _rows(promoted, "SELECT version, run_id, source FROM model_versions WHERE name = %s", name)
    assert [(v, r) for v, r, _ in versions] == [(1, run_id)]
    aliases = _rows(promoted, "SELECT alias, version FROM registered_model_aliases WHERE name = %s", name)
    assert aliases == [("champion", 1)]
    tags = dict(_rows(promoted, "SELECT key, value FROM model_version_tags WHERE name = %s", name))
    assert tags["mlloop.gate.decision"] == "promoted" and tags["mlloop.dag_run_id"] == "prod-1"
    runs = _rows(promoted, "SELECT status, artifact_uri FROM runs WHERE run_uuid = %s", run_id)
    assert len(runs) == 1 and runs[0][0] == "FINISHED"
    # Proxied artifacts: the backend records the server's mlflow-artifacts scheme, not a client-side path.
    assert runs[0][1].startswith("mlflow-artifacts:/"), runs[0][1]
    audit = _rows(
        promoted,
        "SELECT count(*) FROM tags WHERE key = 'mlloop.audit.model' AND value = %s",
        name,
    )
    assert audit == [(1,)]


def test_artifacts_are_objects_in_the_bucket_not_files_on_the_server(promoted: Promoted, monkeypatch) -> None:
    from mlflow import MlflowClient

    server, run_id = promoted.server, promoted.result["run_id"]
    experiment_id = promoted.gate["decision"]["experiment_id"]
    keys = _bucket_keys(promoted)
    run_prefix = f"mlflow/{experiment_id}/{run_id}/artifacts/"
    run_keys = {k.removeprefix(run_prefix) for k in keys if k.startswith(run_prefix)}
    expected = {"plots/pr_curve.png", "snapshot/manifest.json", "importance.json", "gate/gate_report.json"}
    assert expected <= run_keys, sorted(keys)[:50]
    # The registered version's model (MLflow 3: a logged model, source models:/m-<id>) lies in the bucket;
    # the server is shared with the Celery test, so other models may lie beside it.
    (source,) = _rows(promoted, "SELECT source FROM model_versions WHERE name = %s", promoted.model_name)[0]
    model_id = re.search(r"m-[0-9a-f]+", source)
    assert model_id, source
    assert f"mlflow/{experiment_id}/models/{model_id.group()}/artifacts/MLmodel" in keys, sorted(keys)[:50]

    # The bytes the MLflow client downloads through the server are the bucket's objects.
    _use_credentials(monkeypatch, promoted)
    client = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    local = Path(client.download_artifacts(run_id, "snapshot/manifest.json"))
    obj = _s3(promoted).get_object(Bucket=server.bucket, Key=run_prefix + "snapshot/manifest.json")
    assert obj["Body"].read() == local.read_bytes()

    # Nothing landed on the server's disk, nor in the pipeline processes' working folder.
    server_files = {p.name for p in server.home.rglob("*") if p.is_file()}
    assert server_files <= {"basic_auth.ini", "server.log"}, server_files
    workdir = {p.name for p in (promoted.data_root.parent / "work").iterdir()}
    assert workdir == {"result.json"}, workdir


def test_unauthenticated_and_wrong_password_requests_get_401(promoted: Promoted) -> None:
    server, name = promoted.server, promoted.model_name
    api = f"{server.uri}/api/2.0/mlflow/registered-models/get?name={name}"
    artifact = (
        f"{server.uri}/api/2.0/mlflow-artifacts/artifacts/{promoted.gate['decision']['experiment_id']}/"
        f"{promoted.result['run_id']}/artifacts/snapshot/manifest.json"
    )
    for url in (api, artifact, f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=5"):
        assert _status(url, None) == 401, url
        assert _status(url, (server.username, "wrong-password-123456")) == 401, url
        assert _status(url, ("nobody", server.password)) == 401, url
    assert _status(api, (server.username, server.password)) == 200
    assert _status(artifact, (server.username, server.password)) == 200
    # The stack's health check (mlloop.ops.services.mlflow_healthy) needs no credentials.
    assert _status(f"{server.uri}/health", None) == 200


def test_canaries_appear_in_no_param_tag_artifact_row_or_result(
    promoted: Promoted, monkeypatch, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    server = promoted.server
    assert canary.find_canaries(promoted.result_text) == []
    assert canary.find_canaries(json.dumps(promoted.gate)) == []
    assert canary.find_canaries(promoted.outputs) == [], "a pipeline process printed a secret"

    client = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
    _use_credentials(monkeypatch, promoted)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments], max_results=1000)
    assert any(r.info.run_id == promoted.result["run_id"] for r in runs)
    for run in runs:
        text = json.dumps([run.data.params, run.data.tags, run.info.artifact_uri])
        assert canary.find_canaries(text) == [], f"run {run.info.run_id}"
    for version in client.search_model_versions(f"name = '{promoted.model_name}'"):
        assert canary.find_canaries(json.dumps([version.tags, version.source, version.description])) == []
    downloaded = Path(client.download_artifacts(promoted.result["run_id"], "", str(tmp_path / "run")))
    files = [p for p in downloaded.rglob("*") if p.is_file()]
    assert {"manifest.json", "gate_report.json", "pr_curve.png"} <= {p.name for p in files}
    for path in files:
        assert canary.find_canaries(path.read_bytes().decode("latin-1")) == [], path

    # Every object in the bucket (run and model artifacts) and every row of the backend database.
    s3 = _s3(promoted)
    for key in _bucket_keys(promoted):
        body = s3.get_object(Bucket=server.bucket, Key=key)["Body"].read().decode("latin-1")
        assert canary.find_canaries(body) == [], key
    with contextlib.closing(_backend(promoted)) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for (table,) in cur.fetchall():
            cur.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')
            found = canary.find_canaries("\n".join(row[0] for row in cur.fetchall()))
            assert found == [], f"{found} in backend table {table}"


def test_scoring_service_follows_the_champion_through_basic_auth(
    promoted: Promoted, background_process, free_port, tmp_path: Path
) -> None:
    """The service's follower loads models:/<name>@champion with credentials from the environment only."""
    import pandas as pd

    from mlloop.data.generator import generate_day
    from mlloop.serving.client import request_rows
    from mlloop.usecase import load_use_case

    url = f"http://127.0.0.1:{free_port()}"
    service = background_process(
        [sys.executable, "-m", "mlloop.serving", "--port", url.rsplit(":", 1)[1], "--no-seed-history"],
        {**promoted.env, "MLLOOP_SERVING_POLL_SECONDS": "1"},
        tmp_path,
        f"{url}/ready",  # 200 only once the champion is loaded
        "the scoring service",
        timeout_s=120,
    )
    with urllib.request.urlopen(f"{url}/ready", timeout=10) as resp:
        assert json.loads(resp.read())["model_version"] == "1"
    use_case = load_use_case("card_fraud")
    traffic = generate_day(DAYS[-1] + dt.timedelta(days=1), rows=200, seed=use_case.source.seed)
    body = json.dumps(request_rows(traffic.transactions.head(20), use_case)).encode()
    request = urllib.request.Request(
        f"{url}/predict", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    log_path = tmp_path / "server.log"
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert len(json.loads(resp.read())["predictions"]) == 20
    except urllib.error.HTTPError as exc:
        pytest.fail(f"/predict answered {exc.code}: {exc.read()[:500]!r}\n{log_path.read_text()[-4000:]}")
    service.send_signal(signal.SIGTERM)  # a graceful stop flushes the inference log
    service.wait(timeout=60)
    log_text = log_path.read_text(errors="replace")
    assert canary.find_canaries(log_text) == [], "the scoring service logged a secret"
    logged = [pd.read_parquet(p) for p in (promoted.data_root / "inference").rglob("*.parquet")]
    assert logged and sum(len(f) for f in logged) >= 20, log_text[-2000:]
    for frame in logged:
        assert canary.find_canaries(frame.to_json()) == []


def _status(url: str, credentials: tuple[str, str] | None) -> int:
    """GET ``url`` with plain urllib (no MLflow client), optionally with basic auth; return the status."""
    headers = {}
    if credentials:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _s3(promoted: Promoted):
    """A boto3 client for the bucket, with the keys only the server and this test hold."""
    return promoted.s3.client()


def _bucket_keys(promoted: Promoted) -> list[str]:
    paginator = _s3(promoted).get_paginator("list_objects_v2")
    return [
        obj["Key"]
        for page in paginator.paginate(Bucket=promoted.server.bucket, Prefix="mlflow/")
        for obj in page.get("Contents", [])
    ]


def _use_credentials(monkeypatch: pytest.MonkeyPatch, promoted: Promoted) -> None:
    """Give this test process the MLflow client variables (credentials) the pipeline processes have."""
    for key, value in promoted.env.items():
        if key.startswith("MLFLOW_"):
            monkeypatch.setenv(key, value)
