"""Amazon S3 and S3-compatible stores (MinIO, R2, GCS through HMAC keys, ...) through boto3."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
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

__all__ = ["S3Backend"]

_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {
    "401",
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
}
_BUSY = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
}


class S3Backend(Backend):
    """``s3://bucket/key`` through one boto3 client per process, shared by all threads.

    SDK retries are off: the client retries, so that ``download_retry`` means what it says and a 404
    costs one request. A read continued after a broken answer asks for the first answer's ETag
    (``If-Match``). Credentials come from boto3's usual chain (environment, profile, instance role);
    when it finds none, requests go unsigned, which reads public buckets.

    Args:
        endpoint_url: Endpoint of an S3-compatible store; default ``$S3_ENDPOINT_URL``, else AWS.
        region_name: Region; default boto3's (``$AWS_REGION``, the profile, ...).
        profile_name: AWS profile to use.
        aws_access_key_id: Access key; default boto3's chain.
        aws_secret_access_key: Secret key; default boto3's chain.
        aws_session_token: Session token; default boto3's chain.
        unsigned: Send unsigned requests (public buckets); ``None``: only when no credentials are found.
        requester_pays: Buckets whose requester pays; default the comma-separated
            ``$MOSAICML_STREAMING_AWS_REQUESTER_PAYS``, as in mosaicml-streaming.
        canned_acl: ACL given to uploaded objects; default ``$S3_CANNED_ACL``.
        max_pool_connections: Connections kept open for reuse across threads.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds one socket read may wait.
        multipart_threshold: Files of at least this many bytes upload in parts.
        multipart_chunksize: Size of one part.
        scheme: The URL scheme served (``"gs"`` when GCS is reached through its S3 interoperability).
    """

    resumes = True
    env_vars = (
        "S3_ENDPOINT_URL",
        "MOSAICML_STREAMING_AWS_REQUESTER_PAYS",
        "S3_CANNED_ACL",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    )

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        profile_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        unsigned: bool | None = None,
        requester_pays: Iterable[str] | None = None,
        canned_acl: str | None = None,
        max_pool_connections: int = 64,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        multipart_threshold: int = 64 << 20,
        multipart_chunksize: int = 16 << 20,
        scheme: str = "s3",
    ) -> None:
        require("boto3", scheme=scheme, extra="s3")
        self.scheme = scheme
        self.endpoint_url = endpoint_url or os.environ.get("S3_ENDPOINT_URL") or None
        if requester_pays is None:
            requester_pays = os.environ.get("MOSAICML_STREAMING_AWS_REQUESTER_PAYS", "").split(",")
        self.requester_pays = frozenset(name.strip() for name in requester_pays if name.strip())
        self.canned_acl = canned_acl or os.environ.get("S3_CANNED_ACL") or None
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self._session_args = {
            "region_name": region_name,
            "profile_name": profile_name,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
        }
        self._unsigned = unsigned
        self._config_args = {
            "max_pool_connections": max_pool_connections,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
        }
        self._client: LazyClient[Any] = LazyClient(self._make_client)

    def _make_client(self) -> Any:
        import boto3.session
        import botocore.session
        from botocore import UNSIGNED
        from botocore.config import Config

        core = botocore.session.get_session()
        # Responses' timestamps (LastModified) are never read here: keep them as strings, which spares a
        # dateutil parse per request, a tenth of the client's CPU on small objects.
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
        session = boto3.session.Session(botocore_session=core, **self._session_args)
        unsigned = self._unsigned if self._unsigned is not None else session.get_credentials() is None
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            parameter_validation=False,  # the parameters are built here, not by users
            tcp_keepalive=True,
            signature_version=UNSIGNED if unsigned else None,
            **self._config_args,
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def _object(self, url: str) -> dict[str, str]:
        bucket, key = split_bucket_url(url, self.scheme, example=f"{self.scheme}://bucket/path/to/object")
        if not key or key.endswith("/"):
            raise UnsupportedURLError(f"{url!r} names no object; expected {self.scheme}://bucket/key", url)
        return self._payer(bucket, {"Bucket": bucket, "Key": key})

    def _payer(self, bucket: str, args: dict[str, str]) -> dict[str, str]:
        if bucket in self.requester_pays:
            args["RequestPayer"] = "requester"
        return args

    def read_into(
        self, url: str, sink: Sink, start: int = 0, end: int | None = None, pin: ReadPin | None = None
    ) -> int | None:
        args = self._object(url)
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        if pin is not None and pin.version is not None:
            args["IfMatch"] = pin.version
        try:
            response = self._client.get().get_object(**args)
        except Exception as exc:
            if "Range" in args and _status_and_code(exc)[1] in ("416", "InvalidRange"):
                return 0
            raise
        if pin is not None and pin.version is None:
            pin.version = response.get("ETag")
        body = response["Body"]
        announced = int(response["ContentLength"])
        try:
            if "Range" in args and response["ResponseMetadata"]["HTTPStatusCode"] != 206:
                # The Range header was ignored on the way: the body is the whole object.
                whole = WholeObjectSlice(sink, start, end, announced, url)
                while not whole.done and (chunk := body.read(CHUNK_SIZE)):
                    whole.write(chunk)
                return whole.expected
            if "Range" in args:
                check_content_range(url, response.get("ContentRange"), start)
            while chunk := body.read(CHUNK_SIZE):
                sink.write(chunk)
        finally:
            body.close()
        return announced

    def write_from(self, url: str, source: BinaryIO, size: int) -> None:
        args = self._object(url)
        extra = {"ACL": self.canned_acl} if self.canned_acl else {}
        if "RequestPayer" in args:
            extra["RequestPayer"] = args.pop("RequestPayer")
        client = self._client.get()
        if size < self.multipart_threshold:
            client.put_object(Body=source, ContentLength=size, **args, **extra)
            return
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=4,
        )
        client.upload_fileobj(source, args["Bucket"], args["Key"], ExtraArgs=extra, Config=config)

    def size(self, url: str) -> int:
        return int(self._client.get().head_object(**self._object(url))["ContentLength"])

    def stat(self, url: str) -> ObjectStat:
        head = self._client.get().head_object(**self._object(url))
        # The ETag is the content's MD5 for single-part uploads: a rewrite of the same bytes keeps it, and
        # Last-Modified tells it apart (to the second). A versioned bucket's version id settles it.
        parts = (head.get("ETag"), head.get("LastModified"), head.get("VersionId"))
        return ObjectStat(int(head["ContentLength"]), "|".join(str(part) for part in parts if part))

    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        for url, _ in self.list_stats(prefix, page_size):
            yield url

    def list_stats(
        self, prefix: str, page_size: int | None = None
    ) -> Iterator[tuple[str, ObjectStat | None]]:
        bucket, key = split_bucket_url(prefix, self.scheme, example=f"{self.scheme}://bucket/prefix")
        paginator = self._client.get().get_paginator("list_objects_v2")
        pagination = {"PageSize": page_size} if page_size else {}
        args = self._payer(bucket, {"Bucket": bucket, "Prefix": key})
        for page in paginator.paginate(**args, PaginationConfig=pagination):
            for item in page.get("Contents", ()):
                # The listing's ETag and Last-Modified (to the millisecond): a version token of its own.
                version = "|".join(str(part) for part in (item.get("ETag"), item.get("LastModified")) if part)
                yield (
                    f"{self.scheme}://{bucket}/{item['Key']}",
                    ObjectStat(int(item["Size"]), f"listed|{version}"),
                )

    def delete(self, url: str) -> None:
        try:
            self._client.get().delete_object(**self._object(url))
        except Exception as exc:
            if _status_and_code(exc)[1] not in _NOT_FOUND:
                raise

    def translate(self, exc: BaseException, url: str) -> StorageError | None:
        import urllib3.exceptions as ux  # botocore's HTTP library
        from botocore import exceptions as bx

        if isinstance(exc, bx.ClientError):
            status, code = _status_and_code(exc)
            message = exc.response.get("Error", {}).get("Message") or ""
            if status == 412 or code == "PreconditionFailed":
                return ObjectChangedError(
                    f"{url} was rewritten while it was being read (its ETag changed): starting over", url
                )
            if code in _NOT_FOUND or status == 404:
                what = "bucket" if code == "NoSuchBucket" else "object"
                return ObjectNotFoundError(
                    f"{url} does not exist (no such {what}, {code}): check the bucket and key, and that the "
                    f"object was uploaded{self._where()}",
                    url,
                )
            if code in _DENIED or status in (401, 403):
                return PermissionDeniedError(
                    f"access to {url} was refused ({code} {message}). Check the credentials (AWS_PROFILE, "
                    f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the instance role) and that they may use "
                    f"this "
                    f"bucket; S3 also answers 403 for a missing key when they may not list the bucket, and a "
                    f"requester-pays bucket must be named in MOSAICML_STREAMING_AWS_REQUESTER_PAYS"
                    f"{self._where()}",
                    url,
                )
            if status is None or status >= 500 or status == 429 or code in _BUSY:
                return TransientStorageError(f"the store answered {status} {code} for {url}", url)
            return StorageError(
                f"the store rejected the request for {url} ({status} {code}: {message}); "
                f"check the URL and the backend options{self._where()}",
                url,
            )
        if isinstance(
            exc,
            (
                bx.NoCredentialsError,
                bx.PartialCredentialsError,
                bx.CredentialRetrievalError,
                bx.UnknownCredentialError,
            ),
        ):
            return PermissionDeniedError(
                f"no usable AWS credentials for {url} ({exc}): set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, or pass unsigned=True for a public bucket",
                url,
            )
        if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError, ux.HTTPError)):
            return TransientStorageError(f"transfer of {url} failed: {type(exc).__name__}: {exc}", url)
        return None

    def _where(self) -> str:
        return f" (endpoint {self.endpoint_url})" if self.endpoint_url else ""


def _status_and_code(exc: BaseException) -> tuple[int | None, str]:
    """HTTP status and error code of a botocore ClientError; ``(None, "")`` for anything else."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None, ""
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status, str(response.get("Error", {}).get("Code", ""))
