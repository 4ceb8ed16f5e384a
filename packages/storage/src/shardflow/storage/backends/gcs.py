"""Google Cloud Storage through google-cloud-storage (or through its S3 interface with HMAC keys)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from shardflow.storage._deps import require
from shardflow.storage.backend import (
    Backend,
    LazyClient,
    ObjectStat,
    Sink,
    WholeObjectSlice,
    check_content_range,
    split_bucket_url,
)
from shardflow.storage.errors import (
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    TransientStorageError,
    UnsupportedURLError,
)

__all__ = ["GCSBackend", "make_gcs_backend"]

_CREDENTIALS_HINT = (
    "set up Application Default Credentials (gcloud auth application-default login, or "
    "GOOGLE_APPLICATION_CREDENTIALS=<service-account.json>), or set GCS_KEY and GCS_SECRET to HMAC keys"
)


def make_gcs_backend(**options: Any) -> Backend:
    """The backend for ``gs://`` URLs.

    With ``$GCS_KEY`` and ``$GCS_SECRET`` set (HMAC keys, as in mosaicml-streaming), GCS is reached
    through its S3-compatible interface with boto3 (extra ``s3``); otherwise through
    google-cloud-storage (extra ``gcs``). ``options`` go to the chosen backend.
    """
    if "GCS_KEY" in os.environ and "GCS_SECRET" in os.environ:
        from shardflow.storage.backends.s3 import S3Backend

        settings = {
            "endpoint_url": "https://storage.googleapis.com",
            "region_name": "auto",
            "aws_access_key_id": os.environ["GCS_KEY"],
            "aws_secret_access_key": os.environ["GCS_SECRET"],
            **options,
        }
        return S3Backend(scheme="gs", **settings)
    return GCSBackend(**options)


make_gcs_backend.env_vars = (  # type: ignore[attr-defined]
    "GCS_KEY",
    "GCS_SECRET",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
)


class GCSBackend(Backend):
    """``gs://bucket/key`` through one google-cloud-storage client per process, shared by all threads.

    SDK retries are off (the client retries). Downloads are raw (no decompressive transcoding: the bytes
    stored are the bytes received) and checked against the CRC32C or MD5 the server sends. A read broken
    off is started over, not continued (:attr:`Backend.resumes` is off): the SDK does not show the
    answer's generation before it writes the body. Honours
    ``$STORAGE_EMULATOR_HOST`` as google-cloud-storage does.

    Args:
        project: Billing project; default the credentials'.
        credentials: A ``google.auth`` credentials object; default Application Default Credentials
            (anonymous against an emulator or with ``anonymous=True``).
        anonymous: Send unauthenticated requests (public buckets).
        endpoint_url: API endpoint, e.g. an emulator's ``http://127.0.0.1:PORT``.
        max_pool_connections: Connections kept open for reuse across threads.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds one socket read may wait.
    """

    scheme = "gs"

    def __init__(
        self,
        *,
        project: str | None = None,
        credentials: Any = None,
        anonymous: bool = False,
        endpoint_url: str | None = None,
        max_pool_connections: int = 64,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        require("google.cloud.storage", scheme="gs", extra="gcs")
        self._project = project
        self._credentials = credentials
        self._anonymous = anonymous
        self.endpoint_url = endpoint_url
        self._pool = max_pool_connections
        self._timeout = (connect_timeout, read_timeout)
        self._client: LazyClient[Any] = LazyClient(self._make_client)

    def _make_client(self) -> Any:
        import google.auth
        import requests.adapters
        from google.auth.credentials import AnonymousCredentials
        from google.auth.transport.requests import AuthorizedSession
        from google.cloud import storage

        credentials, project = self._credentials, self._project
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if credentials is None:
            if self._anonymous or emulator:
                credentials = AnonymousCredentials()
            else:
                credentials, found = google.auth.default(scopes=list(storage.Client.SCOPE))
                project = project or found
        session = AuthorizedSession(credentials)
        adapter = requests.adapters.HTTPAdapter(pool_connections=self._pool, pool_maxsize=self._pool)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.hooks["response"].append(_check_range_answer)
        options = {"api_endpoint": self.endpoint_url} if self.endpoint_url else None
        anonymous = isinstance(credentials, AnonymousCredentials)
        client = storage.Client(
            project=project or ("test" if anonymous else None),
            credentials=credentials,
            _http=session,
            client_options=options,
        )
        # Recent google-cloud-storage fetches each bucket's metadata in the background to label tracing
        # spans: one more request per bucket, which needs storage.buckets.get. Nothing here traces.
        if getattr(client, "_bucket_metadata_cache", None) is not None:
            client._bucket_metadata_cache = None
        return client

    def _blob(self, url: str) -> Any:
        bucket, key = split_bucket_url(url, "gs", example="gs://bucket/path/to/object")
        if not key or key.endswith("/"):
            raise UnsupportedURLError(f"{url!r} names no object; expected gs://bucket/key", url)
        return self._client.get().bucket(bucket).blob(key)

    def read_into(self, url: str, sink: Sink, start: int = 0, end: int | None = None) -> int | None:
        from google.api_core.exceptions import RequestRangeNotSatisfiable

        ranged = bool(start) or end is not None
        try:
            self._blob(url).download_to_file(
                sink,
                start=start if ranged else None,
                end=None if end is None else end - 1,
                raw_download=True,
                retry=None,
                timeout=self._timeout,
            )
        except RequestRangeNotSatisfiable:
            if ranged:
                return 0
            raise
        except _UnrangedAnswer as answer:
            if answer.status != 200:
                check_content_range(url, answer.content_range, start)
                raise StorageError(f"a ranged read of {url} was answered with {answer.status}", url) from None
            return self._read_slice_of_whole(url, sink, start, end, answer.length)
        return None

    def _read_slice_of_whole(
        self, url: str, sink: Sink, start: int, end: int | None, total: int | None
    ) -> int | None:
        """Read ``[start, end)`` out of the whole object, for a store that ignores ``Range`` headers."""
        whole = _StoppingSlice(sink, start, end, total, url)
        if whole.done:
            return 0
        try:
            self._blob(url).download_to_file(whole, raw_download=True, retry=None, timeout=self._timeout)
        except _RangeComplete:
            pass
        return whole.expected

    def write_from(self, url: str, source: BinaryIO, size: int) -> None:
        self._blob(url).upload_from_file(source, size=size, rewind=False, retry=None, timeout=self._timeout)

    def size(self, url: str) -> int:
        return self.stat(url).size

    def stat(self, url: str) -> ObjectStat:
        blob = self._blob(url)
        blob.reload(retry=None, timeout=self._timeout)
        return ObjectStat(int(blob.size), None if blob.generation is None else str(blob.generation))

    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        bucket, key = split_bucket_url(prefix, "gs", example="gs://bucket/prefix")
        blobs = self._client.get().list_blobs(
            bucket, prefix=key or None, page_size=page_size, retry=None, timeout=self._timeout
        )
        for blob in blobs:
            yield f"gs://{bucket}/{blob.name}"

    def delete(self, url: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            self._blob(url).delete(retry=None, timeout=self._timeout)
        except NotFound:
            pass

    def translate(self, exc: BaseException, url: str) -> StorageError | None:
        import requests.exceptions
        import urllib3.exceptions
        from google.api_core import exceptions as gx
        from google.auth import exceptions as auth_errors
        from google.cloud.storage import exceptions as sx

        where = f" (endpoint {self.endpoint_url})" if self.endpoint_url else ""
        status = None
        if isinstance(exc, gx.GoogleAPICallError):
            status = exc.code
        elif isinstance(exc, sx.InvalidResponse):
            status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:
            return ObjectNotFoundError(
                f"{url} does not exist (404: {exc}): check the bucket and object name, and that the object "
                f"was uploaded{where}",
                url,
            )
        if status in (401, 403):
            return PermissionDeniedError(
                f"access to {url} was refused ({status}: {exc}): check that the credentials may use this "
                f"bucket, or {_CREDENTIALS_HINT}",
                url,
            )
        if status is not None:
            if status >= 500 or status in (408, 429):
                return TransientStorageError(f"the store answered {status} for {url}", url)
            return StorageError(f"the store rejected the request for {url} ({status}: {exc}){where}", url)
        if isinstance(exc, auth_errors.DefaultCredentialsError):
            return PermissionDeniedError(f"no Google credentials for {url}: {_CREDENTIALS_HINT}", url)
        if isinstance(exc, auth_errors.RefreshError):
            return PermissionDeniedError(
                f"the Google credentials for {url} were refused ({exc}): {_CREDENTIALS_HINT}", url
            )
        if isinstance(
            exc,
            (
                sx.DataCorruption,
                auth_errors.TransportError,
                requests.exceptions.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.Timeout,
                requests.exceptions.ContentDecodingError,
                urllib3.exceptions.HTTPError,
                gx.RetryError,
            ),
        ):
            return TransientStorageError(f"transfer of {url} failed: {type(exc).__name__}: {exc}", url)
        return None


class _UnrangedAnswer(Exception):
    """A ranged GET answered with the whole object (200) or with another range than the one asked for."""

    def __init__(self, status: int, content_range: str | None, length: int | None) -> None:
        super().__init__(f"ranged GET answered with {status}, Content-Range {content_range!r}")
        self.status = status
        self.content_range = content_range
        self.length = length


class _RangeComplete(Exception):
    """Raised by :class:`_StoppingSlice` to stop the SDK reading a body once the range is complete."""


class _StoppingSlice(WholeObjectSlice):
    """A :class:`WholeObjectSlice` that stops the SDK's download once the range is complete."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        taken = super().write(data)
        if self.done:
            raise _RangeComplete
        return taken


def _check_range_answer(response: Any, *args: Any, **kwargs: Any) -> Any:
    """A requests response hook: stop a ranged GET answered with the whole object or another range.

    google-cloud-storage writes any 200 or 206 body to the destination as it is; this hook raises
    :class:`_UnrangedAnswer` before the body is read, and :meth:`GCSBackend.read_into` decides.
    """
    wanted = response.request.headers.get("Range")
    if not wanted or response.request.method != "GET" or response.status_code not in (200, 206):
        return response
    content_range = response.headers.get("Content-Range")
    first = wanted.removeprefix("bytes=").partition("-")[0]
    if response.status_code == 206 and (content_range is None or content_range.startswith(f"bytes {first}-")):
        return response
    length = response.headers.get("Content-Length")
    response.close()
    raise _UnrangedAnswer(response.status_code, content_range, int(length) if length else None)
