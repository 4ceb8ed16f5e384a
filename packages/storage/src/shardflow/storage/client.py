"""StorageClient: every store behind one interface, with retries, timeouts and atomic downloads."""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from shardflow.storage._attempt import Attempt
from shardflow.storage._io import CancellableBytes, CancellableFile, CountingSink, remove_quietly, temp_path
from shardflow.storage._retry import RetryPolicy, call_with_retry, classify, persist
from shardflow.storage.backend import Backend, ObjectStat, ReadPin
from shardflow.storage.errors import (
    DiskFullError,
    ObjectChangedError,
    ObjectNotFoundError,
    TransientStorageError,
)
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
    operation ends within ``(retries + 1) * timeout`` plus the backoff delays between attempts (at most
    ``retries * max_backoff``), whatever the network does. Inside one read attempt, a failed request is
    tried again (after a backoff delay) for as long as the attempt's timeout leaves time, and a body cut
    short is continued from the bytes received where the backend can pin the object's version
    (:attr:`Backend.resumes`); a write attempt is one try.

    Args:
        backend: The store's primitives.
        download_retry: Re-attempts of a whole read (download, range, size, stat, exists, list) after the
            first attempt.
        download_timeout: Wall-clock seconds one read attempt may take, retries inside it included;
            ``None`` for no limit (and then no retries inside an attempt).
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
            download_retry, download_timeout, backoff, max_backoff, "download_retry", "download_timeout", True
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

    def _request(self, request: Callable[[], T], url: str, action: str) -> T:
        """One read request, retried inside each attempt while it lasts, and over attempts."""
        return self._read(lambda attempt: self._persist(request, attempt, url, action), url, action)

    def _persist(self, step: Callable[[], T], attempt: Attempt, url: str, action: str) -> T:
        return persist(
            step, attempt, url=url, action=action, policy=self.read_policy, translate=self.backend.translate
        )

    def _transfer(
        self, url: str, out: BinaryIO, attempt: Attempt, start: int, end: int | None, action: str
    ) -> int:
        """Write the object's bytes ``[start, end)`` to the empty ``out``; return how many were written.

        Inside the attempt, a failed request is tried again while time allows. A body cut short is continued
        from the bytes already written, pinned to the version the first answer came from, when the backend
        resumes reads; otherwise (or when the object changed meanwhile) the transfer starts over.
        """
        sink = CountingSink(out, attempt)
        pin = ReadPin() if self.backend.resumes else None

        def start_over() -> None:
            out.seek(0)
            out.truncate()
            sink.count = 0
            if pin is not None:
                pin.version = None

        def step() -> int:
            if sink.count and (pin is None or pin.version is None):
                start_over()
            offset = start + sink.count
            if end is not None and offset >= end:
                return sink.count  # every byte arrived before the failure
            before = sink.count
            try:
                if pin is None:
                    announced = self.backend.read_into(url, sink, offset, end)
                else:
                    announced = self.backend.read_into(url, sink, offset, end, pin=pin)  # type: ignore[call-arg]
            except Exception as exc:
                if isinstance(classify(exc, url, self.backend.translate), ObjectChangedError):
                    start_over()
                raise
            received = sink.count - before
            if announced is not None and received > announced:
                start_over()  # more than announced: nothing received can be trusted
            _check_length(url, received, announced)
            if before:
                logger.debug("continued %s from byte %d", url, offset)
            return sink.count

        return self._persist(step, attempt, url, action)

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
            DiskFullError: The local disk (or quota) ran out of room; the message names the folder, the
                file and the bytes it needs. Not retried; no temporary file is left.
        """
        final = Path(local)
        final.parent.mkdir(parents=True, exist_ok=True)

        def work(attempt: Attempt) -> Path:
            tmp = temp_path(final)
            attempt.on_abandon(lambda: remove_quietly(tmp))
            try:
                with open(tmp, "wb") as out:
                    self._transfer(url, out, attempt, 0, None, "download")
                with attempt.commit():
                    os.replace(tmp, final)
            except OSError as exc:
                remove_quietly(tmp)
                if exc.errno in _DISK_FULL:
                    raise _NoRoom(tmp, exc) from exc
                raise
            except BaseException:
                remove_quietly(tmp)
                raise
            return final

        try:
            done = self._read(work, url, "download")
        except _NoRoom as no_room:  # asking the size (for the message) outside the attempt and its timeout
            raise self._disk_full(url, final, no_room.tmp, no_room.error) from no_room.error
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
            self._transfer(url, buffer, attempt, start, end, "read")
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
        return self._request(lambda: self.backend.size(url), url, "size")

    def stat(self, url: str) -> ObjectStat:
        """The object's size and version token, in one request (HEAD or the store's equivalent).

        The version changes whenever the object is written again, even with the same bytes (see
        :class:`ObjectStat` for what each store offers and the one-second caveat of S3 and OCI); it is
        ``None`` where the store offers nothing (third-party backends that do not implement
        :meth:`Backend.stat`). Compare the versions of one URL for equality, nothing more.

        Raises:
            ObjectNotFoundError: No such object.
        """
        return self._request(lambda: self.backend.stat(url), url, "stat")

    def exists(self, url: str) -> bool:
        """Whether the object exists (a missing bucket counts as a missing object)."""
        try:
            self.size(url)
        except ObjectNotFoundError:
            return False
        return True

    def list_stats(self, prefix: str) -> list[tuple[str, ObjectStat | None]]:
        """:meth:`list`, each URL with its object's size and version where the listing tells them (see
        :meth:`Backend.list_stats`; S3 does), else None: :meth:`stat` it. Sorted by URL; retried."""

        def request(attempt: Attempt) -> list[tuple[str, ObjectStat | None]]:
            found = []
            for item in self.backend.list_stats(prefix, self.list_page_size):
                attempt.check()
                found.append(item)
            found.sort(key=lambda pair: pair[0])
            return found

        return self._read(
            lambda attempt: self._persist(lambda: request(attempt), attempt, prefix, "list"), prefix, "list"
        )

    def list(self, prefix: str) -> list[str]:
        """The sorted URLs of every object whose URL starts with ``prefix``.

        ``prefix`` is a plain string prefix, as in S3: ``s3://b/data/shard.`` matches
        ``s3://b/data/shard.00000.mds``. End it with ``/`` to list one folder-like level and everything
        below it.
        """
        return [url for url, _ in self.list_stats(prefix)]

    def delete(self, url: str) -> None:
        """Delete the object; deleting one that does not exist is not an error."""
        self._write(lambda attempt: self.backend.delete(url), url, "delete")

    def _disk_full(self, url: str, final: Path, tmp: Path, exc: OSError) -> DiskFullError:
        """The error of a download that ran out of local room: where, what, and how much it needs."""
        try:
            needed: int | None = self.backend.size(url)
        except Exception:  # only for the message: the store may be failing too
            needed = None
        folder = final.parent
        try:
            free = f"{shutil.disk_usage(folder).free:,} bytes are free there"
        except OSError:
            free = "its free space is unknown"
        size = f"{needed:,} bytes" if needed is not None else "the object's size (the store did not say)"
        if exc.errno == errno.ENOSPC:
            what, remedy = "no space left on the device", f"Free space in {folder}"
        else:
            what, remedy = (
                "the disk quota is exhausted",
                f"Free space under your quota in {folder} or raise it",
            )
        return DiskFullError(
            f"{what} in {folder} while downloading {url} to {final} (temporary file {tmp.name}, removed): "
            f"the file needs {size} and {free}. {remedy}, or download to a folder on a bigger disk, then "
            "try again",
            url,
            path=os.fspath(final),
            needed=needed,
            code=exc.errno,
        )


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class _NoRoom(Exception):
    """Carries a download's ``ENOSPC``/``EDQUOT`` out of its attempt (never retried) to be explained."""

    def __init__(self, tmp: Path, error: OSError) -> None:
        super().__init__(str(error))
        self.tmp = tmp
        self.error = error


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
