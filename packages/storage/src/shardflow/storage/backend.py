"""The interface one object store implements: single-attempt primitives, no retries, no temp files."""

from __future__ import annotations

import abc
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Generic, Protocol, TypeVar

from shardflow.storage.errors import StorageError, UnsupportedURLError

__all__ = ["Backend", "Sink", "LazyClient", "split_bucket_url", "CHUNK_SIZE"]

CHUNK_SIZE = 1 << 20
"""Bytes read from a response body at a time."""

T = TypeVar("T")


class Sink(Protocol):
    """Where :meth:`Backend.read_into` writes an object's bytes, in order."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Append ``data``; return how many bytes were taken."""
        ...


class Backend(abc.ABC):
    """One object store's primitive operations on full URLs.

    :class:`~shardflow.storage.StorageClient` adds what every store shares: retries with backoff, the
    wall-clock timeout, temporary names and renames, length checks. A backend does one attempt of one
    operation and raises what its SDK raises; :meth:`translate` then says what that failure means.
    Third-party schemes subclass this and register a factory
    (see :func:`~shardflow.storage.register_backend`).

    Backends are shared by many threads: the SDK client they hold must be thread-safe (or per thread).
    """

    #: URL scheme served, e.g. ``"s3"``.
    scheme: str = ""

    @abc.abstractmethod
    def read_into(self, url: str, sink: Sink, start: int = 0, end: int | None = None) -> int | None:
        """Write the object's bytes ``[start, end)`` into ``sink``.

        A range that starts at or past the end of the object reads nothing (as slicing does); one that
        ends past it stops at the end. ``start == 0 and end is None`` reads the whole object without a
        range header.

        Args:
            url: The object's URL.
            sink: Receives the bytes in order.
            start: First byte.
            end: One past the last byte, or ``None`` for the end of the object.

        Returns:
            How many bytes the store announced for this response (its ``Content-Length``), or ``None``
            when the SDK does not say. The client compares it with what reached the sink.
        """

    @abc.abstractmethod
    def write_from(self, url: str, source: BinaryIO, size: int) -> None:
        """Store ``size`` bytes read from ``source`` (positioned at 0) as the object ``url``, replacing it."""

    @abc.abstractmethod
    def size(self, url: str) -> int:
        """Return the object's size in bytes; raise (what :meth:`translate` maps to) not-found if absent."""

    @abc.abstractmethod
    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        """Yield the URL of every object whose URL starts with ``prefix`` (a plain prefix, not a folder).

        Args:
            prefix: URL prefix, e.g. ``s3://bucket/data/shard.``.
            page_size: Objects asked for per listing request, or ``None`` for the store's default.
        """

    @abc.abstractmethod
    def delete(self, url: str) -> None:
        """Delete the object; an object that does not exist is not an error."""

    @abc.abstractmethod
    def translate(self, exc: BaseException, url: str) -> StorageError | None:
        """Say what an SDK exception means, or ``None`` when it is not this SDK's.

        Return :class:`~shardflow.storage.ObjectNotFoundError`,
        :class:`~shardflow.storage.PermissionDeniedError`, :class:`~shardflow.storage.TransientStorageError`
        (retried) or another :class:`~shardflow.storage.StorageError` (not retried), with a message that
        names ``url`` and what to check.
        """

    def join(self, prefix: str, name: str) -> str:
        """The URL of ``name`` under the folder-like ``prefix``."""
        return prefix if not name else f"{prefix.rstrip('/')}/{name}"


class LazyClient(Generic[T]):
    """An SDK client built on first use, once per process, and dropped when pickled.

    A client inherited through ``fork`` shares its parent's pooled sockets; one built again in the child
    does not, so the owning process id is checked on every use.
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._client: T | None = None
        self._pid = -1

    def get(self) -> T:
        """The client of this process, built if needed."""
        client, pid = self._client, self._pid
        if client is not None and pid == os.getpid():
            return client
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = self._factory()
                self._pid = os.getpid()
            return self._client

    def __getstate__(self) -> dict[str, Any]:
        return {"_factory": self._factory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_factory"])  # type: ignore[misc]


def split_bucket_url(url: str, scheme: str, *, example: str) -> tuple[str, str]:
    """Split ``scheme://bucket/key`` into ``(bucket, key)``; the key may be empty (a prefix).

    Args:
        url: The URL.
        scheme: The scheme it must have.
        example: A well-formed URL of that scheme, quoted in the error.

    Raises:
        UnsupportedURLError: When the scheme differs or there is no bucket.
    """
    head = f"{scheme}://"
    if not url.startswith(head):
        raise UnsupportedURLError(f"{url!r} is not a {head} URL; expected e.g. {example}", url)
    bucket, _, key = url[len(head) :].partition("/")
    if not bucket:
        raise UnsupportedURLError(f"{url!r} names no bucket; expected e.g. {example}", url)
    return bucket, key
