"""The errors of shardflow.storage: one base, leaves that also inherit the matching builtin."""

from __future__ import annotations

import os
from typing import Any

__all__ = [
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


class ObjectChangedError(TransientStorageError):
    """The object was rewritten while a read continued where an earlier answer broke off.

    The resumed request asked for the version the first answer came from and the store refused it
    (HTTP 412). The client then starts the transfer over, so this is retried like any transient failure.
    """


class DiskFullError(StorageError, OSError):
    """A download found no room on the local disk (``ENOSPC``) or the user's quota exhausted (``EDQUOT``).

    Its temporary file is already removed. Not retried.

    Attributes:
        path: The file being written (its final name).
        folder: The folder that ran out of room.
        needed: Bytes the whole file needs (the object's size), or ``None`` when the store did not say.
    """

    def __init__(
        self,
        message: str,
        url: str = "",
        *,
        path: str = "",
        needed: int | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message, url)
        self.errno = code
        self.path = path
        self.folder = os.path.dirname(path)
        self.needed = needed

    def __reduce__(self) -> tuple[Any, ...]:
        return (_disk_full, (str(self), self.url, self.path, self.needed, self.errno))


def _disk_full(message: str, url: str, path: str, needed: int | None, code: int | None) -> DiskFullError:
    """Rebuild a pickled :class:`DiskFullError` (its keyword arguments do not fit ``__reduce__``'s tuple)."""
    return DiskFullError(message, url, path=path, needed=needed, code=code)


class MissingDependencyError(StorageError, ImportError):
    """A URL scheme whose SDK is not installed; the message names the extra to install."""


class UnsupportedURLError(StorageError, ValueError):
    """A URL with an unknown scheme or a shape its scheme does not accept."""
