"""Credentials from the host the code runs in: readers the host installs, the plain environment otherwise.

Storage and PII tokenisation need a connection's secret (an S3 client, the PII key) and a way to keep a
secret out of logs. Inside Airflow these come from Airflow connections and its log masker; in a training
pod or a test they come from the environment. The modules that need them ask here, and the host installs
its readers at start (``mlloop.orchestration.connections.use_airflow_connections``: the Airflow processes,
the ``mlloop`` command, the training CLI and the scoring service), so no module below ``orchestration/``
imports Airflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConnectionReaders:
    """How this process reads a named connection; None where the host has no such reader."""

    password: Callable[[str], str | None] | None = None  # connection id -> its password, None if absent
    s3_client: Callable[[str], Any] | None = None  # connection id -> a boto3 S3 client built from it
    mask: Callable[[str], None] | None = None  # register a secret with the host's log masker
    host: str = "environment"  # who installed them, for error messages


_readers = ConnectionReaders()


def install(readers: ConnectionReaders) -> None:
    """Make ``readers`` this process's way to read connections (the host calls this once, at start)."""
    global _readers
    _readers = readers


def readers() -> ConnectionReaders:
    """Return the connection readers installed in this process (none: the plain environment)."""
    return _readers
