"""The output of a conversion: a local folder or a storage URL, holding ``part.NNNNN/`` partitions."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from shardflow.format.upload import split_out

__all__ = ["Target", "PLAN_NAME", "part_name"]

PLAN_NAME = "convert.json"
"""The file that records a conversion's plan, beside ``index.json``; ``--resume`` checks it."""

INDEX_NAME = "index.json"


def part_name(number: int) -> str:
    """The folder of partition ``number``: ``part.00012``."""
    return f"part.{number:05d}"


class Target:
    """The ``--out`` of a conversion: lists, reads, writes and removes files under it.

    A local folder is used directly; a URL (``s3://...``) goes through shardflow.storage.
    """

    def __init__(self, out: str) -> None:
        local, remote = split_out(out)
        self.out = out
        self.local = Path(local) if local is not None else None
        self.remote = remote.rstrip("/") if remote is not None else None

    def __str__(self) -> str:
        return self.out

    def _client(self) -> Any:
        from shardflow.storage import get_client

        return get_client(self.remote or "")

    def url(self, name: str) -> str:
        """Where the relative ``name`` lives: a local path or a URL."""
        if self.remote is not None:
            return f"{self.remote}/{name}"
        assert self.local is not None
        return str(self.local / name)

    def names(self) -> list[str]:
        """The relative names of every file under the output, sorted."""
        if self.remote is not None:
            prefix = self.remote + "/"
            return [url[len(prefix) :] for url in self._client().list(prefix)]
        assert self.local is not None
        if not self.local.is_dir():
            if self.local.exists():
                raise NotADirectoryError(f"--out {self.local} is a file; give a folder")
            return []
        return sorted(str(p.relative_to(self.local)) for p in self.local.rglob("*") if not p.is_dir())

    def is_empty(self) -> bool:
        """Whether nothing is there: no files (local: empty folders count as nothing)."""
        return not self.names()

    def read_json(self, name: str) -> Any:
        """The JSON content of ``name``, or None when it does not exist."""
        if self.remote is not None:
            client = self._client()
            url = self.url(name)
            return json.loads(client.get_bytes(url)) if client.exists(url) else None
        assert self.local is not None
        path = self.local / name
        return json.loads(path.read_text()) if path.is_file() else None

    def write_json(self, name: str, value: Any) -> None:
        """Write ``name`` atomically (local: temporary name, then rename)."""
        data = json.dumps(value, indent=1, sort_keys=True).encode()
        if self.remote is not None:
            self._client().put_bytes(self.url(name), data)
            return
        assert self.local is not None
        path = self.local / name
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        temp.write_bytes(data)
        os.replace(temp, path)

    def remove(self, folder: str | None = None) -> None:
        """Remove the folder ``folder`` (relative), or everything when None."""
        if self.remote is not None:
            client = self._client()
            prefix = self.remote + "/" + (f"{folder}/" if folder else "")
            for url in client.list(prefix):
                client.delete(url)
            return
        assert self.local is not None
        path = self.local / folder if folder else self.local
        if path.is_dir():
            shutil.rmtree(path)

    def partitions(self) -> tuple[set[str], set[str]]:
        """The partition folders present: (finished ones, with an ``index.json``; unfinished ones)."""
        done: set[str] = set()
        started: set[str] = set()
        if self.local is not None and self.remote is None:
            for path in self.local.glob("part.*"):
                if path.is_dir():
                    (done if (path / INDEX_NAME).is_file() else started).add(path.name)
            return done, started
        for name in self.names():
            first, _, rest = name.partition("/")
            if first.startswith("part.") and rest:
                started.add(first)
                if rest == INDEX_NAME:
                    done.add(first)
        return done, started - done
