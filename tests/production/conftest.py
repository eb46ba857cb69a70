"""Production-stack fixtures: fresh Postgres databases, an S3-compatible server, MLflow with basic auth.

Every server here is a real one started as a separate process on a free 127.0.0.1 port, in its own
session so teardown stops it and every child (gunicorn/uvicorn workers) it started. Secrets are the
canaries from ``canary.py``: tests grep what the platform wrote for them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import canary
import pytest

VENV_BIN = Path(sys.executable).parent
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
MLFLOW_USERNAME = "admin"


def _pg_admin_connection():
    """Open an autocommit connection to the maintenance database (CREATE/DROP DATABASE need it)."""
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=10)
    conn.autocommit = True
    return conn


def pg_url(name: str) -> str:
    """Return the SQLAlchemy URL of database ``name`` on the test Postgres."""
    return f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


@pytest.fixture(scope="session")
def new_pg_database() -> Iterator[Callable[[str], str]]:
    """Return ``make(prefix) -> SQLAlchemy URL`` creating a fresh database; all are dropped at session end."""
    created: list[str] = []

    def _make(prefix: str) -> str:
        safe = "".join(c if c.isalnum() else "_" for c in prefix.lower())[:30]
        name = f"{safe}_{uuid.uuid4().hex[:10]}"
        with contextlib.closing(_pg_admin_connection()) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return pg_url(name)

    yield _make
    with contextlib.closing(_pg_admin_connection()) as conn, conn.cursor() as cur:
        for name in created:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {path})"


def start_server(
    argv: list[str], env: dict[str, str], home: Path, health_url: str, what: str, timeout_s: float = 180.0
) -> subprocess.Popen:
    """Start ``argv`` in its own session (log ``home/server.log``) and wait until ``health_url`` answers 200.

    Raises:
        RuntimeError: the process exited or did not answer in time; the message holds the log tail.
    """
    log_path = home / "server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=home,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(health_url, timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except (urllib.error.URLError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            reason = (
                f"exited with {proc.returncode}" if proc.poll() is not None else f"no answer in {timeout_s}s"
            )
            stop_server(proc)
            raise RuntimeError(f"{what} did not start ({reason}) - log {log_path}:\n{_tail(log_path)}")
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Stop a server started by :func:`start_server` and every process of its session (TERM, then KILL)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; children (workers) of the same group may still linger.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


@pytest.fixture
def background_process() -> Iterator[Callable[..., subprocess.Popen]]:
    """Return :func:`start_server` for one test; every process it started is stopped at teardown."""
    started: list[subprocess.Popen] = []

    def _start(*args: Any, **kwargs: Any) -> subprocess.Popen:
        started.append(start_server(*args, **kwargs))
        return started[-1]

    yield _start
    for proc in started:
        stop_server(proc)


@dataclass(frozen=True)
class S3Server:
    """An S3-compatible endpoint (moto server mode) and the credentials clients use for it."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str

    def client(self):
        """Return a boto3 S3 client for this endpoint."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (idempotent) and return the name."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """Return the AWS_* environment a process needs to reach this endpoint with boto3."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory, free_port) -> Iterator[S3Server]:
    """Run moto's S3 server as a separate process on a free 127.0.0.1 port for the whole session."""
    home = tmp_path_factory.mktemp("moto")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = start_server(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env,
        home,
        f"http://127.0.0.1:{port}/moto-api/",
        "moto S3 server",
        timeout_s=60,
    )
    try:
        yield S3Server(
            endpoint_url=f"http://127.0.0.1:{port}",
            access_key_id="mlloop-test-access-key",
            secret_access_key=canary.S3_SECRET_KEY,
            region="us-east-1",
        )
    finally:
        stop_server(proc)


@dataclass(frozen=True)
class MlflowServer:
    """An MLflow tracking server with basic auth, its admin credentials and where it keeps its state."""

    uri: str
    username: str
    password: str = field(repr=False)
    bucket: str
    backend_url: str
    home: Path

    def client_env(self) -> dict[str, str]:
        """Return the environment a process needs to use this server (MLflow client and mlloop settings)."""
        return {
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
            "MLLOOP_MLFLOW_TRACKING_URI": self.uri,
        }


@pytest.fixture(scope="session")
def mlflow_auth_server(
    tmp_path_factory, free_port, new_pg_database, s3_server: S3Server
) -> Iterator[MlflowServer]:
    """Run ``mlflow server --app-name basic-auth``: Postgres backend and auth DB, artifacts proxied to S3."""
    home = tmp_path_factory.mktemp("mlflow-auth")
    port = free_port()
    bucket = s3_server.create_bucket(f"mlflow-{uuid.uuid4().hex[:12]}")
    backend_url = new_pg_database("mlflow_backend")
    auth_config = home / "basic_auth.ini"
    auth_config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {new_pg_database('mlflow_auth')}\n"
        f"admin_username = {MLFLOW_USERNAME}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    # The server alone holds the S3 keys and the admin password; clients see only MLflow's API.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "MLLOOP_"))}
    env.update(
        {
            **{k: v for k, v in s3_server.env().items() if k != "AWS_ENDPOINT_URL_S3"},
            "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": canary.MLFLOW_PASSWORD,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
            # MLflow's GenAI job runner (7 huey consumer processes) serves nothing this platform uses.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    argv = [
        str(VENV_BIN / "mlflow"), "server", "--app-name", "basic-auth",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", backend_url,
        "--artifacts-destination", f"s3://{bucket}/mlflow",
    ]  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    proc = start_server(argv, env, home, f"{uri}/health", "MLflow basic-auth server", timeout_s=240)
    try:
        yield MlflowServer(
            uri=uri,
            username=MLFLOW_USERNAME,
            password=canary.MLFLOW_PASSWORD,
            bucket=bucket,
            backend_url=backend_url,
            home=home,
        )
    finally:
        stop_server(proc)
