"""Oracle Cloud Infrastructure Object Storage through the oci SDK: ``oci://bucket@namespace/key``."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from shardflow.storage._deps import require
from shardflow.storage.backend import (
    CHUNK_SIZE,
    Backend,
    LazyClient,
    ObjectStat,
    ReadPin,
    Sink,
    WholeObjectSlice,
    check_content_range,
    split_bucket_url,
)
from shardflow.storage.errors import (
    ObjectChangedError,
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    TransientStorageError,
    UnsupportedURLError,
)

__all__ = ["OCIBackend"]

_CONFIG_HINT = (
    "check the OCI credentials: ~/.oci/config (or the config=, config_file= and profile= options), "
    "its API key and fingerprint"
)


class OCIBackend(Backend):
    """``oci://bucket@namespace/path/to/object``; without ``@namespace`` the tenancy's own is asked for.

    One SDK client per process is shared by all threads; the SDK's retries and circuit breaker are off
    (the client retries). A read continued after a broken answer asks for the first answer's ETag
    (``if-match``).

    Args:
        config: An oci config dict (``user``, ``tenancy``, ``fingerprint``, ``region``, ``key_file``...);
            default read from ``config_file``.
        config_file: Path of the oci config file; default ``~/.oci/config``.
        profile: Profile in that file; default ``DEFAULT``.
        endpoint_url: Object Storage endpoint; default the region's.
        max_pool_connections: Connections kept open for reuse across threads.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds one socket read may wait.
    """

    scheme = "oci"
    resumes = True
    env_vars = ("OCI_CONFIG_FILE", "OCI_CLI_PROFILE")

    def __init__(
        self,
        *,
        config: Mapping[str, Any] | None = None,
        config_file: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        max_pool_connections: int = 64,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        require("oci", scheme="oci", extra="oci")
        self._config = dict(config) if config is not None else None
        self._config_file = config_file
        self._profile = profile
        self.endpoint_url = endpoint_url
        self._pool = max_pool_connections
        self._timeout = (connect_timeout, read_timeout)
        self._client: LazyClient[Any] = LazyClient(self._make_client)
        self._namespace_lock = threading.Lock()
        self._namespace: str | None = None

    def _make_client(self) -> Any:
        import oci
        from oci._vendor.requests.adapters import HTTPAdapter

        config = self._config
        if config is None:
            settings = {"file_location": self._config_file} if self._config_file else {}
            if self._profile:
                settings["profile_name"] = self._profile
            config = oci.config.from_file(**settings)
        options: dict[str, Any] = {
            "retry_strategy": oci.retry.NoneRetryStrategy(),
            "circuit_breaker_strategy": oci.circuit_breaker.NoCircuitBreakerStrategy(),
            "timeout": self._timeout,
        }
        if self.endpoint_url:
            options["service_endpoint"] = self.endpoint_url
        client = oci.object_storage.ObjectStorageClient(config, **options)
        session = client.base_client.session
        https_adapter = type(session.get_adapter("https://example"))
        session.mount("https://", https_adapter(pool_connections=self._pool, pool_maxsize=self._pool))
        session.mount("http://", HTTPAdapter(pool_connections=self._pool, pool_maxsize=self._pool))
        return client

    def _locate(self, url: str) -> tuple[str, str, str]:
        """``(namespace, bucket, key)`` of ``url``; the key may be empty (a prefix)."""
        where, key = split_bucket_url(url, "oci", example="oci://bucket@namespace/path/to/object")
        bucket, _, namespace = where.partition("@")
        if not bucket:
            raise UnsupportedURLError(f"{url!r} names no bucket; expected oci://bucket@namespace/key", url)
        return namespace or self._tenancy_namespace(), bucket, key

    def _tenancy_namespace(self) -> str:
        with self._namespace_lock:
            if self._namespace is None:
                self._namespace = str(self._client.get().get_namespace(timeout=self._timeout).data)
            return self._namespace

    def _object(self, url: str) -> tuple[str, str, str]:
        namespace, bucket, key = self._locate(url)
        if not key or key.endswith("/"):
            raise UnsupportedURLError(f"{url!r} names no object; expected oci://bucket@namespace/key", url)
        return namespace, bucket, key

    def read_into(
        self, url: str, sink: Sink, start: int = 0, end: int | None = None, pin: ReadPin | None = None
    ) -> int | None:
        from oci.exceptions import ServiceError

        ranged = bool(start) or end is not None
        extra = {"range": f"bytes={start}-{'' if end is None else end - 1}"} if ranged else {}
        if pin is not None and pin.version is not None:
            extra["if_match"] = pin.version
        location = self._object(url)
        try:
            response = self._client.get().get_object(*location, **extra)
        except ServiceError as exc:
            if ranged and exc.status == 416:
                return 0
            raise
        if pin is not None and pin.version is None:
            pin.version = response.headers.get("etag")
        raw = response.data.raw
        length = response.headers.get("content-length")
        announced = int(length) if length is not None else None
        try:
            if ranged and response.status != 206:
                # The Range header was ignored on the way: the body is the whole object.
                whole = WholeObjectSlice(sink, start, end, announced, url)
                chunks = raw.stream(CHUNK_SIZE, decode_content=False)
                while not whole.done and (chunk := next(chunks, b"")):
                    whole.write(chunk)
                return whole.expected
            if ranged:
                check_content_range(url, response.headers.get("content-range"), start)
            for chunk in raw.stream(CHUNK_SIZE, decode_content=False):
                sink.write(chunk)
        finally:
            response.data.close()
        return announced

    def write_from(self, url: str, source: BinaryIO, size: int) -> None:
        location = self._object(url)
        self._client.get().put_object(*location, source, content_length=size)

    def size(self, url: str) -> int:
        return self.stat(url).size

    def stat(self, url: str) -> ObjectStat:
        headers = self._client.get().head_object(*self._object(url)).headers
        parts = (headers.get("etag"), headers.get("last-modified"))
        return ObjectStat(int(headers["content-length"]), "|".join(part for part in parts if part) or None)

    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        namespace, bucket, key = self._locate(prefix)
        where = split_bucket_url(prefix, "oci", example="oci://bucket@namespace/prefix")[0]
        client = self._client.get()
        start = None
        while True:
            page = client.list_objects(
                namespace, bucket, prefix=key or None, start=start, limit=page_size
            ).data
            for item in page.objects:
                yield f"oci://{where}/{item.name}"
            start = page.next_start_with
            if not start:
                return

    def delete(self, url: str) -> None:
        from oci.exceptions import ServiceError

        location = self._object(url)
        try:
            self._client.get().delete_object(*location)
        except ServiceError as exc:
            if exc.status != 404:
                raise

    def translate(self, exc: BaseException, url: str) -> StorageError | None:
        import oci
        from oci._vendor.requests import exceptions as rx
        from urllib3 import exceptions as ux

        where = f" (endpoint {self.endpoint_url})" if self.endpoint_url else ""
        if isinstance(exc, oci.exceptions.ServiceError):
            if exc.status == 412:
                return ObjectChangedError(
                    f"{url} was rewritten while it was being read (its ETag changed): starting over", url
                )
            if exc.status == 404:
                return ObjectNotFoundError(
                    f"{url} does not exist ({exc.code}): check the bucket, the namespace and the object "
                    f"name, "
                    f"and that the object was uploaded{where}",
                    url,
                )
            if exc.status in (401, 403):
                return PermissionDeniedError(
                    f"access to {url} was refused ({exc.status} {exc.code or ''}): "
                    f"{_CONFIG_HINT}, and the bucket's policies{where}",
                    url,
                )
            if exc.status >= 500 or exc.status in (408, 429) or exc.status == -1:
                return TransientStorageError(f"the store answered {exc.status} {exc.code} for {url}", url)
            return StorageError(
                f"the store rejected the request for {url} ({exc.status} {exc.code}: {exc.message}){where}",
                url,
            )
        if isinstance(
            exc,
            (
                oci.exceptions.ConfigFileNotFound,
                oci.exceptions.InvalidConfig,
                oci.exceptions.ProfileNotFound,
                oci.exceptions.InvalidPrivateKey,
                oci.exceptions.InvalidKeyFilePath,
            ),
        ):
            return PermissionDeniedError(
                f"no usable OCI configuration for {url} ({type(exc).__name__}: {exc}): {_CONFIG_HINT}", url
            )
        if isinstance(exc, (oci.exceptions.RequestException, rx.RequestException, ux.HTTPError)):
            return TransientStorageError(f"transfer of {url} failed: {type(exc).__name__}: {exc}", url)
        return None
