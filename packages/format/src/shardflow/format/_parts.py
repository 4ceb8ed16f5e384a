"""Shards whose local file is made of byte ranges of other files: the ``parts`` of an index entry.

An entry with ``"parts": [[file, start, end], ...]`` says that its ``raw_data`` file holds those byte
ranges of ``file`` (relative to the dataset folder), joined in order; whoever fetches the shard (the
dataset's cache) makes it so. A folder read in place has no such file: readers then read the ranges from
the files themselves. :class:`Spliced` presents such a file as the original one, for readers (pyarrow)
that seek to the original offsets.
"""

from __future__ import annotations

import io
import mmap
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from shardflow.format.index import IndexChecker

__all__ = ["check_parts", "Spliced"]


def check_parts(entry: dict[str, Any], check: IndexChecker, where: str) -> list[tuple[str, int, int]]:
    """The entry's ``parts`` as ``(file, start, end)`` tuples (empty when it has none), checked: names
    that stay in the folder, ``0 <= start <= end``, and lengths adding up to ``raw_data``'s bytes."""
    parts = entry.get("parts")
    if parts is None:
        return []
    if not isinstance(parts, list):
        raise check.fail(where, f"parts is {parts!r}, expected a list of [file, start, end]")
    found = []
    for part in parts:
        if not (
            isinstance(part, list)
            and len(part) == 3
            and isinstance(part[0], str)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in part[1:])
            and 0 <= part[1] <= part[2]
        ):
            raise check.fail(where, f"part {part!r} is not [file, start, end] with 0 <= start <= end")
        name = part[0]
        if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
            raise check.fail(where, f"part {part!r} names a file outside the dataset folder")
        found.append((name, part[1], part[2]))
    total = sum(end - start for _, start, end in found)
    if total != entry["raw_data"]["bytes"]:
        raise check.fail(
            where, f"parts add up to {total} bytes, but raw_data has {entry['raw_data']['bytes']}"
        )
    return found


class Spliced(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only the ranges ``spans`` (``(start, end)``, sorted,
    disjoint) are known, held one after the other in the local file ``path``. Reading outside them is an
    error (the reader wanted bytes the shard did not fetch)."""

    def __init__(self, path: Path, size: int, spans: list[tuple[int, int]]) -> None:
        super().__init__()
        self.path, self.size = path, size
        self._starts = np.array([start for start, _ in spans], np.int64)
        self._ends = np.array([end for _, end in spans], np.int64)
        lengths = self._ends - self._starts
        self._local = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        with open(path, "rb") as file:
            length = os.fstat(file.fileno()).st_size
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if length else b""
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._at, 2: self.size}[whence]
        self._at = base + offset
        return self._at

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self.size - self._at))
        if count == 0:
            return 0
        k = int(np.searchsorted(self._starts, self._at, side="right")) - 1
        if k < 0 or self._at + count > self._ends[k]:
            raise OSError(
                f"{self.path}: bytes [{self._at}, {self._at + count}) of the original file were not fetched"
            )
        local = int(self._local[k] + self._at - self._starts[k])
        view[:count] = self._map[local : local + count]
        self._at += count
        return count

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        super().close()
