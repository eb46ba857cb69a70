"""Storage over a local folder or ``s3://bucket/prefix``: atomic writes, URIs in and out.

Tasks hand each other URIs (never frames). A write is atomic: locally the bytes go to a hidden
temporary file in the target folder and are renamed into place; on S3 an object only becomes
visible once its upload completes. Listings skip hidden (``.``/``_``) names, so a killed writer
never leaves anything a reader picks up.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlloop.config import get_settings

if TYPE_CHECKING:
    import pandas as pd

    from mlloop.config import Settings


class StorageError(RuntimeError):
    """Raised when a storage object is missing or cannot be written."""


class StorageUnavailableError(StorageError):
    """Raised when the store itself failed (unreachable, hung, refused): not a sign an object is missing."""


def partition_key(area: str, dataset: str, day: date | str) -> str:
    """Return the partition folder key, e.g. ``raw/<dataset>/date=2026-11-20``."""
    day_str = day.isoformat() if isinstance(day, date) else str(date.fromisoformat(str(day)))
    return f"{area}/{dataset}/date={day_str}"


@dataclass(frozen=True)
class StoredObject:
    """One committed object: its key under the root, its size in bytes and when it was last written."""

    key: str
    size: int
    modified: datetime


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


class _Backend(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def list_objects(self, prefix: str) -> list[StoredObject]: ...


@dataclass(frozen=True)
class _LocalBackend:
    root: Path

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".tmp-{uuid.uuid4().hex}-{target.name}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".tmp-{uuid.uuid4().hex}-{target.name}"
        try:
            shutil.copyfile(path, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"{self.root / key} does not exist") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            rel = path.relative_to(self.root)
            if path.is_file() and not any(_is_hidden(part) for part in rel.parts):
                keys.append(rel.as_posix())
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_objects(self, prefix: str) -> list[StoredObject]:
        objects = []
        for key in self.list(prefix):
            stat = self._path(key).stat()
            objects.append(StoredObject(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)))
        return objects


@dataclass(frozen=True)
class _S3Backend:
    client: Any
    bucket: str
    prefix: str

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _call(self, action: str, key: str) -> Iterator[None]:
        """Turn a failed S3 call into a StorageError naming the endpoint, the object and what to check."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            uri = f"s3://{self.bucket}/{key}"
            raise StorageUnavailableError(_s3_failure(self.client, action, uri, exc)) from exc

    def put(self, key: str, data: bytes) -> None:
        with self._call("write", self._key(key)):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        with self._call("write", self._key(key)):
            self.client.upload_file(str(path), self.bucket, self._key(key))  # multipart for large files

    def get(self, key: str) -> bytes:
        with self._call("read", self._key(key)):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            except self.client.exceptions.NoSuchKey as exc:
                raise StorageError(f"s3://{self.bucket}/{self._key(key)} does not exist") from exc

    def exists(self, key: str) -> bool:
        with self._call("list", self._key(key)):
            resp = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(key), MaxKeys=1)
        return any(obj["Key"] == self._key(key) for obj in resp.get("Contents", []))

    def list(self, prefix: str) -> list[str]:
        return [obj.key for obj in self.list_objects(prefix)]

    def delete(self, key: str) -> None:
        with self._call("delete", self._key(key)):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list_objects(self, prefix: str) -> list[StoredObject]:
        folder = prefix.strip("/")
        full = f"{self._key(folder)}/" if folder else (f"{self.prefix}/" if self.prefix else "")
        objects = []
        with self._call("list", full):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix) + 1 :] if self.prefix else obj["Key"]
                    if not any(_is_hidden(part) for part in rel.split("/")):
                        objects.append(StoredObject(rel, int(obj["Size"]), obj["LastModified"]))
        return sorted(objects, key=lambda o: o.key)


def _s3_failure(client: Any, action: str, uri: str, exc: Exception) -> str:
    """Return a failed S3 call's message: the endpoint, the object, the client's bounds, what to check."""
    config = client.meta.config
    retries = config.retries or {}
    attempts = retries.get("total_max_attempts") or (
        retries["max_attempts"] + 1 if "max_attempts" in retries else "botocore's default number of"
    )
    return (
        f"S3 {action} of {uri} failed at endpoint {client.meta.endpoint_url} "
        f"({type(exc).__name__}: {exc}). Check that this endpoint is up and answering "
        "(MLLOOP_S3_ENDPOINT_URL, or the storage connection's endpoint_url), that the bucket exists and that "
        f"the credentials may {action} it. The client gave up after {attempts} attempt(s) with "
        f"connect/read timeouts of {config.connect_timeout}/{config.read_timeout} s "
        "(MLLOOP_S3_MAX_ATTEMPTS, MLLOOP_S3_CONNECT_TIMEOUT_S, MLLOOP_S3_READ_TIMEOUT_S). An S3 object is "
        "visible only once whole, so nothing half-written was left: re-run the step once it answers."
    )


def s3_client_config(settings: Settings | None = None) -> Any:
    """Return the botocore Config bounding every S3 call: connect/read timeouts and standard retries."""
    from botocore.config import Config

    settings = settings or get_settings()
    return Config(
        connect_timeout=settings.s3_connect_timeout_s,
        read_timeout=settings.s3_read_timeout_s,
        retries={"total_max_attempts": settings.s3_max_attempts, "mode": "standard"},
    )


def _s3_client(endpoint_url: str | None, conn_id: str | None) -> Any:
    """Build a boto3 S3 client from a named connection (the host's reader), or the standard AWS env/chain."""
    if conn_id:
        from mlloop.connections import readers

        build = readers().s3_client
        if build is None:
            raise StorageError(
                f"MLLOOP_STORAGE_CONN_ID={conn_id!r} names a connection, but this process reads connections "
                "from the environment only (no Airflow here). Run it through Airflow, the `mlloop` command "
                "or the scoring service, or unset MLLOOP_STORAGE_CONN_ID and give the AWS credentials in the "
                "environment (MLLOOP_S3_ENDPOINT_URL for an S3-compatible store)."
            )
        return build(conn_id)
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url, config=s3_client_config())


class Storage:
    """Read and write objects under one root (local folder or ``s3://bucket/prefix``) by key or URI."""

    def __init__(
        self,
        root: str,
        *,
        s3_client: Any | None = None,
        s3_endpoint_url: str | None = None,
        conn_id: str | None = None,
    ) -> None:
        self.root = root.rstrip("/")
        self._backend: _Backend
        if root.startswith("s3://"):
            bucket, _, prefix = root[len("s3://") :].partition("/")
            if not bucket:
                raise StorageError(f"data root {root!r} names no bucket; use s3://<bucket>/<prefix>")
            client = s3_client or _s3_client(s3_endpoint_url, conn_id)
            self._backend = _S3Backend(client, bucket, prefix.strip("/"))
        elif "://" in self.root and not self.root.startswith("file://"):
            raise StorageError(f"data root {root!r}: only a local path, file:// or s3:// is supported")
        else:
            local = Path(self.root.removeprefix("file://")).expanduser().resolve()
            self.root = str(local)
            self._backend = _LocalBackend(local)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Storage:
        """Open the storage root configured by ``MLLOOP_DATA_ROOT`` (and its S3 connection)."""
        settings = settings or get_settings()
        return cls(
            settings.data_root, s3_endpoint_url=settings.s3_endpoint_url, conn_id=settings.storage_conn_id
        )

    def uri(self, key: str) -> str:
        """Return the full URI of ``key`` under this root."""
        return f"{self.root}/{key.lstrip('/')}"

    def key(self, uri_or_key: str) -> str:
        """Return the key of a URI under this root (a key is returned unchanged)."""
        if uri_or_key.startswith(self.root + "/"):
            return uri_or_key[len(self.root) + 1 :]
        if "://" in uri_or_key or uri_or_key.startswith("/"):
            raise StorageError(f"{uri_or_key!r} is not under the data root {self.root!r}")
        return uri_or_key

    def exists(self, uri_or_key: str) -> bool:
        """Return whether the object exists."""
        return self._backend.exists(self.key(uri_or_key))

    def write_bytes(self, uri_or_key: str, data: bytes) -> str:
        """Write ``data`` atomically and return its URI."""
        key = self.key(uri_or_key)
        self._backend.put(key, data)
        return self.uri(key)

    def write_file(self, uri_or_key: str, path: Path) -> str:
        """Write a local file's bytes atomically without holding them in memory; return the URI."""
        key = self.key(uri_or_key)
        self._backend.put_file(key, path)
        return self.uri(key)

    def read_bytes(self, uri_or_key: str) -> bytes:
        """Read an object's bytes; raises StorageError naming the URI when it is missing."""
        return self._backend.get(self.key(uri_or_key))

    def write_json(self, uri_or_key: str, payload: Any) -> str:
        """Write ``payload`` as indented JSON atomically and return its URI."""
        text = json.dumps(payload, indent=2, sort_keys=True, default=str)
        return self.write_bytes(uri_or_key, text.encode())

    def read_json(self, uri_or_key: str) -> Any:
        """Read a JSON object."""
        return json.loads(self.read_bytes(uri_or_key))

    def write_frame(self, uri_or_key: str, frame: pd.DataFrame) -> str:
        """Write a frame as Parquet atomically and return its URI."""
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return self.write_bytes(uri_or_key, buf.getvalue())

    def read_frame(self, uri_or_key: str, columns: list[str] | None = None) -> pd.DataFrame:
        """Read a Parquet object into a frame (only ``columns`` when given)."""
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(uri_or_key)), columns=columns)

    def list(self, prefix: str) -> list[str]:
        """Return the committed keys under ``prefix`` (hidden temporaries excluded), sorted."""
        return self._backend.list(self.key(prefix).rstrip("/"))

    def list_objects(self, prefix: str) -> list[StoredObject]:
        """Return the committed objects under ``prefix`` with their sizes and write times, by key."""
        return self._backend.list_objects(self.key(prefix).rstrip("/"))

    def iter_partitions(self, area: str, dataset: str) -> Iterator[str]:
        """Yield the ``date=`` values that hold at least one object in ``area/dataset``."""
        seen: set[str] = set()
        for key in self.list(f"{area}/{dataset}"):
            part = next((p for p in key.split("/") if p.startswith("date=")), None)
            if part and part not in seen:
                seen.add(part)
                yield part.removeprefix("date=")

    def read_days(
        self, area: str, dataset: str, days: Iterable[date | str], columns: list[str] | None = None
    ) -> pd.DataFrame | None:
        """Return every Parquet object in the ``days`` partitions of ``area/dataset`` as one frame.

        Only ``columns`` when given. None when those partitions hold no Parquet object.
        """
        import pandas as pd

        keys = [
            key
            for day in days
            for key in self.list(partition_key(area, dataset, day))
            if key.endswith(".parquet")
        ]
        return pd.concat([self.read_frame(k, columns) for k in keys], ignore_index=True) if keys else None

    def copy(self, src: str, dst: str) -> str:
        """Copy one object to another key atomically and return the destination URI."""
        return self.write_bytes(dst, self.read_bytes(src))

    def delete(self, uri_or_key: str) -> None:
        """Delete one object (missing is fine)."""
        self._backend.delete(self.key(uri_or_key))
