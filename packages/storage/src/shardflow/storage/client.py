"""StorageClient: every store behind one interface, with retries, timeouts and atomic downloads."""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from shardflow.storage._attempt import Attempt
from shardflow.storage._io import CancellableBytes, CancellableFile, CountingSink, remove_quietly, temp_path
from shardflow.storage._retry import RetryPolicy, call_with_retry
from shardflow.storage.backend import Backend
from shardflow.storage.errors import ObjectNotFoundError, TransientStorageError
from shardflow.storage.registry import backend_factory, url_scheme

__all__ = ["StorageClient", "get_client", "DEFAULT_TIMEOUT"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
"""Default ``download_timeout`` in seconds, as in mosaicml-streaming."""

_CLIENT_OPTIONS = (
    "download_retry",
    "download_timeout",
    "upload_retry",
    "upload_timeout",
    "backoff",
    "max_backoff",
    "list_page_size",
)


class StorageClient:
    """Operations on objects named by full URLs, for one scheme and one configuration.

    One client serves many threads: its SDK client and connection pool are shared, built once per
    process. Get clients from :func:`get_client`, which reuses them.

    Every operation retries transient failures (5xx, throttling, resets, timeouts, truncated bodies) with
    exponential backoff and jitter, and fails at once on a missing object (:class:`ObjectNotFoundError`)
    or refused credentials (:class:`PermissionDeniedError`). Each attempt has a wall-clock timeout, so an
    operation ends within ``(retries + 1) * timeout`` plus the backoff delays (at most
    ``retries * max_backoff``), whatever the network does.

    Args:
        backend: The store's primitives.
        download_retry: Re-attempts of a read (download, range, size, exists, list) after the first try.
        download_timeout: Wall-clock seconds one read attempt may take; ``None`` for no limit.
        upload_retry: Re-attempts of a write (upload, delete) after the first try.
        upload_timeout: Wall-clock seconds one write attempt may take; ``None`` for no limit.
        backoff: Base delay in seconds before the first re-attempt; it doubles with each.
        max_backoff: Cap of one delay in seconds.
        list_page_size: Objects asked for per listing request (``None``: the store's default).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        download_retry: int = 2,
        download_timeout: float | None = DEFAULT_TIMEOUT,
        upload_retry: int = 2,
        upload_timeout: float | None = 600.0,
        backoff: float = 0.25,
        max_backoff: float = 8.0,
        list_page_size: int | None = None,
    ) -> None:
        self.backend = backend
        self.read_policy = RetryPolicy(
            download_retry, download_timeout, backoff, max_backoff, "download_retry", "download_timeout"
        )
        self.write_policy = RetryPolicy(
            upload_retry, upload_timeout, backoff, max_backoff, "upload_retry", "upload_timeout"
        )
        self.list_page_size = list_page_size

    @property
    def scheme(self) -> str:
        """The URL scheme this client serves."""
        return self.backend.scheme

    def __repr__(self) -> str:
        return f"StorageClient({type(self.backend).__name__}, scheme={self.scheme!r})"

    def _read(self, work: Callable[[Attempt], T], url: str, action: str) -> T:
        return call_with_retry(
            work, url=url, action=action, policy=self.read_policy, translate=self.backend.translate
        )

    def _write(self, work: Callable[[Attempt], T], url: str, action: str) -> T:
        return call_with_retry(
            work, url=url, action=action, policy=self.write_policy, translate=self.backend.translate
        )

    def download(self, url: str, local: str | os.PathLike[str]) -> Path:
        """Download the object to ``local``, replacing it if it exists.

        The bytes go to a temporary name beside ``local`` that is renamed onto it once complete and of the
        announced length, so ``local`` is never seen partial, and concurrent downloads of one object to one
        path (threads or processes) leave exactly one complete file.

        Args:
            url: The object's URL.
            local: Destination path; missing parent folders are created.

        Returns:
            ``local`` as a Path.

        Raises:
            ObjectNotFoundError: No such object (one request, never retried).
            PermissionDeniedError: The credentials were refused or missing.
            TransientStorageError: The store kept failing after ``download_retry`` re-attempts
                (:class:`StorageTimeoutError` when the last attempt ran past ``download_timeout``).
        """
        final = Path(local)
        final.parent.mkdir(parents=True, exist_ok=True)

        def work(attempt: Attempt) -> Path:
            tmp = temp_path(final)
            attempt.on_abandon(lambda: remove_quietly(tmp))
            try:
                with open(tmp, "wb") as out:
                    sink = CountingSink(out, attempt)
                    announced = self.backend.read_into(url, sink, 0, None)
                _check_length(url, sink.count, announced)
                with attempt.commit():
                    os.replace(tmp, final)
            except BaseException:
                remove_quietly(tmp)
                raise
            return final

        done = self._read(work, url, "download")
        logger.debug("downloaded %s to %s", url, done)
        return done

    def get_bytes(self, url: str, start: int = 0, end: int | None = None) -> bytes:
        """Read the object's bytes ``[start, end)``, as ``data[start:end]`` would.

        Args:
            url: The object's URL.
            start: First byte (0 or more).
            end: One past the last byte, or ``None`` for the end of the object.

        Returns:
            The bytes; fewer than asked when the object ends first, none when it ends before ``start``.
        """
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"byte range of {url} must have 0 <= start <= end, got start={start}, end={end}")
        if end == start:
            return b""

        def work(attempt: Attempt) -> bytes:
            buffer = io.BytesIO()
            sink = CountingSink(buffer, attempt)
            announced = self.backend.read_into(url, sink, start, end)
            _check_length(url, sink.count, announced)
            return buffer.getvalue()

        return self._read(work, url, "read")

    def upload(self, local: str | os.PathLike[str], url: str) -> None:
        """Upload the local file to ``url``, replacing any object there.

        Raises:
            FileNotFoundError: ``local`` does not exist (a plain local error, not retried).
            PermissionDeniedError: The credentials were refused or missing.
            TransientStorageError: The store kept failing after ``upload_retry`` re-attempts.
        """
        size = os.path.getsize(local)

        def work(attempt: Attempt) -> None:
            with CancellableFile(local, attempt) as source:
                self.backend.write_from(url, source, size)

        self._write(work, url, "upload")

    def put_bytes(self, url: str, data: bytes) -> None:
        """Store ``data`` as the object ``url``, replacing any object there."""

        def work(attempt: Attempt) -> None:
            with CancellableBytes(data, attempt) as source:
                self.backend.write_from(url, source, len(data))

        self._write(work, url, "upload")

    def size(self, url: str) -> int:
        """The object's size in bytes.

        Raises:
            ObjectNotFoundError: No such object.
        """
        return self._read(lambda attempt: self.backend.size(url), url, "size")

    def exists(self, url: str) -> bool:
        """Whether the object exists (a missing bucket counts as a missing object)."""
        try:
            self.size(url)
        except ObjectNotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        """The sorted URLs of every object whose URL starts with ``prefix``.

        ``prefix`` is a plain string prefix, as in S3: ``s3://b/data/shard.`` matches
        ``s3://b/data/shard.00000.mds``. End it with ``/`` to list one folder-like level and everything
        below it.
        """

        def work(attempt: Attempt) -> list[str]:
            found = []
            for url in self.backend.list(prefix, self.list_page_size):
                attempt.check()
                found.append(url)
            return sorted(found)

        return self._read(work, prefix, "list")

    def delete(self, url: str) -> None:
        """Delete the object; deleting one that does not exist is not an error."""
        self._write(lambda attempt: self.backend.delete(url), url, "delete")


def _check_length(url: str, received: int, announced: int | None) -> None:
    """Turn a body shorter (or longer) than its announced length into a retried error."""
    if announced is not None and received != announced:
        raise TransientStorageError(
            f"transfer of {url} was cut short: {received} bytes received, {announced} announced", url
        )


def _freeze(value: Any) -> Any:
    """A hashable stand-in for option values made of dicts, lists and sets (others stay as they are)."""
    if isinstance(value, Mapping):
        return tuple(sorted((key, _freeze(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(item) for item in value)
    return value


_clients: dict[Any, StorageClient] = {}
_clients_lock = threading.Lock()


def get_client(url: str, **options: Any) -> StorageClient:
    """The client for ``url``'s scheme and these options, shared by every caller that asks the same.

    Args:
        url: Any URL (or local path) of the scheme wanted; only its scheme matters. Plain paths and
            ``file://`` URLs are local; ``s3://``, ``gs://``, ``azure://``, ``oci://`` are built in;
            others come from :func:`register_backend` or entry points.
        **options: :class:`StorageClient` arguments (``download_retry``, ``download_timeout``,
            ``upload_retry``, ``upload_timeout``, ``backoff``, ``max_backoff``, ``list_page_size``); the rest
            go to the backend (e.g. ``endpoint_url`` for S3).

    Returns:
        A client, reused while the options and the environment variables the backend reads stay the same.

    Raises:
        UnsupportedURLError: No backend serves the scheme.
        MissingDependencyError: The scheme's SDK is not installed; the message names the extra.
    """
    scheme = url_scheme(url)
    factory = backend_factory(scheme)
    env = tuple(os.environ.get(name) for name in getattr(factory, "env_vars", ()))
    try:
        key: Any = (scheme, factory, env, _freeze(options))
        hash(key)
    except TypeError:
        key = None  # unhashable options: a client of its own
    if key is not None:
        with _clients_lock:
            client = _clients.get(key)
        if client is not None:
            return client
    client_options = {name: options.pop(name) for name in _CLIENT_OPTIONS if name in options}
    client = StorageClient(factory(**options), **client_options)
    if key is not None:
        with _clients_lock:
            client = _clients.setdefault(key, client)
    return client
