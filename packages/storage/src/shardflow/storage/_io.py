"""File-like ends of a transfer that count bytes and stop when their attempt is abandoned."""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
from pathlib import Path
from typing import Any, BinaryIO

from shardflow.storage._attempt import Attempt

__all__ = ["CountingSink", "CancellableFile", "CancellableBytes", "TEMP_NAME", "temp_path", "remove_quietly"]

# ".<final name>.<pid>-<8 hex>.tmp": hidden, and recognisable as ours when a killed process left one behind.
# Must equal the other package's TEMP_NAME (format/_atomic, storage/_io): tests/packaging/test_temp_names.py
TEMP_NAME = re.compile(r"^\..+\.\d+-[0-9a-f]{8}\.tmp$")


def temp_path(final: Path) -> Path:
    """A fresh temporary path beside ``final``, so that a rename onto it is atomic."""
    return final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def remove_quietly(path: Path) -> None:
    """Remove ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class CountingSink(io.RawIOBase):
    """A write-only stream in front of ``target`` that counts bytes and checks its attempt between writes."""

    def __init__(self, target: BinaryIO, attempt: Attempt) -> None:
        super().__init__()
        self._target = target
        self._attempt = attempt
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any, /) -> int:
        self._attempt.check()
        size = memoryview(data).nbytes
        self._target.write(data)
        self.count += size
        return size

    def tell(self) -> int:
        return self.count


class _CancelOnRead:
    """Mixin for readable streams: every read first checks that the attempt was not abandoned."""

    attempt: Attempt

    def read(self, size: int | None = -1, /) -> bytes:
        self.attempt.check()
        return super().read(size)  # type: ignore[misc]

    def readinto(self, buffer: Any, /) -> int:
        self.attempt.check()
        return super().readinto(buffer)  # type: ignore[misc]


class CancellableFile(_CancelOnRead, io.FileIO):
    """A local file opened for reading as the body of an upload."""

    def __init__(self, path: str | os.PathLike[str], attempt: Attempt) -> None:
        super().__init__(os.fspath(path), "rb")
        self.attempt = attempt


class CancellableBytes(_CancelOnRead, io.BytesIO):
    """In-memory bytes as the body of an upload."""

    def __init__(self, data: bytes, attempt: Attempt) -> None:
        super().__init__(data)
        self.attempt = attempt
