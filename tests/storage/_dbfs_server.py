"""A loopback stand-in for a Databricks workspace: the Files API and DBFS API calls databricks-sdk makes.

Files live in memory by absolute path; folders exist where files are below them (or where ``mkdirs``
made them). databricks-sdk, unmodified, reaches it through its documented ``host`` setting
(``DATABRICKS_HOST``), with a personal access token. Served:

- Files API (Unity Catalog volumes): ``GET``/``HEAD``/``PUT``/``DELETE /api/2.0/fs/files/{path}``
  (``Range`` with 206 and 416, ``Content-Length``, ``Last-Modified``, ``overwrite``) and
  ``GET /api/2.0/fs/directories/{path}`` (``page_size`` and ``page_token``);
- ``GET /.well-known/databricks-config``: the settings the SDK asks for once, when configured;
- DBFS API 2.0: ``GET /api/2.0/dbfs/read``, ``get-status``, ``list`` and ``POST /api/2.0/dbfs/put``,
  ``create``, ``add-block``, ``close``, ``delete``, ``move``, ``mkdirs``.

Errors are JSON ``{"error_code", "message"}`` with the statuses the workspace uses (404
``RESOURCE_DOES_NOT_EXIST`` / ``NOT_FOUND``, 409 ``RESOURCE_ALREADY_EXISTS``, 401 for a wrong token).
"""

from __future__ import annotations

import base64
import email.utils
import itertools
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from _http_server import LoopbackServer, ServedError, StandInHandler

__all__ = ["FakeWorkspace"]

_last_write = [0]


def _now_ms() -> int:
    """The time in milliseconds, later than every earlier write's."""
    _last_write[0] = max(int(time.time() * 1000), _last_write[0] + 1)
    return _last_write[0]


@dataclass
class _File:
    data: bytes
    modified: int = field(default_factory=_now_ms)


class FakeWorkspace(LoopbackServer):
    """A workspace on ``127.0.0.1:<port>`` accepting one token.

    Args:
        token: The personal access token every request must carry.
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.files: dict[str, _File] = {}
        self.folders: set[str] = set()
        self.handles: dict[int, tuple[str, bytearray]] = {}
        self._handles = itertools.count(1)
        self.lock = threading.Lock()
        super().__init__(_handler(self))

    def is_folder(self, path: str) -> bool:
        path = path.rstrip("/") or "/"
        return path == "/" or path in self.folders or any(name.startswith(path + "/") for name in self.files)

    def children(self, path: str) -> list[tuple[str, _File | None]]:
        """``(path, file or None for a folder)`` of each entry right below ``path``, sorted."""
        base = path.rstrip("/") + "/"
        found: dict[str, _File | None] = {}
        for name, file in self.files.items():
            if name.startswith(base):
                head, sep, _ = name[len(base) :].partition("/")
                found[base + head] = None if sep else file
        for folder in self.folders:
            if folder.startswith(base) and folder != base.rstrip("/"):
                found.setdefault(base + folder[len(base) :].split("/")[0], None)
        return sorted(found.items())

    def get(self, path: str, code: str = "RESOURCE_DOES_NOT_EXIST") -> _File:
        found = self.files.get(path)
        if found is None:
            raise ServedError(404, code, f"No file or directory exists on path {path}.")
        return found

    def put(self, path: str, data: bytes, overwrite: bool) -> None:
        if not overwrite and path in self.files:
            raise ServedError(
                409, "RESOURCE_ALREADY_EXISTS", f"A file or directory already exists at {path}."
            )
        self.files[path] = _File(data)


def _handler(workspace: FakeWorkspace) -> type[StandInHandler]:
    class Handler(StandInHandler):
        def _handle(self) -> None:
            body = self._body()
            parsed = urllib.parse.urlsplit(self.path)
            query = {key: values[0] for key, values in urllib.parse.parse_qs(parsed.query).items()}
            path = urllib.parse.unquote(parsed.path)
            if path == "/.well-known/databricks-config":  # the SDK's settings probe, made without credentials
                self._json({"oidc_endpoint": "", "workspace_id": "1234567890"})
                return
            try:
                if self.headers.get("Authorization") != f"Bearer {workspace.token}":
                    raise ServedError(401, "UNAUTHENTICATED", "Invalid access token.")
                with workspace.lock:
                    if path.startswith("/api/2.0/fs/files/"):
                        self._files(path[len("/api/2.0/fs/files") :], query, body)
                    elif path.startswith("/api/2.0/fs/directories/"):
                        self._directories(path[len("/api/2.0/fs/directories") :], query)
                    elif path.startswith("/api/2.0/dbfs/"):
                        args = json.loads(body) if body else query
                        self._dbfs(path[len("/api/2.0/dbfs/") :], args)
                    else:
                        raise ServedError(
                            404, "ENDPOINT_NOT_FOUND", f"{self.command} {path} is not served here"
                        )
            except ServedError as error:
                payload = json.dumps({"error_code": error.code, "message": error.message}).encode()
                self._reply(error.status, payload, {"Content-Type": "application/json"})

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

        def _files(self, path: str, query: dict[str, str], body: bytes) -> None:
            if self.command == "PUT":
                workspace.put(path, body, query.get("overwrite", "true").lower() != "false")
                self._reply(204)
                return
            if self.command == "DELETE":
                workspace.get(path, "NOT_FOUND")
                del workspace.files[path]
                self._reply(204)
                return
            file = workspace.get(path, "NOT_FOUND")
            headers = {
                "Content-Type": "application/octet-stream",
                "Last-Modified": email.utils.formatdate(file.modified / 1000, usegmt=True),
            }
            self._data(file.data, headers)

        def _range_past_end(self, size: int) -> None:
            wanted = self.headers.get("Range")
            raise ServedError(416, "INVALID_RANGE", f"range {wanted} starts past the end of the {size} bytes")

        def _directories(self, path: str, query: dict[str, str]) -> None:
            if not workspace.is_folder(path):
                raise ServedError(404, "NOT_FOUND", f"The directory {path} does not exist.")
            entries = [
                {
                    "path": name + ("/" if file is None else ""),
                    "name": name.rsplit("/", 1)[1],
                    "is_directory": file is None,
                    **({} if file is None else {"file_size": len(file.data)}),
                }
                for name, file in workspace.children(path)
            ]
            size = min(int(query.get("page_size", 1000)), 1000)
            start = int(query.get("page_token", 0))
            answer: dict[str, object] = {"contents": entries[start : start + size]}
            if start + size < len(entries):
                answer["next_page_token"] = str(start + size)
            self._json(answer)

        def _dbfs(self, action: str, args: dict[str, object]) -> None:
            path = str(args.get("path", ""))
            if action == "read":
                data = workspace.get(path).data
                offset, length = int(args.get("offset", 0)), int(args.get("length", 0.5 * 2**20))
                piece = data[offset : offset + length]
                self._json({"bytes_read": len(piece), "data": base64.b64encode(piece).decode()})
            elif action == "get-status":
                self._json(self._status(path))
            elif action == "list":
                if path in workspace.files:
                    self._json({"files": [self._status(path)]})
                    return
                if not workspace.is_folder(path):
                    raise ServedError(
                        404, "RESOURCE_DOES_NOT_EXIST", f"No file or directory exists on path {path}."
                    )
                self._json({"files": [self._status(name) for name, _ in workspace.children(path)]})
            elif action == "put":
                workspace.put(
                    path, base64.b64decode(str(args.get("contents", ""))), bool(args.get("overwrite"))
                )
                self._json({})
            elif action == "create":
                if not args.get("overwrite") and path in workspace.files:
                    raise ServedError(409, "RESOURCE_ALREADY_EXISTS", f"A file already exists at {path}.")
                handle = next(workspace._handles)
                workspace.handles[handle] = (path, bytearray())
                self._json({"handle": handle})
            elif action == "add-block":
                workspace.handles[int(args["handle"])][1].extend(base64.b64decode(str(args["data"])))  # type: ignore
                self._json({})
            elif action == "close":
                target, data = workspace.handles.pop(int(args["handle"]))  # type: ignore[call-overload]
                workspace.put(target, bytes(data), True)
                self._json({})
            elif action == "delete":
                if path in workspace.files:
                    del workspace.files[path]
                elif not workspace.is_folder(path):
                    raise ServedError(
                        404, "RESOURCE_DOES_NOT_EXIST", f"No file or directory exists on path {path}."
                    )
                self._json({})
            elif action == "move":
                source, target = str(args["source_path"]), str(args["destination_path"])
                if target in workspace.files:
                    raise ServedError(409, "RESOURCE_ALREADY_EXISTS", f"A file already exists at {target}.")
                workspace.files[target] = workspace.get(source)
                del workspace.files[source]
                self._json({})
            elif action == "mkdirs":
                workspace.folders.add(path.rstrip("/"))
                self._json({})
            else:
                raise ServedError(404, "ENDPOINT_NOT_FOUND", f"/api/2.0/dbfs/{action} is not served here")

        def _status(self, path: str) -> dict[str, object]:
            file = workspace.files.get(path)
            if file is not None:
                return {
                    "path": path,
                    "is_dir": False,
                    "file_size": len(file.data),
                    "modification_time": file.modified,
                }
            if workspace.is_folder(path):
                return {"path": path, "is_dir": True, "file_size": 0}
            raise ServedError(404, "RESOURCE_DOES_NOT_EXIST", f"No file or directory exists on path {path}.")

    return Handler
