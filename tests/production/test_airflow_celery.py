"""The project's DAGs on production-shaped Airflow: Postgres metadata DB, CeleryExecutor, Redis, S3 data root.

Airflow 3 (api-server, scheduler, DAG processor, two Celery workers) runs on a fresh database of the
running PostgreSQL with Redis as broker and the Celery result backend on the same Postgres. The data
root is ``s3://<bucket>/prod`` on the moto S3 server, reached through an Airflow AWS connection; MLflow is
the basic-auth server on Postgres with artifacts in S3; the PII key is the Airflow connection
``mlloop_pii``. All of it is configuration (``AIRFLOW__*``, ``AIRFLOW_CONN_*``, ``MLLOOP_*``). Through the
real scheduler: ``ingest_card_fraud`` for four days, ``train_card_fraud`` started by their Asset events
(trains, gates, promotes ``champion``), ``monitor_card_fraud`` once; then the scoring service serves the
champion from the same stack and logs its answers to the bucket.

The assertions read what the servers hold (Postgres rows, bucket objects, MLflow's tables), so the test
fails on SQLite, the LocalExecutor or a local folder; the canary secrets are grepped for in every task
log, XCom, Celery result, MLflow param/tag/artifact and bucket object (inference log included).
"""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import airflow_stack
import canary
import pytest
from airflow_stack import AirflowStack, wait_for

from mlloop.clock import shift_days_to

# The module fixture runs the whole pipeline (~4 min here); its waits are bounded well inside this.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

INGEST, TRAIN, MONITOR = "ingest_card_fraud", "train_card_fraud", "monitor_card_fraud"
TERMINAL = {"success", "failed"}
# train_<use case>'s default window (4 days) ending label_maturity_days (14) before today: what an
# Asset-started run trains on. "Today" is the stack's pinned clock (MLLOOP_CLOCK_SHIFT_DAYS), so the same
# days are generated and judged whatever the calendar says.
TODAY = date(2026, 4, 15)
DAYS_BACK = (17, 16, 15, 14)
ROWS_PER_DAY = 12_000  # enough for the default gate floors (tests/integration trains on 3 x 12k)
REDIS_DB = 11  # not 0: a developer's own Redis use stays untouched; flushed before and after
S3_CONN_ID, PII_CONN_ID = "mlloop_s3", "mlloop_pii"


def _psycopg2_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg2://", "postgresql://")


def _query(sqlalchemy_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg2

    with contextlib.closing(psycopg2.connect(_psycopg2_dsn(sqlalchemy_url))) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _with_password(url: str, password: str) -> str:
    """Put ``password`` into a Postgres URL (the server trusts 127.0.0.1, so any password works)."""
    return url.replace("postgres@", f"postgres:{urllib.parse.quote(password, safe='')}@", 1)


@dataclass(frozen=True)
class Production:
    """The running stack and what the pipeline run through it produced."""

    stack: AirflowStack
    s3: object
    mlflow: object
    bucket: str
    metadata_db: str
    model_name: str
    days: tuple[str, ...]
    ingest_runs: tuple[str, ...]
    train_runs: tuple[str, ...]
    monitor_run: str
    champion: str
    served_rows: int


def _wait_runs(stack: AirflowStack, dag_id: str, run_ids: list[str], timeout_s: float) -> None:
    """Wait until the runs finish; fail at once, with the diagnosis, when one fails."""
    api = stack.api()

    def finished() -> bool:
        states = {run_id: api.run_state(dag_id, run_id) for run_id in run_ids}
        failed = [run_id for run_id, state in states.items() if state == "failed"]
        if failed:
            pytest.fail(f"{dag_id} runs failed: {failed}\n{stack.diagnosis([(dag_id, r) for r in failed])}")
        return all(state == "success" for state in states.values())

    wait_for(
        finished,
        f"{len(run_ids)} {dag_id} run(s)",
        timeout_s,
        lambda: stack.diagnosis([(dag_id, r) for r in run_ids]),
    )


def _wait_training(stack: AirflowStack, since: str, timeout_s: float) -> list[str]:
    """Wait until the Asset-started train_<use case> runs are done, none is queued and one promoted."""
    api = stack.api()
    seen: list[str] = []

    def done() -> bool:
        runs = api.runs_since(TRAIN, since)
        seen[:] = [r["dag_run_id"] for r in runs]
        failed = [r["dag_run_id"] for r in runs if r["state"] == "failed"]
        if failed:
            pytest.fail(f"{TRAIN} runs failed: {failed}\n{stack.diagnosis([(TRAIN, r) for r in failed])}")
        if not runs or any(r["state"] not in TERMINAL for r in runs) or api.queued_asset_events(TRAIN):
            return False
        return any(api.task_states(TRAIN, r)["promote"] == "success" for r in seen)

    wait_for(
        done, f"{TRAIN} to promote a champion", timeout_s, lambda: stack.diagnosis([(TRAIN, r) for r in seen])
    )
    return seen


@contextlib.contextmanager
def _scoring_service(stack: AirflowStack, env: dict[str, str], port: int):
    """Run the scoring service on the stack's settings; stop it with SIGTERM (it flushes its log) after."""
    out = stack.log_dir / "scoring.out"
    with open(out, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlloop.serving", "--port", str(port)],
            env=env,
            cwd=airflow_stack.REPO_ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}", out
    finally:
        if airflow_stack.stop_sessions([proc], grace_s=45):
            pytest.fail(f"the scoring service ignored SIGTERM for 45 s\n{out.read_text()[-3000:]}")
    # uvicorn re-raises the signal once it has shut down cleanly.
    assert proc.returncode in (0, -signal.SIGTERM), out.read_text(errors="replace")[-3000:]
    assert "Inference log closed" in out.read_text(errors="replace"), out.read_text()[-3000:]


def _score_a_few_rows(url: str, out: Path, champion: str, day: str) -> int:
    """Wait until the service serves the champion, post 40 rows of ``day``; return how many it answered."""
    from mlloop.data.generator import generate_day
    from mlloop.ops.traffic import replay_day, wait_until_serving
    from mlloop.usecase import load_use_case

    try:
        wait_until_serving(url, champion, timeout_s=120)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{out.read_text(errors='replace')[-3000:]}")
    traffic = generate_day(date.fromisoformat(day), rows=40, seed=7, scenario="none").transactions
    return sum(replay_day(url, traffic, load_use_case("card_fraud"), batch_rows=20).values())


@pytest.fixture(scope="module")
def production(tmp_path_factory, free_port, new_pg_database, s3_server, mlflow_auth_server):
    """Start the stack, run ingest -> train -> monitor -> serve through it; stop everything afterwards."""
    import redis
    from mlflow import MlflowClient

    state = tmp_path_factory.mktemp("airflow-celery")
    port = free_port()
    bucket = s3_server.create_bucket(f"mlloop-prod-{uuid.uuid4().hex[:10]}")
    metadata_db = new_pg_database("airflow_celery")
    # Airflow's own database secret is a canary too: it must not reach a task log either.
    secret_db = _with_password(metadata_db, canary.AIRFLOW_CONN_PASSWORD)
    broker_url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    model_name = f"fraud-detector-celery-{uuid.uuid4().hex[:6]}"
    settings = {
        "MLLOOP_CLOCK_SHIFT_DAYS": str(shift_days_to(TODAY)),
        "MLLOOP_DATA_ROOT": f"s3://{bucket}/prod",
        "MLLOOP_STORAGE_CONN_ID": S3_CONN_ID,
        **airflow_stack.connection_env(
            S3_CONN_ID,
            conn_type="aws",
            login=s3_server.access_key_id,
            password=s3_server.secret_access_key,
            extra={"endpoint_url": s3_server.endpoint_url, "region_name": s3_server.region},
        ),
        **airflow_stack.connection_env(PII_CONN_ID, conn_type="generic", password=canary.PII_KEY),
        "MLLOOP_PII_CONN_ID": PII_CONN_ID,
        "MLLOOP_MODEL_NAME": model_name,
        # Only manual monitoring runs: the next fire time lies after the test.
        "MLLOOP_MONITOR_SCHEDULE": "0 0 1 1 *",
        **mlflow_auth_server.client_env(),
    }
    env = airflow_stack.production_env(
        airflow_stack.embedded_stack_env(state, port),
        metadata_db_url=secret_db,
        broker_url=broker_url,
        result_backend=f"db+{_psycopg2_dsn(secret_db)}",
        settings=settings,
    )
    stack = AirflowStack(state_dir=state, url=f"http://127.0.0.1:{port}", env=env)
    flush = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    try:
        flush.flushdb()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(
            f"Redis on 127.0.0.1:6379 is the Celery broker here and does not answer ({exc}); start it"
        )
    started = time.monotonic()
    try:
        airflow_stack.start_airflow(stack, broker_url)
        api = stack.api()
        for dag_id in (INGEST, TRAIN, MONITOR):
            api.wait_for_dag(dag_id, timeout_s=120)
        days = tuple((TODAY - timedelta(days=back)).isoformat() for back in DAYS_BACK)
        since = datetime.now(UTC).isoformat()
        api.set_paused(TRAIN, False)  # first, so the ingestion's Asset events start training runs
        api.set_paused(INGEST, False)
        ingest_runs = [f"celery__{day}" for day in days]
        for run_id, day in zip(ingest_runs, days, strict=True):
            api.trigger(INGEST, run_id, {"day": day, "scenario": "none", "rows": ROWS_PER_DAY})
        _wait_runs(stack, INGEST, ingest_runs, timeout_s=300)
        train_runs = _wait_training(stack, since, timeout_s=360)

        client = MlflowClient(tracking_uri=mlflow_auth_server.uri, registry_uri=mlflow_auth_server.uri)
        with pytest.MonkeyPatch.context() as env_patch:  # the client's basic-auth login
            env_patch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_auth_server.username)
            env_patch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_auth_server.password)
            champion = client.get_model_version_by_alias(model_name, "champion").version

        # The scoring service is no Airflow component: settings, connections and MLflow access only.
        serving_env = {
            **{k: v for k, v in env.items() if not k.startswith("AIRFLOW")},
            **{k: v for k, v in env.items() if k.startswith("AIRFLOW_CONN_")},
            "AIRFLOW_HOME": str(state / "serving-airflow-home"),
            "MLLOOP_INFERENCE_FLUSH_SECONDS": "2",
        }
        # It loads the champion while monitor_<use case> runs on the workers.
        with _scoring_service(stack, serving_env, free_port()) as (url, out):
            api.set_paused(MONITOR, False)
            monitor_run = "celery__monitor"
            conf = {"end_day": days[-1], "window_days": 1, "dry_run": True, "overrides": {}}
            api.trigger(MONITOR, monitor_run, conf)
            _wait_runs(stack, MONITOR, [monitor_run], timeout_s=180)
            served = _score_a_few_rows(url, out, champion, days[-1])
        print(f"pipeline through the scheduler, then scoring: {time.monotonic() - started:.0f}s")
        yield Production(
            stack=stack, s3=s3_server, mlflow=mlflow_auth_server, bucket=bucket, metadata_db=metadata_db,
            model_name=model_name, days=days, ingest_runs=tuple(ingest_runs), train_runs=tuple(train_runs),
            monitor_run=monitor_run, champion=champion, served_rows=served,
        )  # fmt: skip
    finally:
        stack.stop()
        flush.flushdb()
        flush.close()


def test_runs_are_in_postgres_and_ran_on_both_celery_workers(production: Production) -> None:
    db = production.metadata_db
    runs = dict(_query(db, "SELECT run_id, state FROM dag_run WHERE dag_id = %s", (INGEST,)))
    assert all(runs.get(run_id) == "success" for run_id in production.ingest_runs), runs
    trained = _query(
        db, "SELECT run_id, run_type, state FROM dag_run WHERE dag_id = %s AND run_id = ANY(%s)",
        (TRAIN, list(production.train_runs)),
    )  # fmt: skip
    assert trained and all(
        run_type == "asset_triggered" and state == "success" for _, run_type, state in trained
    )
    assert _query(db, "SELECT state FROM dag_run WHERE run_id = %s", (production.monitor_run,)) == [
        ("success",)
    ]

    # Every task that ran went through Celery: its Celery task id is in the result backend (same
    # Postgres), which names the worker that ran it.
    sql = (
        "SELECT ti.dag_id, ti.task_id, ti.state, ti.queue, c.status, c.worker FROM task_instance ti "
        "LEFT JOIN celery_taskmeta c ON c.task_id = ti.external_executor_id "
        "WHERE ti.state IN ('success', 'failed') AND ti.run_id = ANY(%s)"
    )
    run_ids = [*production.ingest_runs, *production.train_runs, production.monitor_run]
    # A task's own process reports its state to the api-server before the Celery task that ran it
    # returns; Celery records SUCCESS a moment later (STARTED until then, as Airflow tracks starts).
    deadline = time.monotonic() + 60
    while True:
        rows = _query(db, sql, (run_ids,))
        if all(row[4] in ("SUCCESS", "FAILURE") for row in rows) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert rows
    not_celery = [row for row in rows if row[4] is None]
    assert not not_celery, f"task instances without a Celery result: {not_celery}"
    not_success = [row for row in rows if row[4] != "SUCCESS"]
    assert not not_success, f"Celery results other than SUCCESS: {not_success}"
    workers = {row[5].split("@")[0] for row in rows}
    assert workers == set(airflow_stack.WORKERS), rows
    tasks = {(dag_id, task_id) for dag_id, task_id, *_ in rows}
    assert {(INGEST, "publish"), (TRAIN, "train_local"), (TRAIN, "promote"), (MONITOR, "check")} <= tasks


def test_data_root_is_the_bucket(production: Production) -> None:
    client = production.s3.client()
    keys = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=production.bucket, Prefix="prod/")
        for obj in page.get("Contents", [])
    ]
    for day in production.days:
        for area in ("raw", "validated"):
            assert any(k.startswith(f"prod/{area}/transactions/date={day}/") for k in keys), (area, day, keys)
    assert any(k.startswith("prod/snapshots/") and k.endswith("manifest.json") for k in keys), keys
    assert any(k.startswith("prod/reports/monitoring/") for k in keys), keys
    inference = [k for k in keys if k.startswith("prod/inference/")]
    assert inference, keys
    frames = [_read_parquet(client, production.bucket, k) for k in inference if k.endswith(".parquet")]
    assert sum(len(f) for f in frames) == production.served_rows
    # Nothing went to a local data root instead.
    assert not (production.stack.state_dir / "data").exists()
    assert not (
        airflow_stack.REPO_ROOT / "data" / "validated" / "transactions" / f"date={production.days[0]}"
    ).exists()


def test_champion_is_registered_in_mlflows_postgres_with_artifacts_in_s3(production: Production) -> None:
    db = production.mlflow.backend_url
    name = production.model_name
    aliases = _query(db, "SELECT alias, version FROM registered_model_aliases WHERE name = %s", (name,))
    assert ("champion", int(production.champion)) in aliases, aliases
    (source, run_id), = _query(
        db, "SELECT source, run_id FROM model_versions WHERE name = %s AND version = %s",
        (name, int(production.champion)),
    )  # fmt: skip
    tags = dict(_query(db, "SELECT key, value FROM model_version_tags WHERE name = %s AND version = %s",
                       (name, int(production.champion))))  # fmt: skip
    assert tags.get("mlloop.dag_run_id") in production.train_runs, tags
    listing = production.s3.client().list_objects_v2(Bucket=production.mlflow.bucket, Prefix="mlflow/")
    artifacts = [obj["Key"] for obj in listing.get("Contents", [])]
    assert any(run_id in key for key in artifacts), (source, artifacts[:20])


def _read_parquet(client, bucket: str, key: str):
    import pandas as pd

    return pd.read_parquet(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))


def _object_texts(client, bucket: str, prefix: str):
    """Yield (key, text) of every object under ``prefix``: its bytes, and a Parquet object's values too."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            data = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            text = data.decode("latin-1")
            if obj["Key"].endswith(".parquet"):
                import pandas as pd

                text += pd.read_parquet(io.BytesIO(data)).to_csv(index=False)
            yield obj["Key"], text


def test_no_canary_in_logs_xcom_mlflow_or_objects(production: Production) -> None:
    leaks: dict[str, list[str]] = {}

    def check(where: str, text: str) -> None:
        if found := canary.find_canaries(text):
            leaks[where] = found

    task_logs = [p for p in production.stack.task_log_dir.rglob("*") if p.is_file()]
    assert len(task_logs) >= 20, task_logs
    for path in task_logs:
        check(f"task log {path.relative_to(production.stack.task_log_dir)}", path.read_text(errors="replace"))
    # The services' own output too: api-server, scheduler, DAG processor, workers, scoring service.
    service_logs = sorted(production.stack.log_dir.glob("*.out"))
    assert {p.stem for p in service_logs} >= {"scheduler", "worker1", "worker2", "scoring"}, service_logs
    for path in service_logs:
        check(f"service log {path.name}", path.read_text(errors="replace"))

    db = production.metadata_db
    xcoms = _query(db, "SELECT dag_id, run_id, task_id, key, value::text FROM xcom")
    assert len(xcoms) >= 10, xcoms
    for dag_id, run_id, task_id, key, value in xcoms:
        check(f"xcom {dag_id}/{run_id}/{task_id}/{key}", value or "")
    for task_id, result, args in _query(db, "SELECT task_id, result, args FROM celery_taskmeta"):
        check(
            f"celery result {task_id}",
            bytes(result or b"").decode("latin-1") + bytes(args or b"").decode("latin-1"),
        )

    mlflow_db = production.mlflow.backend_url
    for table, columns in {
        "params": "run_uuid, key, value",
        "tags": "run_uuid, key, value",
        "experiment_tags": "experiment_id, key, value",
        "model_version_tags": "name, key, value",
        "registered_model_tags": "name, key, value",
        "model_versions": "name, source, description",
    }.items():
        for row in _query(mlflow_db, f"SELECT {columns} FROM {table}"):
            check(f"mlflow {table} {row[:2]}", " ".join(str(v) for v in row))

    client = production.s3.client()
    scanned = 0
    for bucket, prefix in ((production.bucket, "prod/"), (production.mlflow.bucket, "mlflow/")):
        for key, text in _object_texts(client, bucket, prefix):
            scanned += 1
            check(f"s3://{bucket}/{key}", text)
    assert scanned >= 20
    assert not leaks, leaks
