"""Output files of a shard being written: a hashing file writer and the log of sample sizes."""

from __future__ import annotations

import logging
import os
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from shardflow.format._atomic import remove_quietly
from shardflow.format._layout import OFFSET, OFFSET_DTYPE
from shardflow.format.hashing import hash_file_all, new_hasher

__all__ = ["CHUNK_BYTES", "HashingFile", "SizeLog"]

logger = logging.getLogger(__name__)

# Unit of buffered writes, copies and spills: large enough to amortise calls, small next to any RSS budget.
CHUNK_BYTES = 1 << 20
_SIZES_PER_BLOCK = CHUNK_BYTES // 4
_IOV_MAX = 1024  # The most pieces one writev call takes (POSIX guarantees at least 16; Linux has 1024).


class HashingFile:
    """A new file, hashed with every requested algorithm as its bytes are written.

    Writes go straight to the operating system (no Python-side buffer): callers write large chunks.

    A file can start with a hole of ``start`` bytes that :meth:`write_at` fills later (a header whose size
    is known only at the end); its bytes are then not written in order, so :meth:`close` hashes it from
    disk instead.

    Args:
        path: Where to create the file (a temporary name; the caller renames it when complete).
        algos: Hash algorithms to apply, in the order of the index's ``hashes`` list.
        start: Bytes to leave as a hole in front of the first :meth:`write`.
    """

    def __init__(self, path: Path, algos: Sequence[str], start: int = 0) -> None:
        self.path = path
        self.start = start
        self.size = start  # The file's size: the hole counts.
        self._algos = list(algos)
        self._hashers = [] if start else [(algo, new_hasher(algo)) for algo in algos]
        self._file: IO[bytes] = open(path, "wb", buffering=0)  # Closed by close() or discard()
        if start:
            self._file.seek(start)

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` to the file and to every hash."""
        for _, hasher in self._hashers:
            hasher.update(data)
        self._write_all(data)
        self.size += len(data)

    def _write_all(self, data: bytes | memoryview) -> None:
        """Write all of ``data`` at the file's position (the OS may take less per call)."""
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) or 0 :]

    def write_parts(self, parts: list[bytes]) -> None:
        """Append several pieces: gathered by the kernel (``writev``) when no hash needs them joined."""
        if self._hashers or not hasattr(os, "writev"):
            self.write(b"".join(parts))
            return
        for start in range(0, len(parts), _IOV_MAX):
            group = parts[start : start + _IOV_MAX]
            total = sum(map(len, group))
            written = os.writev(self._file.fileno(), group)
            self.size += written
            if written < total:  # A short write: finish the rest the plain way.
                self.write(b"".join(group)[written:])

    def write_at(self, offset: int, data: bytes) -> None:
        """Write ``data`` into the hole at the front of the file, at ``offset``."""
        if offset + len(data) > self.start:
            raise ValueError(f"{self.path}: {len(data)} bytes at {offset} pass its {self.start}-byte hole")
        end = self._file.tell()
        self._file.seek(offset)
        self._write_all(data)
        self._file.seek(end)

    def append_file(self, path: Path, start: int = 0) -> None:
        """Append the file at ``path`` from byte ``start`` on, copied inside the kernel where possible."""
        with open(path, "rb", buffering=0) as source:
            source.seek(start)
            if not self._hashers and hasattr(os, "copy_file_range"):
                try:
                    while copied := os.copy_file_range(source.fileno(), self._file.fileno(), 1 << 30):
                        self.size += copied
                    return
                except OSError:  # Not supported between these files: both positions are still consistent.
                    logger.debug("copy_file_range failed for %s: copying through user space", path)
            buffer = memoryview(bytearray(CHUNK_BYTES))
            while got := source.readinto(buffer):
                self.write(buffer[:got])

    def close(self) -> dict[str, str]:
        """Close the file and return its hex digests, keyed by algorithm."""
        self._file.close()
        if self.start and self._algos:
            return hash_file_all(self._algos, self.path)
        return {algo: hasher.hexdigest() for algo, hasher in self._hashers}

    def discard(self) -> None:
        """Close and delete the file (the shard is abandoned)."""
        self._file.close()
        remove_quietly(self.path)


class SizeLog:
    """The byte size of every sample of the open shard, as uint32, spilled to disk past one block.

    The writer appends to :attr:`values` directly (the hot path) and calls :meth:`spill` between
    buffered writes, so memory stays bounded by one block whatever the shard's sample count.

    Args:
        spill_path: Temporary file that receives full blocks; created only when needed.
    """

    def __init__(self, spill_path: Path) -> None:
        self.values = array("I")
        self._spill_path = spill_path
        self._spill: IO[bytes] | None = None
        self._spilled = 0

    @property
    def count(self) -> int:
        """How many sizes were logged."""
        return self._spilled + len(self.values)

    def spill(self) -> None:
        """Move the sizes held in memory to the spill file once they fill a block."""
        if len(self.values) < _SIZES_PER_BLOCK:
            return
        if self._spill is None:
            self._spill = open(self._spill_path, "w+b")  # Closed by discard()
        self.values.tofile(self._spill)
        self._spilled += len(self.values)
        del self.values[:]

    def offsets(self, start: int) -> Iterator[bytes]:
        """The offset table as little-endian uint32 chunks: ``start``, then the end of each sample.

        The caller guarantees that the last offset fits in uint32 (the writer refuses larger shards).
        """
        yield OFFSET.pack(start)
        position = start
        for block in self._blocks():
            if not block:
                continue
            ends = np.cumsum(np.frombuffer(block, np.uint32), dtype=np.uint64)
            ends += position
            position = int(ends[-1])
            yield ends.astype(OFFSET_DTYPE).tobytes()

    def _blocks(self) -> Iterator[bytes]:
        if self._spill is not None:
            self._spill.seek(0)
            while block := self._spill.read(CHUNK_BYTES):
                yield block
        yield self.values.tobytes()

    def discard(self) -> None:
        """Forget every size and delete the spill file."""
        if self._spill is not None:
            self._spill.close()
            remove_quietly(self._spill_path)
        self._spill = None
        self._spilled = 0
        del self.values[:]
