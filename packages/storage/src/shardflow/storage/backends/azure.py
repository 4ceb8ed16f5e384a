"""Azure Blob Storage through azure-storage-blob, with one URL convention for reads and writes."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from shardflow.storage._deps import require
from shardflow.storage.backend import Backend, LazyClient, ObjectStat, ReadPin, Sink, split_bucket_url
from shardflow.storage.errors import (
    ObjectChangedError,
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    TransientStorageError,
    UnsupportedURLError,
)

__all__ = ["AzureBackend"]

logger = logging.getLogger(__name__)

_ACCOUNT_HINT = (
    "set AZURE_ACCOUNT_NAME (with AZURE_ACCOUNT_ACCESS_KEY, or an azure-identity login) or "
    "AZURE_STORAGE_CONNECTION_STRING, or pass account_name=, account_url= or connection_string="
)


class AzureBackend(Backend):
    """``azure://container/path/to/blob`` for downloads and uploads alike.

    The storage account is not part of the URL: it comes from ``connection_string``
    (default ``$AZURE_STORAGE_CONNECTION_STRING``), else ``account_url``, else ``account_name``
    (default ``$AZURE_ACCOUNT_NAME``, as in mosaicml-streaming) at ``https://<account>.blob.core.windows.net``.
    Credentials: ``credential``, else the account key ``$AZURE_ACCOUNT_ACCESS_KEY``, else azure-identity's
    ``DefaultAzureCredential`` when that package is installed, else anonymous (public containers).

    SDK retries are off (the client retries); one SDK client per process is shared by all threads. A read
    continued after a broken answer asks for the first answer's ETag (``If-Match``).

    Args:
        account_name: Storage account name.
        account_url: Blob endpoint, e.g. ``https://myaccount.blob.core.windows.net``.
        connection_string: A full connection string (it names the endpoint and the key).
        credential: Any credential azure-storage-blob accepts.
        max_pool_connections: Connections kept open for reuse across threads.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds one socket read may wait.
    """

    scheme = "azure"
    resumes = True
    env_vars = ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_ACCOUNT_NAME", "AZURE_ACCOUNT_ACCESS_KEY")

    def __init__(
        self,
        *,
        account_name: str | None = None,
        account_url: str | None = None,
        connection_string: str | None = None,
        credential: Any = None,
        max_pool_connections: int = 64,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        require("azure.storage.blob", scheme="azure", extra="azure")
        self._connection_string = connection_string or os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        self._account_name = account_name or os.environ.get("AZURE_ACCOUNT_NAME")
        self._account_url = account_url or (
            f"https://{self._account_name}.blob.core.windows.net" if self._account_name else None
        )
        if not self._connection_string and not self._account_url:
            raise StorageError(f"azure:// URLs need a storage account: {_ACCOUNT_HINT}")
        self._credential = credential
        self._pool = max_pool_connections
        self._timeouts = {"connection_timeout": connect_timeout, "read_timeout": read_timeout}
        self._client: LazyClient[Any] = LazyClient(self._make_client)

    @property
    def endpoint(self) -> str:
        """The account endpoint, for messages."""
        if self._account_url:
            return self._account_url
        return "the endpoint of AZURE_STORAGE_CONNECTION_STRING"

    def _make_client(self) -> Any:
        import requests
        import requests.adapters
        from azure.core.pipeline.transport import RequestsTransport
        from azure.storage.blob import BlobServiceClient

        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=self._pool, pool_maxsize=self._pool)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        settings = {
            "retry_total": 0,
            "transport": RequestsTransport(session=session, session_owner=False),
            **self._timeouts,
        }
        if self._connection_string:
            return BlobServiceClient.from_connection_string(
                self._connection_string, credential=self._credential, **settings
            )
        assert self._account_url is not None  # the constructor refuses a backend with neither
        return BlobServiceClient(self._account_url, credential=self._default_credential(), **settings)

    def _default_credential(self) -> Any:
        if self._credential is not None:
            return self._credential
        key = os.environ.get("AZURE_ACCOUNT_ACCESS_KEY")
        if key and self._account_name:
            return {"account_name": self._account_name, "account_key": key}
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError:
            logger.info(
                "no Azure credentials configured and azure-identity is not installed: "
                "sending anonymous requests to %s",
                self._account_url,
            )
            return None
        return DefaultAzureCredential()

    @staticmethod
    def _split(url: str) -> tuple[str, str]:
        container, blob = split_bucket_url(url, "azure", example="azure://container/path/to/blob")
        if "." in container:
            raise UnsupportedURLError(
                f"{url!r}: shardflow names Azure blobs azure://<container>/<blob> for reads and writes "
                f"alike; "
                f"the storage account is not part of the URL ({_ACCOUNT_HINT})",
                url,
            )
        return container, blob

    def _blob(self, url: str) -> Any:
        container, blob = self._split(url)
        if not blob or blob.endswith("/"):
            raise UnsupportedURLError(f"{url!r} names no blob; expected azure://container/path/to/blob", url)
        return self._client.get().get_blob_client(container, blob)

    def read_into(
        self, url: str, sink: Sink, start: int = 0, end: int | None = None, pin: ReadPin | None = None
    ) -> int | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        ranged = bool(start) or end is not None
        blob = self._blob(url)
        pinned: dict[str, Any] = {}
        if pin is not None and pin.version is not None:
            pinned = {"etag": pin.version, "match_condition": MatchConditions.IfNotModified}
        try:
            download = blob.download_blob(
                offset=start if ranged else None,
                length=None if end is None else end - start,
                max_concurrency=1,
                **pinned,
            )
        except HttpResponseError as exc:
            if ranged and exc.status_code == 416:
                return 0
            raise
        if pin is not None and pin.version is None:
            pin.version = download.properties.etag
        announced = int(download.size)
        download.readinto(sink)
        return announced

    def write_from(self, url: str, source: BinaryIO, size: int) -> None:
        self._blob(url).upload_blob(source, length=size, overwrite=True, max_concurrency=1)

    def size(self, url: str) -> int:
        return self.stat(url).size

    def stat(self, url: str) -> ObjectStat:
        properties = self._blob(url).get_blob_properties()
        return ObjectStat(int(properties.size), properties.etag)

    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        container, blob_prefix = self._split(prefix)
        client = self._client.get().get_container_client(container)
        for item in client.list_blobs(name_starts_with=blob_prefix or None, results_per_page=page_size):
            yield f"azure://{container}/{item.name}"

    def delete(self, url: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._blob(url).delete_blob()
        except ResourceNotFoundError:
            pass

    def translate(self, exc: BaseException, url: str) -> StorageError | None:
        from azure.core import exceptions as ax

        if isinstance(exc, ValueError) and "Content-Range" in str(exc):
            # azure-storage-blob reads every blob with ranged GETs (the first one too) and refuses an answer
            # without Content-Range: the whole blob, sent by a store or cache that ignores the range.
            return StorageError(
                f"reading {url} failed: the answer had no Content-Range ({exc}). The store, or a proxy or "
                f"cache in front of it, ignores the x-ms-range header, and azure-storage-blob reads blobs "
                f"only by ranges: reach the account ({self.endpoint}) directly or through a proxy that "
                f"passes ranges",
                url,
            )
        if isinstance(exc, (ax.ServiceRequestError, ax.ServiceResponseError, ax.IncompleteReadError)):
            return TransientStorageError(f"transfer of {url} failed: {type(exc).__name__}: {exc}", url)
        if isinstance(exc, ax.ResourceModifiedError) or getattr(exc, "status_code", None) == 412:
            return ObjectChangedError(
                f"{url} was rewritten while it was being read (its ETag changed): starting over", url
            )
        if isinstance(exc, ax.ResourceNotFoundError) or getattr(exc, "status_code", None) == 404:
            code = getattr(exc, "error_code", None) or "404"
            return ObjectNotFoundError(
                f"{url} does not exist ({code}): check the container and blob name, that the blob was "
                f"uploaded, "
                f"and the storage account ({self.endpoint})",
                url,
            )
        status = getattr(exc, "status_code", None)
        if isinstance(exc, ax.ClientAuthenticationError) or status in (401, 403):
            return PermissionDeniedError(
                f"access to {url} was refused ({getattr(exc, 'error_code', None) or status}): check the "
                f"credentials for {self.endpoint}: {_ACCOUNT_HINT}",
                url,
            )
        if isinstance(exc, ax.HttpResponseError):
            if status is None or status >= 500 or status in (408, 429):
                return TransientStorageError(f"the store answered {status} for {url}: {exc.reason}", url)
            return StorageError(
                f"the store rejected the request for {url} ({status} {getattr(exc, 'error_code', None)}: "
                f"{exc.reason}); check the URL and the account ({self.endpoint})",
                url,
            )
        return None
