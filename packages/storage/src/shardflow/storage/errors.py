"""The errors of shardflow.storage: one base, leaves that also inherit the matching builtin."""

from __future__ import annotations

__all__ = [
    "StorageError",
    "ObjectNotFoundError",
    "PermissionDeniedError",
    "TransientStorageError",
    "StorageTimeoutError",
    "MissingDependencyError",
    "UnsupportedURLError",
]


class StorageError(Exception):
    """Base of every error raised by shardflow.storage.

    Attributes:
        url: The object or prefix URL the failed operation was about ("" when there is none).
    """

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.url = url

    def __reduce__(self) -> tuple[type[StorageError], tuple[str, str]]:
        return (type(self), (str(self), self.url))


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """The object (or its bucket or container) does not exist. Never retried."""


class PermissionDeniedError(StorageError, PermissionError):
    """The store refused the credentials, or found none. Never retried."""


class TransientStorageError(StorageError, ConnectionError):
    """A failure that may pass: 5xx, throttling, a reset or truncated transfer. Retried with backoff."""


class StorageTimeoutError(TransientStorageError, TimeoutError):
    """A transfer that ran past its wall-clock timeout. Retried like any transient failure."""


class MissingDependencyError(StorageError, ImportError):
    """A URL scheme whose SDK is not installed; the message names the extra to install."""


class UnsupportedURLError(StorageError, ValueError):
    """A URL with an unknown scheme or a shape its scheme does not accept."""
