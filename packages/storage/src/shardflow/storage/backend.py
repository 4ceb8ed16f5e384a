"""The interface one object store implements: single-attempt primitives, no retries, no temp files."""

from __future__ import annotations

import abc
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Generic, Protocol, TypeVar

from shardflow.storage.errors import StorageError, UnsupportedURLError

__all__ = [
    "Backend",
    "ObjectStat",
    "ReadPin",
    "Sink",
    "LazyClient",
    "WholeObjectSlice",
    "check_content_range",
    "split_bucket_url",
    "CHUNK_SIZE",
]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes read from a response body at a time."""

T = TypeVar("T")


class Sink(Protocol):
    """Where :meth:`Backend.read_into` writes an object's bytes, in order."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Append ``data``; return how many bytes were taken."""
        ...


@dataclass(frozen=True)
class ObjectStat:
    """What the store says about an object without sending it.

    Attributes:
        size: Bytes.
        version: A token that changes whenever the object is written again, even with the same bytes, or
            ``None`` when the store offers none. Compare tokens of one URL for equality, nothing more.
            S3: ETag and Last-Modified (and the version id on versioned buckets); GCS: the generation;
            Azure: the ETag; OCI: the ETag and Last-Modified; local files: mtime (ns), inode and size.
            Where the store's clock counts seconds (S3's and OCI's Last-Modified), two writes of the same
            bytes within one second may share a token; bytes that differ always change it.
    """

    size: int
    version: str | None


@dataclass
class ReadPin:
    """Ties the reads of one transfer to one version of the object, for a backend that resumes reads.

    The first read records the version its answer came from (:attr:`version`, set before any byte reaches
    the sink); a read that continues after a broken answer passes it back, and the backend asks the
    store to answer only if the object still has that version, raising what :meth:`Backend.translate`
    maps to :class:`~shardflow.storage.ObjectChangedError` when it has not.
    """

    version: str | None = None


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

    #: Whether :meth:`read_into` takes ``pin=`` (a :class:`ReadPin`) and honours it: the client then
    #: continues a read cut short from the bytes already received instead of starting it over.
    resumes: bool = False

    @abc.abstractmethod
    def read_into(self, url: str, sink: Sink, start: int = 0, end: int | None = None) -> int | None:
        """Write the object's bytes ``[start, end)`` into ``sink``.

        A range that starts at or past the end of the object reads nothing (as slicing does); one that
        ends past it stops at the end. ``start == 0 and end is None`` reads the whole object without a
        range header. A store (or a proxy or cache in front of it) may ignore the range and answer with
        the whole object (HTTP 200 instead of 206): the backend must then still write only ``[start, end)``
        (see :class:`WholeObjectSlice`) or raise a :class:`~shardflow.storage.StorageError` saying so.

        Args:
            url: The object's URL.
            sink: Receives the bytes in order.
            start: First byte.
            end: One past the last byte, or ``None`` for the end of the object.

        A backend with :attr:`resumes` set also takes ``pin``, a :class:`ReadPin`: it records in it the
        version of the object it answers from, or, when the pin already holds one, reads only if the object
        still has that version.

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

    def stat(self, url: str) -> ObjectStat:
        """Return the object's size and version token (one request); not-found as for :meth:`size`.

        The default asks :meth:`size` and reports no version; override it where the store has one.
        """
        return ObjectStat(self.size(url), None)

    @abc.abstractmethod
    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        """Yield the URL of every object whose URL starts with ``prefix`` (a plain prefix, not a folder).

        Args:
            prefix: URL prefix, e.g. ``s3://bucket/data/shard.``.
            page_size: Objects asked for per listing request, or ``None`` for the store's default.
        """

    def list_stats(
        self, prefix: str, page_size: int | None = None
    ) -> Iterator[tuple[str, ObjectStat | None]]:
        """:meth:`list`, each URL with its object's stat where the listing tells it (size, and a version
        token that changes whenever the object is written again), else None: ask :meth:`stat`.

        The default tells none; a store whose listing carries sizes and versions overrides it, so that a
        folder of many files is stat'ed in a few requests. Its tokens need not equal :meth:`stat`'s.
        """
        for url in self.list(prefix, page_size):
            yield url, None

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


class WholeObjectSlice:
    """A sink that keeps bytes ``[start, end)`` of a body holding the whole object, for ``target``.

    For a ranged read that the server answered with the whole object (HTTP 200 instead of 206: an
    endpoint or cache that ignores ``Range``). Bytes before ``start`` are dropped; :attr:`done` turns true
    once the range is complete, and the caller stops reading there, so at most ``end`` bytes of the body
    are read (the whole object when ``end`` is ``None``, nothing when ``start`` is past its end).

    Args:
        target: Receives the bytes ``[start, end)``.
        start: First byte wanted.
        end: One past the last byte wanted, or ``None`` for the end of the object.
        total: The whole object's size as announced (its ``Content-Length``), or ``None`` if unknown.
        url: The object's URL, for the warning logged once per bucket.
    """

    def __init__(self, target: Sink, start: int, end: int | None, total: int | None, url: str) -> None:
        self.target = target
        self.start = start
        self.stop = total if end is None else end if total is None else min(end, total)
        self.position = 0
        _warn_range_ignored(url)

    @property
    def expected(self) -> int | None:
        """The length the slice must have, or ``None`` when neither ``end`` nor the size is known."""
        return None if self.stop is None else max(self.stop - self.start, 0)

    @property
    def done(self) -> bool:
        """Whether every wanted byte has been seen: the rest of the body can be dropped."""
        return self.stop is not None and self.position >= self.stop or self.expected == 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Take the next bytes of the body, passing on the part inside the range."""
        view = memoryview(data).cast("B")
        low = max(self.start - self.position, 0)
        high = len(view) if self.stop is None else min(len(view), self.stop - self.position)
        if low < high:
            self.target.write(view[low:high])
        self.position += len(view)
        return len(view)


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def check_content_range(url: str, content_range: str | None, start: int) -> None:
    """Check that a 206 answer to a read from byte ``start`` starts there.

    Args:
        url: The object's URL, for the message.
        content_range: The answer's ``Content-Range`` header (``None`` when absent: nothing to check).
        start: The first byte asked for.

    Raises:
        StorageError: The answer holds another range than the one asked for.
    """
    if content_range is None:
        return
    match = _CONTENT_RANGE.match(content_range)
    if match is None or int(match.group(1)) != start:
        raise StorageError(
            f"a read of {url} from byte {start} was answered with Content-Range {content_range!r}: the "
            "store, or a proxy or cache in front of it, does not honour byte ranges; read through the store "
            "itself",
            url,
        )


def _warn_range_ignored(url: str) -> None:
    """Log once per bucket that ranged reads get whole objects (each costs up to its range's end)."""
    bucket = url.split("/", 3)[2] if "://" in url else ""
    with _warned_lock:
        if bucket in _warned:
            return
        _warned.add(bucket)
    logger.warning(
        "a ranged read of %s was answered with the whole object (HTTP 200, not 206): the store or a proxy or "
        "cache in front of it ignores Range headers. Only the bytes asked for are returned, but each ranged "
        "read now transfers the object up to the range's end",
        url,
    )
