"""A loopback stand-in for the Hugging Face Hub: the REST calls that huggingface_hub makes for hf:// URLs.

It serves dataset repositories kept in memory, one commit per write, through these endpoints (the SDK,
unmodified, reaches them through ``HfApi(endpoint=...)``, the documented ``HF_ENDPOINT`` setting):

- ``GET``/``HEAD /datasets/{repo}/resolve/{revision}/{path}``: a file's bytes, with ``Range`` (206, 416),
  ``ETag`` (the git blob id) and ``X-Repo-Commit``;
- ``POST /api/datasets/{repo}/paths-info/{revision}``: sizes and ids of the paths asked for;
- ``GET /api/datasets/{repo}/tree/{revision}[/{folder}]``: the tree, recursive on request, paginated by
  ``limit`` and a cursor in the ``Link`` header;
- ``POST /api/datasets/{repo}/preupload/{revision}``: every file is uploaded ``regular`` (inline in the
  commit), and the id of the file already there is returned, so the SDK skips unchanged files;
- ``POST /api/datasets/{repo}/commit/{revision}``: an NDJSON commit of ``file`` (base64) and
  ``deletedFile`` lines, on a branch;
- ``GET /api/datasets/{repo}/revision/{revision}``: the repository's commit id, which the SDK asks for when
  a commit would change nothing.

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``), which
the SDK turns into its exception classes. With ``token`` set, a request without ``Authorization: Bearer
<token>`` is answered 401. Large files, which the Hub sends through LFS or Xet storage, are out of scope.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import urllib.parse

from _http_server import LoopbackServer, ServedError, StandInHandler

__all__ = ["FakeHub", "git_blob_id"]

_RESOLVE = re.compile(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_API = re.compile(
    r"^/api/datasets/([^/]+/[^/]+)/(paths-info|tree|preupload|commit|revision)/([^/]+)(?:/(.*))?$"
)


def git_blob_id(data: bytes) -> str:
    """The git blob id of ``data``, the Hub's id of a file stored in git."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub(LoopbackServer):
    """Dataset repositories on ``127.0.0.1:<port>``.

    Args:
        repos: Repository ids (``org/name``) that exist from the start, each with an empty ``main``.
        token: The one access token accepted, or ``None`` to accept any request.
    """

    def __init__(self, repos: tuple[str, ...], token: str | None = None) -> None:
        self.token = token
        self.branches: dict[str, dict[str, str]] = {}
        self.commits: dict[str, dict[str, bytes]] = {}
        self.lock = threading.Lock()
        for repo in repos:
            self.branches[repo] = {"main": self._commit_tree({}, f"create {repo}")}
        super().__init__(_handler(self))

    def _commit_tree(self, files: dict[str, bytes], summary: str) -> str:
        oid = hashlib.sha1(f"{summary}{len(self.commits)}".encode()).hexdigest()
        self.commits[oid] = files
        return oid

    def files(self, repo: str, revision: str) -> tuple[str, dict[str, bytes]]:
        """``(commit id, files)`` of ``repo`` at a branch or commit id."""
        branches = self.branches.get(repo)
        if branches is None:
            raise ServedError(404, "RepoNotFound", f"Repository {repo} not found")
        oid = branches.get(revision, revision if revision in self.commits else None)
        if oid is None:
            raise ServedError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return oid, self.commits[oid]

    def commit(self, repo: str, revision: str, lines: list[dict[str, object]]) -> str:
        with self.lock:
            _, files = self.files(repo, revision)
            if revision not in self.branches[repo]:
                raise ServedError(400, None, f"commits go to a branch, not to {revision}")
            files = dict(files)
            summary = ""
            for line in lines:
                value = line["value"]
                assert isinstance(value, dict)
                if line["key"] == "header":
                    summary = str(value.get("summary", ""))
                elif line["key"] == "file":
                    files[str(value["path"])] = base64.b64decode(str(value["content"]))
                elif line["key"] == "deletedFile":
                    if files.pop(str(value["path"]), None) is None:
                        raise ServedError(
                            404, "EntryNotFound", f"A file with this name doesn't exist: {value['path']}"
                        )
                else:
                    raise ServedError(
                        400, None, f"commit line {line['key']!r} is not served by this stand-in"
                    )
            oid = self._commit_tree(files, summary)
            self.branches[repo][revision] = oid
            return oid


def _entry(path: str, data: bytes) -> dict[str, object]:
    return {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}


def _folders(files: dict[str, bytes], under: str) -> set[str]:
    found = set()
    for path in files:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder.startswith(under):
                found.add(folder)
    return found


def _handler(hub: FakeHub) -> type[StandInHandler]:
    class Handler(StandInHandler):
        def _handle(self) -> None:
            body = self._body()
            try:
                if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    raise ServedError(401, None, "Invalid credentials in Authorization header")
                parsed = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parsed.query)
                resolve = _RESOLVE.match(parsed.path)
                api = _API.match(parsed.path)
                if resolve and self.command in ("GET", "HEAD"):
                    repo, revision, path = (urllib.parse.unquote(part) for part in resolve.groups())
                    self._resolve(repo, revision, path)
                elif api:
                    repo, action, revision, rest = api.groups()
                    revision, rest = urllib.parse.unquote(revision), urllib.parse.unquote(rest or "")
                    getattr(self, "_" + action.replace("-", "_"))(repo, revision, rest, query, body)
                else:
                    raise ServedError(
                        404, None, f"{self.command} {parsed.path} is not served by this stand-in"
                    )
            except ServedError as error:
                headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
                if error.code:
                    headers["X-Error-Code"] = error.code
                self._reply(error.status, json.dumps({"error": error.message}).encode(), headers)

        do_GET = do_HEAD = do_POST = _handle

        def _resolve(self, repo: str, revision: str, path: str) -> None:
            with hub.lock:
                oid, files = hub.files(repo, revision)
            data = files.get(path)
            if data is None:
                raise ServedError(404, "EntryNotFound", f"{path} does not exist at {revision}")
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{git_blob_id(data)}"',
                "X-Repo-Commit": oid,
                "Accept-Ranges": "bytes",
            }
            self._data(data, headers)

        def _paths_info(self, repo: str, revision: str, rest: str, query: object, body: bytes) -> None:
            form = urllib.parse.parse_qs(body.decode())
            with hub.lock:
                _, files = hub.files(repo, revision)
            found: list[dict[str, object]] = []
            for path in form.get("paths", []):
                if path in files:
                    found.append(_entry(path, files[path]))
                elif path in _folders(files, path):
                    found.append({"type": "directory", "path": path, "oid": "0" * 40})
            self._json(found)

        def _tree(
            self, repo: str, revision: str, folder: str, query: dict[str, list[str]], body: bytes
        ) -> None:
            with hub.lock:
                _, files = hub.files(repo, revision)
            under = f"{folder.strip('/')}/" if folder.strip("/") else ""
            if under and under[:-1] not in _folders(files, under[:-1]):
                raise ServedError(404, "EntryNotFound", f"{folder} does not exist at {revision}")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            entries: list[dict[str, object]] = [
                _entry(path, data)
                for path, data in files.items()
                if path.startswith(under) and (recursive or "/" not in path[len(under) :])
            ]
            entries += [
                {"type": "directory", "path": path, "oid": "0" * 40, "size": 0}
                for path in _folders(files, under)
                if path.startswith(under)
                and path != under[:-1]
                and (recursive or "/" not in path[len(under) :])
            ]
            entries.sort(key=lambda entry: str(entry["path"]))
            limit = int(query.get("limit", ["1000"])[0])
            start = int(query.get("cursor", ["0"])[0])
            page = entries[start : start + limit]
            headers = {}
            if start + limit < len(entries):
                following = dict(query, cursor=[str(start + limit)])
                address = f"http://{self.headers['Host']}{urllib.parse.urlsplit(self.path).path}"
                headers["Link"] = f'<{address}?{urllib.parse.urlencode(following, doseq=True)}>; rel="next"'
            self._json(page, headers)

        def _preupload(self, repo: str, revision: str, rest: str, query: object, body: bytes) -> None:
            asked = json.loads(body)["files"]
            with hub.lock:
                _, files = hub.files(repo, revision)
            answer = []
            for item in asked:
                existing = files.get(item["path"])
                answer.append(
                    {
                        "path": item["path"],
                        "uploadMode": "regular",
                        "shouldIgnore": False,
                        "oid": git_blob_id(existing) if existing is not None else None,
                    }
                )
            self._json({"files": answer, "commitOid": None})

        def _commit(self, repo: str, revision: str, rest: str, query: object, body: bytes) -> None:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            oid = hub.commit(repo, revision, lines)
            self._json({"commitUrl": f"{hub.endpoint}/datasets/{repo}/commit/{oid}", "commitOid": oid})

        def _revision(self, repo: str, revision: str, rest: str, query: object, body: bytes) -> None:
            with hub.lock:
                oid, _ = hub.files(repo, revision)
            self._json({"id": repo, "sha": oid, "private": False})

    return Handler
