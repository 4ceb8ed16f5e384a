"""Reading input files that may be compressed (gzip, bzip2, zstd), never stopping quietly.

The standard readers stop without a word at some truncations (zstandard's stream reader at a cut
frame; gzip and bzip2 readers when the cut falls between members) or raise errors that name no file.
:func:`open_input` decompresses frame after frame (members, streams) itself and reads the file to its
last byte: a file that ends inside a frame, holds no frame, or holds bytes that do not decompress is an
:class:`~shardflow.convert.errors.InputError` naming the file and the byte offsets.
"""

from __future__ import annotations

import bz2
import io
import os
import zlib
from typing import IO, Any

from shardflow.convert.errors import InputError

__all__ = ["compression_of", "open_input"]

_KINDS = {".gz": "gzip", ".tgz": "gzip", ".bz2": "bzip2", ".zst": "zstd"}
_FRAME = {"gzip": "member", "bzip2": "stream", "zstd": "frame"}
_CHUNK = 1 << 16  # compressed bytes fed to a decompressor at a time


def compression_of(path: str) -> str | None:
    """``'gzip'``, ``'bzip2'`` or ``'zstd'`` by the name's suffix, or None for an uncompressed file."""
    return _KINDS.get(os.path.splitext(path)[1].lower())


def open_input(path: str, who: str) -> IO[bytes]:
    """A buffered binary reader of the file at ``path``, decompressed according to its suffix.

    ``who`` (the converter's name) starts the messages. Reading raises :class:`InputError` when the
    compressed data is truncated or corrupt; the reader reaches the end only after the file's last byte.
    """
    kind = compression_of(path)
    if kind is None:
        return open(path, "rb", buffering=1 << 20)
    return io.BufferedReader(_Decompressed(path, kind, who), 1 << 20)


def _decompressor(kind: str) -> Any:
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()


class _Decompressed(io.RawIOBase):
    """The decompressed bytes of a file of consecutive frames (gzip members, bzip2 streams, zstd frames)."""

    def __init__(self, path: str, kind: str, who: str) -> None:
        self._raw = open(path, "rb")
        self._path, self._kind, self._who = path, kind, who
        self._decoder: Any = None  # the decompressor of the frame being read
        self._frame_start = 0  # where that frame starts in the file
        self._offset = 0  # compressed bytes consumed
        self._frames = 0  # frames read whole
        self._pending = b""  # compressed bytes read, not yet fed
        self._out = memoryview(b"")  # decompressed bytes not yet returned

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()
        super().close()

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            data = self._next()
            if not data:
                return 0
            self._out = memoryview(data)
        count = min(len(buffer), len(self._out))
        buffer[:count] = self._out[:count]
        self._out = self._out[count:]
        return count

    def _next(self) -> bytes:
        """The next decompressed bytes; ``b''`` only after the last byte of a whole file."""
        while True:
            if not self._pending:
                self._pending = self._raw.read(_CHUNK)
                if not self._pending:
                    return self._end()
            if self._decoder is None:
                if self._kind == "gzip" and self._frames:
                    self._pending = self._pending.lstrip(b"\0")  # zero padding after a member, as gzip allows
                    if not self._pending:
                        continue
                self._decoder, self._frame_start = _decompressor(self._kind), self._offset
            data, self._pending = self._pending, b""
            try:
                out = self._decoder.decompress(data)
            except Exception as err:  # zlib.error, OSError (bz2), ZstdError: the data is not what it claims
                raise InputError(
                    f"{self._who}: {self._path}: corrupt {self._kind} data within bytes {self._offset}.."
                    f"{self._offset + len(data)} (the {_FRAME[self._kind]} that starts at byte "
                    f"{self._frame_start}): {err}; replace the file with a good copy"
                ) from None
            if self._decoder.eof:
                self._pending = self._decoder.unused_data
                self._offset += len(data) - len(self._pending)
                self._decoder, self._frames = None, self._frames + 1
            else:
                self._offset += len(data)
            if out:
                return out  # type: ignore[no-any-return]

    def _end(self) -> bytes:
        frame = _FRAME[self._kind]
        if self._decoder is not None:
            raise InputError(
                f"{self._who}: {self._path} is truncated: it ends at byte {self._offset}, inside the "
                f"{self._kind} {frame} that starts at byte {self._frame_start} (after {self._frames} whole "
                f"{frame}s); the file was cut short (an interrupted download or copy?): replace it with a "
                "whole copy"
            )
        if not self._frames:
            raise InputError(f"{self._who}: {self._path} holds no {self._kind} data ({self._offset} bytes)")
        return b""
