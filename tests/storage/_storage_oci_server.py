"""A loopback stand-in for OCI Object Storage: the REST calls shardflow-storage makes, nothing more.

OCI has no emulator. This server answers the real ``oci`` SDK's get/put/head/list/delete object and
get-namespace calls, with ranges and paginated listing, so that the OCI backend is tested through the
SDK's own request building, signing and response parsing. It does not check signatures. Like the real
service, every write gives the object a new ETag, and reads honour ``if-match`` (412 otherwise).
"""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field

from _http_server import LoopbackServer, StandInHandler

__all__ = ["FakeObjectStorage"]

_OBJECT = re.compile(r"^/n/([^/]+)/b/([^/]+)/o/(.+)$")
_LISTING = re.compile(r"^/n/([^/]+)/b/([^/]+)/o/?$")


@dataclass
class _Object:
    """One stored object: its bytes, the ETag of this write and its Last-Modified header."""

    data: bytes
    etag: str = field(default_factory=lambda: str(uuid.uuid4()))
    modified: str = field(default_factory=lambda: email.utils.formatdate(time.time(), usegmt=True))


class FakeObjectStorage(LoopbackServer):
    """Object Storage on ``127.0.0.1:<port>`` with in-memory buckets.

    Args:
        namespace: The tenancy namespace that GET /n/ answers.
        buckets: Buckets that exist from the start.
    """

    def __init__(self, namespace: str, buckets: tuple[str, ...]) -> None:
        self.namespace = namespace
        self.objects: dict[tuple[str, str], dict[str, _Object]] = {(namespace, b): {} for b in buckets}
        self.lock = threading.Lock()
        super().__init__(_handler(self))


def _handler(store: FakeObjectStorage) -> type[StandInHandler]:
    class Handler(StandInHandler):
        def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            super()._reply(status, body, {**(headers or {}), "opc-request-id": "fake"})

        def _error(self, status: int, code: str) -> None:
            body = json.dumps({"code": code, "message": f"fake OCI: {code}"}).encode()
            self._reply(status, body, {"Content-Type": "application/json"})

        def _range_past_end(self, size: int) -> None:
            self._error(416, "InvalidRange")

        def _target(self) -> tuple[str, dict[str, list[str]]]:
            parsed = urllib.parse.urlsplit(self.path)
            return parsed.path, urllib.parse.parse_qs(parsed.query)

        def _bucket(self, namespace: str, bucket: str) -> dict[str, _Object] | None:
            found = store.objects.get((namespace, bucket))
            if found is None:
                self._error(404, "BucketNotFound")
            return found

        def _object(self) -> tuple[dict[str, _Object], str] | None:
            """The bucket's objects and the object name of this request, or None after an error reply."""
            path, _ = self._target()
            match = _OBJECT.match(path)
            if not match:
                self._error(400, "InvalidRequest")
                return None
            namespace, bucket, name = map(urllib.parse.unquote, match.groups())
            with store.lock:
                objects = self._bucket(namespace, bucket)
            return None if objects is None else (objects, name)

        def do_GET(self) -> None:
            self._body()
            path, query = self._target()
            if path.rstrip("/") == "/n":
                self._json(store.namespace)
                return
            listing = _LISTING.match(path)
            if listing:
                self._list(*map(urllib.parse.unquote, listing.groups()), query)
                return
            self._get()

        def do_HEAD(self) -> None:
            self._get()

        def _get(self) -> None:
            target = self._object()
            if target is None:
                return
            objects, name = target
            with store.lock:
                found = objects.get(name)
            if found is None:
                self._error(404, "ObjectNotFound")
                return
            wanted_etag = self.headers.get("if-match")
            if wanted_etag is not None and wanted_etag != found.etag:
                self._error(412, "IfMatchFailed")
                return
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": found.etag,
                "Last-Modified": found.modified,
            }
            self._data(found.data, headers)

        def do_PUT(self) -> None:
            body = self._body()
            target = self._object()
            if target is None:
                return
            objects, name = target
            stored = _Object(body)
            with store.lock:
                objects[name] = stored
            self._reply(200, b"", {"ETag": stored.etag})

        def do_DELETE(self) -> None:
            self._body()
            target = self._object()
            if target is None:
                return
            objects, name = target
            with store.lock:
                if objects.pop(name, None) is None:
                    self._error(404, "ObjectNotFound")
                    return
            self._reply(204)

        def _list(self, namespace: str, bucket: str, query: dict[str, list[str]]) -> None:
            prefix = query.get("prefix", [""])[0]
            start = query.get("start", [""])[0]
            limit = int(query.get("limit", ["1000"])[0])
            with store.lock:
                objects = self._bucket(namespace, bucket)
                if objects is None:
                    return
                names = sorted(n for n in objects if n.startswith(prefix) and n >= start)
                sizes = {n: len(objects[n].data) for n in names[: limit + 1]}
            page = [{"name": n, "size": sizes[n]} for n in names[:limit]]
            body: dict[str, object] = {"objects": page, "prefixes": []}
            if len(names) > limit:
                body["nextStartWith"] = names[limit]
            self._json(body)

    return Handler
