"""Local files as a store: plain paths and ``file://`` URLs."""

from __future__ import annotations

import os
import shutil
import stat
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from shardflow.storage._io import TEMP_NAME, remove_quietly, temp_path
from shardflow.storage.backend import CHUNK_SIZE, Backend, ObjectStat, Sink
from shardflow.storage.errors import (
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    UnsupportedURLError,
)

__all__ = ["LocalBackend"]


class LocalBackend(Backend):
    """Files on this machine, named by plain paths or ``file:///absolute/path`` URLs.

    Writes go through a temporary name and a rename, like downloads, so a reader never sees a partial
    file. Listing skips those temporary names.
    """

    scheme = "file"

    @staticmethod
    def path(url: str) -> Path:
        """The local path a plain path or ``file://`` URL names."""
        if not url.startswith("file://"):
            return Path(url)
        parsed = urllib.parse.urlsplit(url)
        if parsed.netloc not in ("", "localhost"):
            raise UnsupportedURLError(
                f"{url!r} names host {parsed.netloc!r}; file:// URLs must be local: file:///absolute/path",
                url,
            )
        return Path(urllib.parse.unquote(parsed.path))

    def read_into(self, url: str, sink: Sink, start: int = 0, end: int | None = None) -> int | None:
        with open(self.path(url), "rb") as source:
            size = os.fstat(source.fileno()).st_size
            stop = size if end is None else min(end, size)
            if start >= stop:
                return 0
            source.seek(start)
            remaining = stop - start
            while remaining:
                chunk = source.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    break
                sink.write(chunk)
                remaining -= len(chunk)
        return stop - start

    def write_from(self, url: str, source: BinaryIO, size: int) -> None:
        final = self.path(url)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(final)
        try:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK_SIZE)
            os.replace(tmp, final)
        except BaseException:
            remove_quietly(tmp)
            raise

    def size(self, url: str) -> int:
        return self.stat(url).size

    def stat(self, url: str) -> ObjectStat:
        path = self.path(url)
        found = path.stat()
        if not stat.S_ISREG(found.st_mode):
            raise FileNotFoundError(2, "No such file", os.fspath(path))
        # Writes replace the file through a rename: a new inode even when mtime and size repeat.
        return ObjectStat(found.st_size, f"{found.st_mtime_ns}-{found.st_ino}-{found.st_size}")

    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        path_prefix = os.fspath(self.path(prefix))
        if prefix.endswith("/") and not path_prefix.endswith(os.sep):
            path_prefix += os.sep
        top = path_prefix if path_prefix.endswith(os.sep) else os.path.dirname(path_prefix)
        as_url = prefix.startswith("file://")
        strip = 0 if top else len(os.curdir + os.sep)  # a bare relative prefix: walk "." without "./"
        for folder, subfolders, files in os.walk(top or os.curdir):
            subfolders.sort()
            for name in files:
                full = os.path.join(folder, name)[strip:]
                if full.startswith(path_prefix) and not TEMP_NAME.match(name):
                    yield "file://" + urllib.parse.quote(full) if as_url else full

    def delete(self, url: str) -> None:
        remove_quietly(self.path(url))

    def translate(self, exc: BaseException, url: str) -> StorageError | None:
        if isinstance(exc, FileNotFoundError):
            return ObjectNotFoundError(f"{url} does not exist: check the path", url)
        if isinstance(exc, IsADirectoryError):
            return ObjectNotFoundError(f"{url} is a folder, not a file: name a file under it", url)
        if isinstance(exc, PermissionError):
            return PermissionDeniedError(
                f"no permission to access {url}: check the file's mode and owner", url
            )
        return None
