"""The S3 endpoint hangs during a publish and during a snapshot write: fail fast, publish nothing half-done.

moto's S3 server runs as a process of its own. As the step sends the write under test (the validated
partition of a day, a snapshot's data or its manifest), the server gets SIGSTOP: a hung endpoint, which
accepts connections and never answers (SIGKILL would lose moto's in-memory state, which a real store
keeps). The client's bounds (``MLLOOP_S3_*``, here 2 s and 2 attempts) must make the step fail in seconds
with an error naming the endpoint and the object; nothing may be visible as published without all its
data; after SIGCONT the retried step must complete with the same objects as a run without the fault, and
no raw file may be landed twice. Each test prints how long the failure and the recovery took.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlloop.ingestion.batches import land_batch, publish_validated, validate_landed_batch
from mlloop.labels import read_delivered_labels
from mlloop.storage import Storage, StorageUnavailableError, partition_key
from mlloop.training import SnapshotError, create_snapshot, load_snapshot
from mlloop.training.snapshot import SnapshotManifest, snapshot_keys
from mlloop.usecase import load_use_case

pytestmark = pytest.mark.slow

USE_CASE = load_use_case("card_fraud")
ROWS = 900
DAYS = [date(2026, 11, 20) + timedelta(days=i) for i in range(3)]
WINDOW = DAYS[1:]  # the first day is history context
AS_OF = datetime(2026, 11, 26, tzinfo=UTC)
PII_KEY = b"faults-tests-pii-key-0123456789ab"
CLIENT_BOUNDS = {"s3_connect_timeout_s": 2, "s3_read_timeout_s": 2, "s3_max_attempts": 2}
MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@dataclass
class S3Endpoint:
    """A moto S3 server in its own process group, which a test can hang (SIGSTOP) and resume (SIGCONT)."""

    proc: subprocess.Popen
    url: str
    paused_at: float | None = None

    def pause(self) -> None:
        """Hang the endpoint: connections are still accepted by the kernel, nothing is answered."""
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.paused_at = time.monotonic()

    def resume(self) -> float:
        """Let the endpoint answer again; return when that happened (monotonic seconds)."""
        os.killpg(self.proc.pid, signal.SIGCONT)
        return time.monotonic()


@pytest.fixture
def s3(tmp_path: Path, free_port: Callable[[], int], monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Endpoint]:
    """Start ``moto_server`` as a subprocess on a free port; the AWS env points boto3 at nothing else."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(tmp_path / "moto.log", "wb") as log_file:
        argv = [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)]
        proc = subprocess.Popen(
            argv, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    endpoint = S3Endpoint(proc, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while True:
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{endpoint.url}/moto-api/", timeout=2) as resp,
            ):
                if resp.status == 200:
                    break
            assert proc.poll() is None, (tmp_path / "moto.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "moto_server did not answer within 60 s"
            time.sleep(0.1)
        for name in [k for k in os.environ if k.startswith("AWS_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "faults-test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "faults-test")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield endpoint
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@dataclass
class HangOnWrite:
    """Hangs the endpoint as the first PutObject whose URL holds ``key_part`` is sent (once armed)."""

    endpoint: S3Endpoint
    key_part: str | None = None
    paused_at: float | None = None

    def arm(self, key_part: str) -> None:
        """Hang the endpoint at the next write of a key holding ``key_part``."""
        self.key_part = key_part

    def before_send(self, request: Any, **_: Any) -> None:
        """botocore's ``before-send`` hook: the request is about to go on the wire."""
        if self.key_part and self.paused_at is None and self.key_part in request.url:
            self.endpoint.pause()
            self.paused_at = time.monotonic()


@pytest.fixture
def hang_on_write(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> HangOnWrite:
    """A fault hook on a fresh boto3 default session, so the client the storage layer builds carries it."""
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    boto3.setup_default_session()
    fault = HangOnWrite(s3)
    boto3.DEFAULT_SESSION.events.register("before-send.s3.PutObject", fault.before_send)
    return fault


@pytest.fixture
def s3_storage(s3: S3Endpoint, hang_on_write: HangOnWrite, mlloop_env: Callable[..., None]) -> Storage:
    """A fresh bucket on the endpoint, opened through the settings as a task opens its data root."""
    import boto3

    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3.url).create_bucket(Bucket=bucket)
    mlloop_env(data_root=f"s3://{bucket}/platform", s3_endpoint_url=s3.url, **CLIENT_BOUNDS)
    return Storage.from_settings()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Storage:
    """The same days ingested and snapshotted on a local root with no fault: what the retries must equal."""
    storage = Storage(str(tmp_path_factory.mktemp("reference")))
    for day in DAYS:
        batch = land_batch(storage, USE_CASE, day, rows=ROWS)
        validate_landed_batch(storage, USE_CASE, batch)
        publish_validated(storage, USE_CASE, batch, PII_KEY)
    create_snapshot(storage, USE_CASE, WINDOW, labels=_labels(storage), as_of=AS_OF)
    return storage


def _labels(storage: Storage) -> pd.DataFrame:
    labels = read_delivered_labels(storage, USE_CASE, DAYS, AS_OF)
    assert labels is not None
    return labels


def _assert_names_the_endpoint(error: Exception, endpoint: S3Endpoint, storage: Storage) -> None:
    message = str(error)
    bucket = storage.root.removeprefix("s3://").split("/")[0]
    assert endpoint.url in message and f"s3://{bucket}/" in message, message
    assert "MLLOOP_S3_ENDPOINT_URL" in message and "re-run" in message, message
    print(f"\n[s3 outage] the error: {message}")


def _report(fault: str, paused_at: float, failed_at: float, resumed_at: float, done_at: float) -> None:
    print(
        f"\n[s3 outage] {fault}: the step failed {failed_at - paused_at:.1f} s into the hang; "
        f"the retried step completed {done_at - resumed_at:.1f} s after the endpoint came back "
        f"({done_at - paused_at:.1f} s from fault to recovery)"
    )


def test_a_publish_during_a_hung_endpoint_fails_fast_and_its_retry_publishes_once(
    s3: S3Endpoint, s3_storage: Storage, reference: Storage, hang_on_write: HangOnWrite
) -> None:
    day = DAYS[0]
    hang_on_write.arm("/validated/")
    batch = land_batch(s3_storage, USE_CASE, day, rows=ROWS)
    validate_landed_batch(s3_storage, USE_CASE, batch)
    with pytest.raises(StorageUnavailableError) as failure:
        publish_validated(s3_storage, USE_CASE, batch, PII_KEY)
    failed_at = time.monotonic()
    paused_at = hang_on_write.paused_at
    assert paused_at is not None, "the endpoint was never hung: no validated write was sent"
    resumed_at = s3.resume()
    _assert_names_the_endpoint(failure.value, s3, s3_storage)
    assert failed_at - paused_at < 20, "the client's bounds did not hold"

    # A put the hung server had already received may still land once it resumes, but only whole.
    validated_prefix = partition_key("validated", USE_CASE.dataset, day)
    expected_key = reference.list(partition_key("validated", USE_CASE.dataset, day))[0]
    expected = reference.read_frame(expected_key)
    for key in s3_storage.list(validated_prefix):
        pd.testing.assert_frame_equal(s3_storage.read_frame(key), expected)

    result = publish_validated(s3_storage, USE_CASE, batch, PII_KEY)  # the publish task's retry
    done_at = time.monotonic()
    _report("publish of a validated day", paused_at, failed_at, resumed_at, done_at)

    assert s3_storage.list(validated_prefix) == [expected_key]
    assert s3_storage.key(result["validated_uri"]) == expected_key
    pd.testing.assert_frame_equal(s3_storage.read_frame(expected_key), expected)
    # A re-run of the whole day (a cleared DAG run) lands nothing twice and publishes the same object.
    relanded = land_batch(s3_storage, USE_CASE, day, rows=ROWS)
    assert not relanded.newly_landed
    raw_prefix = partition_key("raw", USE_CASE.dataset, day)
    assert s3_storage.list(raw_prefix) == reference.list(raw_prefix)
    assert len(s3_storage.list(raw_prefix)) == 1
    labels_prefix = partition_key("labels", USE_CASE.dataset, day)
    assert s3_storage.list(labels_prefix) == reference.list(labels_prefix)


@pytest.mark.parametrize("hung_write", ["data.parquet", "manifest.json"])
def test_a_snapshot_during_a_hung_endpoint_fails_fast_and_its_retry_equals_a_clean_one(
    s3: S3Endpoint, s3_storage: Storage, reference: Storage, hang_on_write: HangOnWrite, hung_write: str
) -> None:
    for day in DAYS:  # the validated days, as the ingest DAG left them
        prefix = partition_key("validated", USE_CASE.dataset, day)
        for key in reference.list(prefix):
            s3_storage.write_bytes(key, reference.read_bytes(key))
    labels = _labels(reference)
    expected_manifest_key = next(k for k in reference.list("snapshots") if k.endswith("manifest.json"))
    expected = SnapshotManifest.model_validate(reference.read_json(expected_manifest_key))
    data_key, manifest_key = snapshot_keys(expected.digest)

    hang_on_write.arm(f"/snapshots/{expected.digest}/{hung_write}")
    with pytest.raises(StorageUnavailableError) as failure:
        create_snapshot(s3_storage, USE_CASE, WINDOW, labels=labels, as_of=AS_OF)
    failed_at = time.monotonic()
    paused_at = hang_on_write.paused_at
    assert paused_at is not None, f"the endpoint was never hung: no {hung_write} write was sent"
    resumed_at = s3.resume()
    _assert_names_the_endpoint(failure.value, s3, s3_storage)
    assert failed_at - paused_at < 20, "the client's bounds did not hold"

    if hung_write == "data.parquet":  # the manifest commits a snapshot: it is never written before its data
        assert not s3_storage.exists(manifest_key)
        with pytest.raises(SnapshotError, match="is not complete"):
            load_snapshot(s3_storage, expected.digest)
    # Whatever the resumed server still landed, every manifest there has all its data, digest checked.
    for key in (k for k in s3_storage.list("snapshots") if k.endswith("manifest.json")):
        load_snapshot(s3_storage, key.split("/")[1])

    manifest = create_snapshot(s3_storage, USE_CASE, WINDOW, labels=labels, as_of=AS_OF)  # the retry
    done_at = time.monotonic()
    _report(f"snapshot write ({hung_write})", paused_at, failed_at, resumed_at, done_at)

    assert manifest == expected
    assert s3_storage.read_bytes(data_key) == reference.read_bytes(data_key)
    assert sorted(k for k in s3_storage.list("snapshots")) == [data_key, manifest_key]
    frame, _ = load_snapshot(s3_storage, expected.digest)
    assert len(frame) == expected.row_count
