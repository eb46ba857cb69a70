"""Storage: one API over a local folder and an S3-compatible server, atomic writes, partition layout."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from mlloop.storage import Storage, StorageError, StorageUnavailableError, partition_key


@pytest.fixture(scope="module")
def s3_endpoint(free_port):
    """A moto S3 server on 127.0.0.1 (real HTTP, boto3 speaks to it as to S3)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "root"))
    import boto3

    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"b-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return Storage(f"s3://{bucket}/prefix", s3_endpoint_url=endpoint)


def test_partition_key_layout() -> None:
    assert partition_key("raw", "transactions", "2026-11-20") == "raw/transactions/date=2026-11-20"
    with pytest.raises(ValueError):
        partition_key("raw", "transactions", "20-11-2026")


def test_bytes_json_and_frames_round_trip(storage: Storage) -> None:
    uri = storage.write_bytes("raw/t/date=2026-11-20/a.bin", b"abc")
    assert uri == storage.uri("raw/t/date=2026-11-20/a.bin")
    assert storage.read_bytes(uri) == b"abc"
    assert storage.exists("raw/t/date=2026-11-20/a.bin")
    assert not storage.exists("raw/t/date=2026-11-20/b.bin")
    storage.write_json("reports/x.json", {"a": 1})
    assert storage.read_json("reports/x.json") == {"a": 1}
    frame = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    storage.write_frame("validated/t/date=2026-11-20/p.parquet", frame)
    pd.testing.assert_frame_equal(storage.read_frame("validated/t/date=2026-11-20/p.parquet"), frame)


def test_write_file_copies_a_local_file_atomically(storage: Storage, tmp_path: Path) -> None:
    local = tmp_path / "big.parquet"
    local.write_bytes(bytes(range(256)) * 4096)  # 1 MiB, written without reading it into memory
    uri = storage.write_file("snapshots/abc/data.parquet", local)
    assert uri == storage.uri("snapshots/abc/data.parquet")
    assert storage.read_bytes(uri) == local.read_bytes()
    assert storage.list("snapshots") == ["snapshots/abc/data.parquet"]  # no temporary left behind


def test_listing_and_partitions(storage: Storage) -> None:
    for day in ("2026-11-20", "2026-11-21"):
        storage.write_bytes(f"raw/t/date={day}/one.parquet", b"1")
    storage.write_bytes("raw/t/date=2026-11-21/_SUCCESS", b"")
    assert storage.list("raw/t/date=2026-11-21") == ["raw/t/date=2026-11-21/one.parquet"]
    assert list(storage.iter_partitions("raw", "t")) == ["2026-11-20", "2026-11-21"]
    assert storage.list("nothing/here") == []
    storage.copy("raw/t/date=2026-11-20/one.parquet", "quarantine/t/date=2026-11-20/x/batch.parquet")
    assert storage.read_bytes("quarantine/t/date=2026-11-20/x/batch.parquet") == b"1"


def test_read_days_concatenates_the_parquet_objects_of_those_days_only(storage: Storage) -> None:
    objects = (("2026-11-20", "a", [1, 2]), ("2026-11-20", "b", [3]), ("2026-11-21", "a", [4]))
    for day, part, values in objects:
        key = f"{partition_key('labels', 't', day)}/{part}.parquet"
        storage.write_frame(key, pd.DataFrame({"x": values}))
    storage.write_json(f"{partition_key('labels', 't', '2026-11-20')}/meta.json", {"not": "a frame"})
    storage.write_frame(f"{partition_key('labels', 't', '2026-11-22')}/a.parquet", pd.DataFrame({"x": [9]}))

    frame = storage.read_days("labels", "t", ["2026-11-20", "2026-11-21"])
    assert frame is not None and sorted(frame["x"]) == [1, 2, 3, 4]
    assert storage.read_days("labels", "t", ["2026-11-23"]) is None


def test_missing_object_names_the_uri(storage: Storage) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        storage.read_bytes("raw/none.parquet")


def test_uri_outside_root_is_refused(storage: Storage) -> None:
    with pytest.raises(StorageError, match="not under the data root"):
        storage.read_bytes("/etc/passwd")


def test_local_write_is_atomic_when_writer_dies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage(str(tmp_path))
    storage.write_bytes("validated/t/date=2026-11-20/p.parquet", b"old")

    def _killed(*args, **kwargs):
        raise KeyboardInterrupt("writer killed mid-write")

    monkeypatch.setattr(os, "fsync", _killed)
    with pytest.raises(KeyboardInterrupt):
        storage.write_bytes("validated/t/date=2026-11-20/p.parquet", b"new-but-partial")
    assert storage.read_bytes("validated/t/date=2026-11-20/p.parquet") == b"old"
    assert storage.list("validated/t") == ["validated/t/date=2026-11-20/p.parquet"]
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "validated/t/date=2026-11-20").iterdir())


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(StorageError, match="only a local path"):
        Storage("gs://bucket/x")
    with pytest.raises(StorageError, match="names no bucket"):
        Storage("s3://")


@pytest.fixture
def restore_readers():
    """Put back this process's connection readers after a test installs its own."""
    from mlloop import connections

    before = connections.readers()
    yield
    connections.install(before)


def test_a_named_connection_without_a_reader_names_the_fix(restore_readers) -> None:
    from mlloop.connections import ConnectionReaders, install

    install(ConnectionReaders())
    with pytest.raises(StorageError, match=r"MLLOOP_STORAGE_CONN_ID='data_s3' names a connection.*unset"):
        Storage("s3://bucket/prefix", conn_id="data_s3")


def test_a_named_connection_is_read_through_airflow(
    restore_readers, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import boto3

    from mlloop.orchestration.connections import use_airflow_connections

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="through-airflow")
    extra = {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    connection = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_DATA_S3_TEST", json.dumps(connection))
    use_airflow_connections()

    storage = Storage("s3://through-airflow/prefix", conn_id="data_s3_test")
    storage.write_bytes("a/b.txt", b"hello")

    assert (
        Storage("s3://through-airflow/prefix", s3_endpoint_url=s3_endpoint).read_bytes("a/b.txt") == b"hello"
    )


def test_the_s3_client_is_bounded_by_the_settings(mlloop_env) -> None:
    from mlloop.storage.store import s3_client_config

    mlloop_env(s3_connect_timeout_s=2, s3_read_timeout_s=3, s3_max_attempts=4)
    config = s3_client_config()
    assert (config.connect_timeout, config.read_timeout) == (2, 3)
    assert config.retries == {"total_max_attempts": 4, "mode": "standard"}


def test_an_unreachable_endpoint_fails_fast_naming_it_and_the_settings(mlloop_env, free_port) -> None:
    mlloop_env(s3_connect_timeout_s=1, s3_read_timeout_s=1, s3_max_attempts=1)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    storage = Storage("s3://no-server/prefix", s3_endpoint_url=endpoint)
    with pytest.raises(StorageUnavailableError) as failure:
        storage.write_bytes("a/b.txt", b"hello")
    message = str(failure.value)
    assert f"S3 write of s3://no-server/prefix/a/b.txt failed at endpoint {endpoint}" in message
    assert "1 attempt(s)" in message and "MLLOOP_S3_ENDPOINT_URL" in message


def test_an_unreachable_store_is_not_taken_for_a_missing_snapshot(mlloop_env, free_port) -> None:
    from mlloop.training import load_snapshot

    mlloop_env(s3_connect_timeout_s=1, s3_read_timeout_s=1, s3_max_attempts=1)
    storage = Storage("s3://no-server/prefix", s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageUnavailableError, match="failed at endpoint"):
        load_snapshot(storage, "0" * 64)


def test_a_named_connection_keeps_the_bounds_and_its_own_config_wins(
    restore_readers, s3_endpoint: str, mlloop_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from mlloop.connections import readers
    from mlloop.orchestration.connections import use_airflow_connections

    mlloop_env(s3_connect_timeout_s=2, s3_read_timeout_s=3, s3_max_attempts=4)
    extra = {"endpoint_url": s3_endpoint, "region_name": "us-east-1", "config_kwargs": {"read_timeout": 7}}
    connection = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_BOUNDED_S3_TEST", json.dumps(connection))
    use_airflow_connections()
    build = readers().s3_client
    assert build is not None

    config = build("bounded_s3_test").meta.config
    assert (config.connect_timeout, config.read_timeout) == (2, 7)
    assert config.retries["total_max_attempts"] == 4
