"""Databricks files through databricks-sdk: volumes (``dbfs:/Volumes/...``) and DBFS (``dbfs:/...``)."""

from __future__ import annotations

import base64
import os
import re
import secrets
import time
import traceback
import urllib.parse
from collections.abc import Iterator
from typing import Any, BinaryIO

from shardflow.storage._deps import require
from shardflow.storage._io import TEMP_NAME
from shardflow.storage.backend import (
    CHUNK_SIZE,
    Backend,
    LazyClient,
    ObjectStat,
    Sink,
    WholeObjectSlice,
    check_content_range,
)
from shardflow.storage.errors import (
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    TransientStorageError,
    UnsupportedURLError,
)

__all__ = ["DatabricksBackend"]

_EXAMPLE = "dbfs:/Volumes/catalog/schema/volume/path or dbfs:/path"
_CONFIG_HINT = (
    "check the workspace and the credentials (host= and token=, $DATABRICKS_HOST and $DATABRICKS_TOKEN, "
    "or a profile "
    "of ~/.databrickscfg)"
)
_DBFS_BLOCK = 1 << 20  # the DBFS API reads and writes at most 1 MiB per call


class _SdkWouldRetry(Exception):
    """Raised where databricks-sdk would sleep before retrying; the SDK's error is its ``__context__``."""


def _no_retry_clock() -> Any:
    """A clock for databricks-sdk that refuses to sleep, so the SDK never retries (the client retries)."""
    from databricks.sdk.clock import Clock

    class NoRetries(Clock):
        def time(self) -> float:
            return time.time()

        def sleep(self, seconds: float) -> None:
            raise _SdkWouldRetry(f"databricks-sdk would retry after {seconds:.1f} s")

    return NoRetries()


class _SizedBody:
    """An upload body that tells its length: requests sets Content-Length from it, and databricks-sdk's
    log of a failed request asks ``len()`` of the body."""

    def __init__(self, source: BinaryIO, size: int) -> None:
        self._source = source
        self._size = size

    def __len__(self) -> int:
        return self._size

    def read(self, size: int = -1) -> bytes:
        return self._source.read(size)

    def tell(self) -> int:
        return self._source.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._source.seek(offset, whence)


def _brief(exc: BaseException) -> str:
    """One line about an SDK error: its class and first line, or the HTTP status of an unparsed answer."""
    text = str(exc)
    status = re.search(r"^< (\d{3}[^\n]*)", text, re.MULTILINE)
    if text.startswith("unable to parse response") and status:
        return f"{type(exc).__name__}, HTTP {status.group(1).strip()}"
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:200]}"


def _path(url: str) -> str:
    """The absolute workspace path of ``dbfs:/path`` (``dbfs:///path`` also accepted)."""
    if not url.lower().startswith("dbfs:/"):
        raise UnsupportedURLError(f"{url!r} is not a dbfs:/ URL; expected e.g. {_EXAMPLE}", url)
    return "/" + url[len("dbfs:") :].lstrip("/")


def _is_volume(path: str) -> bool:
    return path == "/Volumes" or path.startswith("/Volumes/")


class DatabricksBackend(Backend):
    """``dbfs:/Volumes/catalog/schema/volume/path`` through the Files API, other ``dbfs:/path`` through DBFS.

    Unity Catalog volumes use the Files API (``/api/2.0/fs/files`` and ``/fs/directories``): ranged reads,
    paginated listings, and uploads in one request, which the volume stores whole. Other paths use the
    DBFS API 2.0 (``/api/2.0/dbfs/...``), which reads by offset and length in pieces of at most 1 MiB;
    an upload of more than 1 MiB streams to a hidden temporary file that is then moved onto the target (the
    old file is deleted first: readers never see a partial file, but may briefly find none).

    The workspace and credentials come from databricks-sdk's own configuration: ``host=``, ``token=`` or
    ``profile=``, else ``$DATABRICKS_HOST`` and ``$DATABRICKS_TOKEN`` (or any other authentication the SDK
    supports), else ``~/.databrickscfg``. The SDK's own retries are off (the client retries).

    Args:
        host: The workspace URL.
        token: A personal access token.
        profile: A profile of ``~/.databrickscfg``.
        read_timeout: Seconds one HTTP request may take.
    """

    scheme = "dbfs"
    env_vars = ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CONFIG_PROFILE")

    def __init__(
        self,
        *,
        host: str | None = None,
        token: str | None = None,
        profile: str | None = None,
        read_timeout: float = 60.0,
    ) -> None:
        require("databricks.sdk", scheme="dbfs", extra="databricks")
        self.host = host
        self._settings = {
            "host": host,
            "token": token,
            "profile": profile,
            "http_timeout_seconds": read_timeout,
        }
        self._client: LazyClient[Any] = LazyClient(self._make_client)
        try:  # the SDK asks the workspace for its settings once: here, not inside a transfer
            self._client.get()
        except Exception as exc:
            known = self.translate(exc, "dbfs:/")
            if known is None:
                raise
            raise known from exc

    def _make_client(self) -> Any:
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config
        from databricks.sdk.service.files import DbfsAPI, FilesAPI

        settings: dict[str, Any] = {
            name: value for name, value in self._settings.items() if value is not None
        }
        # The clock stops the SDK's retries; retry_timeout_seconds bounds those of its settings probe.
        config = Config(clock=_no_retry_clock(), retry_timeout_seconds=1, **settings)
        workspace = WorkspaceClient(config=config)
        return workspace.api_client, FilesAPI(workspace.api_client), DbfsAPI(workspace.api_client)

    # -- reads -----------------------------------------------------------------------------------------

    def read_into(self, url: str, sink: Sink, start: int = 0, end: int | None = None) -> int | None:
        path = _path(url)
        if _is_volume(path):
            return self._read_volume(url, path, sink, start, end)
        return self._read_dbfs(path, sink, start, end)

    def _read_volume(self, url: str, path: str, sink: Sink, start: int, end: int | None) -> int | None:
        from databricks.sdk.errors import DatabricksError

        api, files, _ = self._client.get()
        ranged = bool(start) or end is not None
        headers = {"Accept": "application/octet-stream"}
        if ranged:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            answer = api.do(
                "GET",
                f"/api/2.0/fs/files{urllib.parse.quote(path)}",
                headers=headers,
                raw=True,
                response_headers=["content-length", "content-range"],
            )
        except DatabricksError as exc:  # 416 for a range past the end has no class of its own
            if start and type(exc) is DatabricksError and files.get_metadata(path).content_length <= start:
                return 0
            raise
        body = answer["contents"]
        announced = int(answer["content-length"]) if answer.get("content-length") else None
        try:
            if ranged and not answer.get("content-range"):
                # The Range header was ignored on the way: the body is the whole object.
                whole = WholeObjectSlice(sink, start, end, announced, url)
                while not whole.done and (chunk := body.read(CHUNK_SIZE)):
                    whole.write(chunk)
                return whole.expected
            if ranged:
                check_content_range(url, answer["content-range"], start)
            while chunk := body.read(CHUNK_SIZE):
                sink.write(chunk)
        finally:
            body.close()
        return announced

    def _read_dbfs(self, path: str, sink: Sink, start: int, end: int | None) -> int | None:
        _, _, dbfs = self._client.get()
        offset = start
        while end is None or offset < end:
            want = _DBFS_BLOCK if end is None else min(_DBFS_BLOCK, end - offset)
            piece = dbfs.read(path, offset=offset, length=want)
            data = base64.b64decode(piece.data or "")
            if data:
                sink.write(data)
            offset += len(data)
            if len(data) < want:
                break  # the end of the file
        return offset - start

    # -- writes ----------------------------------------------------------------------------------------

    def write_from(self, url: str, source: BinaryIO, size: int) -> None:
        path = _path(url)
        if path.endswith("/") or path == "/":
            raise UnsupportedURLError(f"{url!r} names no file; expected e.g. {_EXAMPLE}", url)
        _, files, dbfs = self._client.get()
        if _is_volume(path):
            files.upload(path, _SizedBody(source, size), overwrite=True)  # type: ignore[arg-type]
        elif size <= _DBFS_BLOCK:
            dbfs.put(path, contents=base64.b64encode(source.read()).decode(), overwrite=True)
        else:
            folder, _, name = path.rpartition("/")
            tmp = f"{folder}/.{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
            handle = dbfs.create(tmp, overwrite=True).handle
            try:
                while block := source.read(_DBFS_BLOCK):
                    dbfs.add_block(handle, base64.b64encode(block).decode())
                dbfs.close(handle)
                self._delete(dbfs, path)
                dbfs.move(tmp, path)
            except BaseException:
                self._delete(dbfs, tmp)
                raise

    def delete(self, url: str) -> None:
        path = _path(url)
        _, files, dbfs = self._client.get()
        self._delete(files if _is_volume(path) else dbfs, path)

    @staticmethod
    def _delete(service: Any, path: str) -> None:
        from databricks.sdk.errors import NotFound

        try:
            service.delete(path)
        except NotFound:
            pass

    # -- metadata --------------------------------------------------------------------------------------

    def size(self, url: str) -> int:
        return self.stat(url).size

    def stat(self, url: str) -> ObjectStat:
        path = _path(url)
        _, files, dbfs = self._client.get()
        if _is_volume(path):
            found = files.get_metadata(path)
            return ObjectStat(int(found.content_length), f"{found.last_modified}|{found.content_length}")
        info = dbfs.get_status(path)
        if info.is_dir:
            raise ObjectNotFoundError(f"{url} is a folder, not a file: name a file under it", url)
        return ObjectStat(int(info.file_size), f"{info.modification_time}|{info.file_size}")

    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        from databricks.sdk.errors import NotFound

        path = _path(prefix)
        head = prefix[: len(prefix) - len(path.lstrip("/"))]  # "dbfs:/" as written
        top = path if path.endswith("/") else path.rpartition("/")[0] or "/"
        _, files, dbfs = self._client.get()
        folders = [top]
        while folders:
            folder = folders.pop()
            try:
                if _is_volume(folder):
                    entries = [
                        (entry.path, bool(entry.is_directory))
                        for entry in files.list_directory_contents(folder, page_size=page_size)
                    ]
                else:
                    entries = [(entry.path, bool(entry.is_dir)) for entry in dbfs.list(folder)]
            except NotFound:
                continue
            for full, is_folder in entries:
                full = "/" + full.lstrip("/").rstrip("/")
                if is_folder:
                    if full.startswith(path) or path.startswith(full + "/"):
                        folders.append(full)
                elif full.startswith(path) and not TEMP_NAME.match(full.rpartition("/")[2]):
                    yield head + full.lstrip("/")

    def translate(self, exc: BaseException, url: str) -> StorageError | None:
        import requests
        from databricks.sdk import errors

        where = f" (workspace {self.host})" if self.host else ""
        if isinstance(exc, _SdkWouldRetry) and exc.__context__ is not None:
            found = self.translate(exc.__context__, url)
            return found if found is not None else TransientStorageError(str(exc.__context__), url)
        if isinstance(exc, errors.NotFound):
            return ObjectNotFoundError(
                f"{url} does not exist: check the path (volumes: dbfs:/Volumes/catalog/schema/volume/...) "
                "and that "
                f"the file was uploaded{where}",
                url,
            )
        if isinstance(exc, (errors.PermissionDenied, errors.Unauthenticated)):
            return PermissionDeniedError(
                f"access to {url} was refused ({_brief(exc)}): {_CONFIG_HINT}{where}", url
            )
        if isinstance(
            exc,
            (
                errors.TooManyRequests,
                errors.InternalError,
                errors.TemporarilyUnavailable,
                errors.DeadlineExceeded,
            ),
        ) or (type(exc) is errors.DatabricksError and re.search(r"\b5\d\d\b", str(exc))):
            return TransientStorageError(f"the workspace failed the request for {url}: {_brief(exc)}", url)
        if isinstance(exc, errors.DatabricksError):
            return StorageError(f"the workspace rejected the request for {url}: {_brief(exc)}{where}", url)
        if isinstance(exc, TypeError) and any(
            frame.filename.endswith("round_trip_logger.py")
            for frame in traceback.extract_tb(exc.__traceback__)
        ):
            # databricks-sdk fails while describing an error answer that is not JSON (from a proxy or load
            # balancer) to an upload with a streamed body: the request failed, its status is unknown.
            return TransientStorageError(
                f"the workspace answered the upload of {url} with an unreadable error", url
            )
        if isinstance(exc, ValueError) and "default auth" in str(exc):
            return PermissionDeniedError(
                f"no usable Databricks configuration for {url} ({exc}): {_CONFIG_HINT}", url
            )
        if isinstance(exc, requests.RequestException):
            return TransientStorageError(f"transfer of {url} failed: {type(exc).__name__}: {exc}", url)
        return None
