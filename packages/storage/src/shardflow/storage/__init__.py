"""shardflow.storage: object stores, the Hugging Face Hub, Databricks and SFTP behind one client."""

from shardflow.storage._version import __version__
from shardflow.storage.backend import Backend, ObjectStat
from shardflow.storage.client import DEFAULT_TIMEOUT, StorageClient, get_client
from shardflow.storage.errors import (
    DiskFullError,
    MissingDependencyError,
    ObjectChangedError,
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    StorageTimeoutError,
    TransientStorageError,
    UnsupportedURLError,
)
from shardflow.storage.registry import ENTRY_POINT_GROUP, is_url, known_schemes, register_backend
from shardflow.storage.store import Store, from_url

__all__ = [
    "__version__",
    "get_client",
    "from_url",
    "is_url",
    "StorageClient",
    "Store",
    "Backend",
    "ObjectStat",
    "register_backend",
    "known_schemes",
    "ENTRY_POINT_GROUP",
    "DEFAULT_TIMEOUT",
    "StorageError",
    "ObjectNotFoundError",
    "PermissionDeniedError",
    "TransientStorageError",
    "StorageTimeoutError",
    "ObjectChangedError",
    "DiskFullError",
    "MissingDependencyError",
    "UnsupportedURLError",
]
