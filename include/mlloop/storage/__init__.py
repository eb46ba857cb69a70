"""One storage API over a local folder and S3, with the partition layout of DESIGN.md."""

from mlloop.storage.store import Storage, StorageError, StorageUnavailableError, StoredObject, partition_key

__all__ = ["Storage", "StorageError", "StorageUnavailableError", "StoredObject", "partition_key"]
