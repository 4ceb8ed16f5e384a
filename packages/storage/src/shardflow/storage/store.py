"""Store: a client rooted at a folder-like URL, taking names relative to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from shardflow.storage.backend import ObjectStat
from shardflow.storage.client import StorageClient, get_client

__all__ = ["Store", "from_url"]


class Store:
    """The objects under one root URL (``s3://bucket/dataset``, ``/data/out``, ...), named relative to it.

    Args:
        root: The root URL or local path.
        client: The client serving ``root``'s scheme.
    """

    def __init__(self, root: str, client: StorageClient) -> None:
        self.root = root
        self.client = client

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    def url(self, name: str) -> str:
        """The full URL of ``name``, a relative name such as ``"train/shard.00000.mds"``.

        Raises:
            ValueError: ``name`` is absolute or climbs out of the root with ``..``.
        """
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts:
            raise ValueError(f"object name {name!r} must be relative to {self.root} and stay below it")
        return self.client.backend.join(self.root, name)

    def download(self, name: str, local: str | os.PathLike[str]) -> Path:
        """Download ``name`` to ``local`` (see :meth:`StorageClient.download`)."""
        return self.client.download(self.url(name), local)

    def get_bytes(self, name: str, start: int = 0, end: int | None = None) -> bytes:
        """Read bytes ``[start, end)`` of ``name`` (see :meth:`StorageClient.get_bytes`)."""
        return self.client.get_bytes(self.url(name), start, end)

    def upload(self, local: str | os.PathLike[str], name: str) -> None:
        """Upload the local file as ``name``."""
        self.client.upload(local, self.url(name))

    def put_bytes(self, name: str, data: bytes) -> None:
        """Store ``data`` as ``name``."""
        self.client.put_bytes(self.url(name), data)

    def size(self, name: str) -> int:
        """Size of ``name`` in bytes."""
        return self.client.size(self.url(name))

    def stat(self, name: str) -> ObjectStat:
        """Size and version token of ``name``, in one request (see :meth:`StorageClient.stat`)."""
        return self.client.stat(self.url(name))

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists."""
        return self.client.exists(self.url(name))

    def list_stats(self, prefix: str = "") -> list[tuple[str, ObjectStat | None]]:
        """:meth:`list`, each name with its size and version where the store's listing tells them (S3),
        else None (see :meth:`StorageClient.list_stats`)."""
        base = self.root.rstrip("/") + "/"
        return [(url[len(base) :], stat) for url, stat in self.client.list_stats(base + prefix)]

    def list(self, prefix: str = "") -> list[str]:
        """Sorted names, relative to the root, of the objects under it whose name starts with ``prefix``."""
        base = self.root.rstrip("/") + "/"
        return [url[len(base) :] for url in self.client.list(base + prefix)]

    def delete(self, name: str) -> None:
        """Delete ``name`` (no error if it does not exist)."""
        self.client.delete(self.url(name))


def from_url(url: str, **options: Any) -> Store:
    """A :class:`Store` rooted at ``url``, with the shared client of its scheme and ``options``.

    Args:
        url: Root URL or local path, e.g. ``"s3://bucket/datasets/c4"``.
        **options: As for :func:`get_client`.
    """
    return Store(url, get_client(url, **options))
