"""Files of Hugging Face Hub dataset repositories through huggingface_hub: ``hf://datasets/org/repo/path``."""

from __future__ import annotations

import importlib
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from shardflow.storage._deps import require
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

__all__ = ["HubBackend"]

_EXAMPLE = "hf://datasets/org/repo/path/to/file (or hf://datasets/org/repo@revision/path)"
_TOKEN_HINT = (
    "the credentials: the token (token= or $HF_TOKEN, else the one saved by `hf auth login`) and its access"
)


@dataclass(frozen=True)
class _Location:
    repo_id: str
    revision: str | None
    path: str
    head: str  # "hf://datasets/org/repo[@revision]"


def _locate(url: str) -> _Location:
    """Split ``hf://datasets/org/repo[@revision]/path``; the revision may be quoted (``%2F`` for ``/``)."""
    if not url.startswith("hf://"):
        raise UnsupportedURLError(f"{url!r} is not an hf:// URL; expected e.g. {_EXAMPLE}", url)
    parts = url[len("hf://") :].split("/", 3)
    if parts[0] != "datasets":
        raise UnsupportedURLError(
            f"{url!r}: only dataset repositories are served (hf://datasets/...); expected e.g. {_EXAMPLE}",
            url,
        )
    if len(parts) < 3 or not parts[1] or not parts[2]:
        raise UnsupportedURLError(f"{url!r} names no repository; expected e.g. {_EXAMPLE}", url)
    name, _, revision = parts[2].partition("@")
    if not name:
        raise UnsupportedURLError(f"{url!r} names no repository; expected e.g. {_EXAMPLE}", url)
    return _Location(
        repo_id=f"{parts[1]}/{name}",
        revision=urllib.parse.unquote(revision) if revision else None,
        path=parts[3] if len(parts) > 3 else "",
        head="hf://" + "/".join(parts[:3]),
    )


class HubBackend(Backend):
    """``hf://datasets/org/repo[@revision]/path`` on the Hugging Face Hub (or a Hub at another endpoint).

    Reads ask the ``resolve`` endpoint with a byte range; sizes and versions come from ``paths-info`` (the
    version is the file's git blob id, or its sha256 when it is stored in LFS or Xet); listings walk the
    repository tree page by page. These requests go through huggingface_hub's shared HTTP client with no
    retries of their own. Each upload or delete is one commit (``HfApi.create_commit``), atomic on the Hub;
    mind the Hub's rate limit on commits when uploading many files, and note that the SDK retries its
    pre-upload request by itself and that an upload holds the file in memory. Uploading bytes the file
    already has makes no commit, so the version stays.

    Args:
        token: An access token; default ``$HF_TOKEN`` or the token saved by ``hf auth login``.
        endpoint: The Hub's URL; default ``$HF_ENDPOINT`` (as read by huggingface_hub at import),
            else https://huggingface.co.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds one socket read may wait.
    """

    scheme = "hf"
    env_vars = ("HF_TOKEN", "HF_ENDPOINT")

    def __init__(
        self,
        *,
        token: str | None = None,
        endpoint: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        hub = require("huggingface_hub", scheme="hf", extra="hf")
        self.token = token
        self.endpoint = (endpoint or hub.constants.ENDPOINT).rstrip("/")
        self._timeouts = (connect_timeout, read_timeout)
        self._api: LazyClient[Any] = LazyClient(self._make_api)

    def _make_api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token, library_name="shardflow")

    def _http(self) -> Any:
        """huggingface_hub's HTTP client module (httpx or its successor), for timeouts and errors."""
        from huggingface_hub import get_session

        return importlib.import_module(type(get_session()).__module__.split(".")[0])

    def _headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return dict(build_hf_headers(token=self.token, library_name="shardflow"))

    def _timeout(self) -> Any:
        connect, read = self._timeouts
        return self._http().Timeout(read, connect=connect)

    def read_into(self, url: str, sink: Sink, start: int = 0, end: int | None = None) -> int | None:
        from huggingface_hub import get_session, hf_hub_url
        from huggingface_hub.utils import hf_raise_for_status

        where = _locate(url)
        if not where.path or where.path.endswith("/"):
            raise UnsupportedURLError(f"{url!r} names no file; expected e.g. {_EXAMPLE}", url)
        address = hf_hub_url(
            where.repo_id, where.path, repo_type="dataset", revision=where.revision, endpoint=self.endpoint
        )
        ranged = bool(start) or end is not None
        headers = {**self._headers(), "Accept-Encoding": "identity"}
        if ranged:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with get_session().stream("GET", address, headers=headers, timeout=self._timeout()) as response:
            if ranged and response.status_code == 416:
                return 0
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            length = response.headers.get("content-length")
            announced = int(length) if length is not None else None
            chunks = response.iter_raw(CHUNK_SIZE)
            if ranged and response.status_code != 206:
                # The Range header was ignored on the way: the body is the whole object.
                whole = WholeObjectSlice(sink, start, end, announced, url)
                while not whole.done and (chunk := next(chunks, b"")):
                    whole.write(chunk)
                return whole.expected
            if ranged:
                check_content_range(url, response.headers.get("content-range"), start)
            for chunk in chunks:
                sink.write(chunk)
        return announced

    def write_from(self, url: str, source: BinaryIO, size: int) -> None:
        from huggingface_hub import CommitOperationAdd

        where = _locate(url)
        if not where.path or where.path.endswith("/"):
            raise UnsupportedURLError(f"{url!r} names no file; expected e.g. {_EXAMPLE}", url)
        data = source.read()  # bytes go through every upload mode (inline, LFS, Xet) alike
        self._api.get().create_commit(
            where.repo_id,
            [CommitOperationAdd(path_in_repo=where.path, path_or_fileobj=data)],
            commit_message=f"Upload {where.path} with shardflow",
            repo_type="dataset",
            revision=where.revision,
        )

    def size(self, url: str) -> int:
        return self.stat(url).size

    def stat(self, url: str) -> ObjectStat:
        where = _locate(url)
        found = where.path and [
            item
            for item in self._api.get().get_paths_info(
                where.repo_id, [where.path], repo_type="dataset", revision=where.revision
            )
            if item.path == where.path and hasattr(item, "size")
        ]
        if not found:
            raise ObjectNotFoundError(
                f"{url} does not exist (no such file in {where.repo_id} at {where.revision or 'main'}): "
                "check "
                "the path, the revision, and that the file was uploaded",
                url,
            )
        item = found[0]
        version = item.lfs.sha256 if item.lfs is not None else item.blob_id
        return ObjectStat(int(item.size), version)

    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        from huggingface_hub import get_session
        from huggingface_hub.errors import RemoteEntryNotFoundError
        from huggingface_hub.utils import hf_raise_for_status

        where = _locate(prefix)
        folder = where.path if where.path.endswith("/") else where.path.rpartition("/")[0]
        folder = folder.strip("/")
        revision = urllib.parse.quote(where.revision or "main", safe="")
        tail = "/" + urllib.parse.quote(folder, safe="") if folder else ""
        address: str | None = f"{self.endpoint}/api/datasets/{where.repo_id}/tree/{revision}{tail}"
        params: dict[str, Any] | None = {"recursive": "true", "expand": "false"}
        if page_size and params is not None:
            params["limit"] = page_size
        while address is not None:
            response = get_session().get(
                address, params=params, headers=self._headers(), timeout=self._timeout()
            )
            try:
                hf_raise_for_status(response)
            except RemoteEntryNotFoundError:
                return  # no such folder: nothing under the prefix
            for item in response.json():
                if item.get("type") == "file" and item["path"].startswith(where.path):
                    yield f"{where.head}/{item['path']}"
            address = response.links.get("next", {}).get("url")
            params = None  # the next page's URL carries them

    def delete(self, url: str) -> None:
        from huggingface_hub.errors import RemoteEntryNotFoundError

        where = _locate(url)
        try:
            self._api.get().delete_file(
                where.path,
                where.repo_id,
                repo_type="dataset",
                revision=where.revision,
                commit_message=f"Delete {where.path} with shardflow",
            )
        except RemoteEntryNotFoundError:
            pass

    def translate(self, exc: BaseException, url: str) -> StorageError | None:
        from huggingface_hub import errors

        where = f" (endpoint {self.endpoint})"
        if isinstance(exc, errors.HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else 0
            if isinstance(exc, errors.EntryNotFoundError):
                return ObjectNotFoundError(
                    f"{url} does not exist: check the path and the revision, and that the file was "
                    f"uploaded{where}",
                    url,
                )
            if isinstance(exc, errors.RevisionNotFoundError):
                return ObjectNotFoundError(
                    f"{url}: the revision does not exist: check the branch, tag or commit", url
                )
            if status in (401, 403) or isinstance(exc, errors.GatedRepoError):
                return PermissionDeniedError(
                    f"access to {url} was refused ({status}): check {_TOKEN_HINT}{where}", url
                )
            if isinstance(exc, errors.RepositoryNotFoundError):
                return ObjectNotFoundError(
                    f"{url} does not exist: its repository was not found, or it is private and the token "
                    "cannot "
                    f"see it: check the repository id and {_TOKEN_HINT}{where}",
                    url,
                )
            if status >= 500 or status in (408, 429):
                return TransientStorageError(f"the Hub answered {status} for {url}", url)
            return StorageError(f"the Hub rejected the request for {url} ({status}): {exc}{where}", url)
        if isinstance(exc, self._http().TransportError):
            return TransientStorageError(f"transfer of {url} failed: {type(exc).__name__}: {exc}", url)
        return None
