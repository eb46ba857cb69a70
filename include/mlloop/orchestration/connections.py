"""Airflow's connections and log masker as the platform's connection readers (``mlloop.connections``).

``use_airflow_connections`` is called where a process starts that may be given Airflow connections: this
package's import (every DAG file and task), the ``mlloop`` command, the training CLI (the local backend's
subprocess) and the scoring service (docker compose hands it ``AIRFLOW_CONN_MLLOOP_S3``). Airflow and the
Amazon provider are imported only when a connection is read, so installing costs nothing and a process
without them (a training pod) keeps the environment path.
"""

from __future__ import annotations

import logging
from typing import Any

from mlloop.connections import ConnectionReaders, install
from mlloop.storage.store import s3_client_config

log = logging.getLogger(__name__)


def _password(conn_id: str) -> str | None:
    """Return an Airflow connection's password; None when Airflow or the connection is not available."""
    try:
        from airflow.sdk import Connection
    except ImportError:
        return None
    try:
        return Connection.get(conn_id).password
    except Exception as exc:  # the SDK raises its own errors for a missing connection or no API server
        log.info("Connection %r not available (%s)", conn_id, type(exc).__name__)
        return None


def _s3_client(conn_id: str) -> Any:
    """Return a boto3 S3 client built by the Amazon provider from the Airflow AWS connection ``conn_id``.

    Its timeouts and retries are the platform's bounds (``s3_client_config``); the connection's own
    ``config_kwargs`` extra, when it has one, wins key by key.
    """
    try:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    except ImportError as exc:
        raise RuntimeError(
            f"MLLOOP_STORAGE_CONN_ID={conn_id!r} names an Airflow connection, but the Amazon provider "
            "(apache-airflow-providers-amazon) is not installed in this process; install it, or unset "
            "MLLOOP_STORAGE_CONN_ID and give the AWS credentials in the environment."
        ) from exc
    own = S3Hook(aws_conn_id=conn_id).conn_config.botocore_config
    bounded = s3_client_config() if own is None else s3_client_config().merge(own)
    return S3Hook(aws_conn_id=conn_id, config=bounded).get_conn()


def _mask(secret: str) -> None:
    """Register ``secret`` with Airflow's log masker so it never appears in a task log."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:
        return
    mask_secret(secret)


def use_airflow_connections() -> None:
    """Install Airflow's connections and log masker as this process's connection readers."""
    install(ConnectionReaders(password=_password, s3_client=_s3_client, mask=_mask, host="Airflow"))
