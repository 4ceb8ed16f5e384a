"""Shard compression: br, bz2, gz, snappy and zstd (with levels), in memory and file to file."""

from __future__ import annotations

import bz2
import gzip
import logging
import mmap
import os
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

from shardflow.format._deps import require
from shardflow.format.errors import ShardFormatError, UnknownNameError

__all__ = [
    "ONE_SHOT_MAX_BYTES",
    "Compressor",
    "get_compressor",
    "get_compressions",
    "is_compression",
    "get_compression_extension",
    "compress",
    "decompress",
]

logger = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview | mmap.mmap

_CHUNK = 1 << 20  # read size when compressing in chunks, output size when decompressing gz and bz2
# Files up to this size compress in one shot where chunks would change the bytes (zstd, brotli, gz level 0),
# exactly as mosaicml-streaming does; larger ones stream in constant memory (to a stream any reader takes).
ONE_SHOT_MAX_BYTES = 1 << 26
_ZIPPED_CHUNK = 1 << 16  # read size when decompressing zstd and br: bounds each output piece


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _StreamCompressor(Protocol):
    def compress(self, data: Buffer, /) -> bytes: ...

    def flush(self) -> bytes: ...


@contextmanager
def _mapped(file: IO[bytes]) -> Iterator[Buffer]:
    """The whole of an open file as a read-only buffer (an mmap: its pages stay in the page cache)."""
    if os.fstat(file.fileno()).st_size == 0:
        yield b""
        return
    with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        yield mapped


def _segments(file: IO[bytes], size: int, segment: int) -> Iterator[Buffer]:
    """The first ``size`` bytes of an open file as consecutive memory maps of ``segment`` bytes."""
    for start in range(0, size, segment):
        length = min(segment, size - start)
        with mmap.mmap(file.fileno(), length, offset=start, access=mmap.ACCESS_READ) as part:
            yield part


def _chunks(file: _Readable, size: int = _CHUNK) -> Iterator[bytes]:
    while chunk := file.read(size):
        yield chunk


class Compressor:
    """One compression algorithm at one level. Get instances with :func:`get_compressor`.

    Attributes:
        name: The name it was looked up by, e.g. ``'zstd'`` or ``'zstd:7'``.
        extension: The file name extension of compressed shards, e.g. ``'zstd'``.
        level: The compression level (``None`` for snappy, which has none).
        chunk: Bytes fed to the codec per call when :meth:`compress_file` streams (a multiple of the mmap
            granularity).
    """

    extension: ClassVar[str] = ""
    chunk: ClassVar[int] = _CHUNK
    levels: ClassVar[range] = range(0)
    default_level: ClassVar[int | None] = None
    module: ClassVar[str] = ""
    extra: ClassVar[str | None] = None

    def __init__(self, name: str, level: int | None) -> None:
        self.name = name
        self.level = level

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _lib(self) -> Any:
        return require(self.module, self.extra, f"compression {self.name!r}")

    def _errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions the library raises for data that is not valid compressed data."""
        raise NotImplementedError

    def compress(self, data: Buffer) -> bytes:
        """Compress bytes in one shot, byte for byte as mosaicml-streaming does.

        Args:
            data: The uncompressed bytes.

        Returns:
            The compressed bytes.
        """
        raise NotImplementedError

    def _decompress(self, data: Buffer) -> bytes:
        raise NotImplementedError

    def decompress(self, data: Buffer) -> bytes:
        """Decompress bytes in one shot.

        Args:
            data: The compressed bytes.

        Returns:
            The uncompressed bytes.

        Raises:
            ShardFormatError: The data is corrupt, truncated or not compressed with this algorithm.
        """
        if not len(data):  # every algorithm writes a few bytes even for no data
            raise self._corrupt("the data", "it is empty")
        try:
            return self._decompress(data)
        except self._errors() as exc:
            raise self._corrupt("the data", exc) from exc

    def _corrupt(self, what: str, exc: BaseException | str) -> ShardFormatError:
        return ShardFormatError(
            f"cannot decompress {what} with {self.name!r}: {exc}. It is corrupt, truncated or not "
            f"{self.extension} data: delete it so that it is fetched or written again."
        )

    def _stream_compressor(self) -> _StreamCompressor | None:
        """A chunked compressor whose output equals :meth:`compress`'s, or ``None`` if there is none."""
        return None

    def _large_stream_compressor(self) -> _StreamCompressor | None:
        """A chunked compressor whose output may differ from :meth:`compress`'s but decompresses the same
        way, or ``None`` where the format has no such stream (snappy)."""
        return None

    def _stream_decompress(self, file: IO[bytes]) -> Iterator[bytes]:
        """Decompress an open file piece by piece (default: all at once, from a memory map)."""
        with _mapped(file) as data:
            yield self._decompress(data)

    def compress_file(self, src: str | Path, dst: str | Path) -> int:
        """Compress a file into another, with the same bytes as :meth:`compress` of the whole file.

        zlib (gz levels 1-9) and bz2 stream in chunks in constant memory. The others cannot reproduce their
        one-shot bytes in chunks (zstd frames differ past the window size or at block-size multiples, brotli
        and snappy frame the whole input), so up to :data:`ONE_SHOT_MAX_BYTES` they compress a memory map of
        ``src`` in one shot and hold the compressed output in memory. Larger files stream in constant memory,
        with other bytes than one shot would give (zstd: one frame per :attr:`chunk`, each with its size in
        its header, as one-shot readers need); snappy, whose format has no stream, stays one-shot.

        Args:
            src: The uncompressed file.
            dst: The file to write (overwritten; write to a temporary name and rename for atomicity).

        Returns:
            The size of ``dst`` in bytes.
        """
        written = 0
        with open(src, "rb") as source, open(dst, "wb") as target:
            stream = self._stream_compressor()
            size = os.fstat(source.fileno()).st_size
            if stream is None and size > ONE_SHOT_MAX_BYTES:
                stream = self._large_stream_compressor()
            if stream is None:
                logger.debug("compressing %s with %s in one shot from a memory map", src, self.name)
                with _mapped(source) as data:
                    written += target.write(self.compress(data))
            else:
                for segment in _segments(source, size, self.chunk):
                    written += target.write(stream.compress(segment))
                written += target.write(stream.flush())
        return written

    def decompress_file(self, src: str | Path, dst: str | Path) -> int:
        """Decompress a file into another, in chunks where the format allows (all but snappy).

        Args:
            src: The compressed file.
            dst: The file to write (overwritten; write to a temporary name and rename for atomicity).

        Returns:
            The size of ``dst`` in bytes.

        Raises:
            ShardFormatError: ``src`` is corrupt, truncated or not compressed with this algorithm.
        """
        written = 0
        with open(src, "rb") as source, open(dst, "wb") as target:
            if not os.fstat(source.fileno()).st_size:
                raise self._corrupt(os.fspath(src), "it is empty")
            pieces = self._stream_decompress(source)
            while True:
                try:  # only the decoding: an error writing dst is not a corrupt src
                    piece = next(pieces, None)
                except self._errors() as exc:
                    raise self._corrupt(os.fspath(src), exc) from exc
                if piece is None:
                    return written
                written += target.write(piece)


class _Levelled(Compressor):
    """A family with compression levels: ``level`` is always set."""

    level: int

    def __init__(self, name: str, level: int | None) -> None:
        if level is None:
            raise ValueError(f"compression {name!r} needs a level")
        super().__init__(name, level)


class _Brotli(_Levelled):
    extension = "br"
    levels = range(12)
    default_level = 11
    module = "brotli"
    extra = "brotli"

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (self._lib().error,)

    def compress(self, data: Buffer) -> bytes:
        return self._lib().compress(data, quality=self.level)

    def _decompress(self, data: Buffer) -> bytes:
        return self._lib().decompress(data)

    def _large_stream_compressor(self) -> _StreamCompressor:
        return _BrotliStream(self._lib().Compressor(quality=self.level))

    def _stream_decompress(self, file: IO[bytes]) -> Iterator[bytes]:
        decompressor = self._lib().Decompressor()
        for chunk in _chunks(file, _ZIPPED_CHUNK):
            yield decompressor.process(chunk)
        if not decompressor.is_finished():
            raise self._lib().error("the brotli stream ends early")


class _BrotliStream:
    """brotli's streaming compressor under the names of the others."""

    def __init__(self, compressor: Any) -> None:
        self.compress = compressor.process
        self.flush = compressor.finish


class _Bzip2(_Levelled):
    extension = "bz2"
    levels = range(1, 10)
    default_level = 9

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (OSError, EOFError, ValueError)

    def compress(self, data: Buffer) -> bytes:
        return bz2.compress(data, self.level)

    def _decompress(self, data: Buffer) -> bytes:
        return bz2.decompress(data)

    def _stream_compressor(self) -> _StreamCompressor:
        return bz2.BZ2Compressor(self.level)

    def _stream_decompress(self, file: IO[bytes]) -> Iterator[bytes]:
        with bz2.BZ2File(file) as stream:
            yield from _chunks(stream)


class _GzipStream:
    """Raw deflate wrapped in the gzip header and trailer that Python's ``gzip.compress`` writes."""

    def __init__(self, level: int) -> None:
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._header: bytes | None = _gzip_header(level)
        self._crc = 0
        self._size = 0

    def compress(self, data: Buffer) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        out = self._deflate.compress(data)
        if self._header is not None:
            out, self._header = self._header + out, None
        return out

    def flush(self) -> bytes:
        head = self._header or b""
        self._header = None
        return head + self._deflate.flush() + _gzip_trailer(self._crc, self._size)


def _gzip_header(level: int) -> bytes:
    """The 10-byte header: magic, deflate, no flags, mtime = now, XFL from the level, OS unknown (255)."""
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    return struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, 0, int(time.time()) & 0xFFFFFFFF, xfl, 255)


if sys.version_info >= (3, 11):

    def _deflate(data: Buffer, level: int) -> bytes:
        """Raw deflate in one shot, as ``gzip.compress`` does (level 0's stored blocks depend on it)."""
        return zlib.compress(data, level, wbits=-zlib.MAX_WBITS)

else:

    def _deflate(data: Buffer, level: int) -> bytes:
        """Raw deflate in one shot, as ``gzip.compress`` does on Python 3.10."""
        deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        return deflate.compress(data) + deflate.flush()


def _gzip_trailer(crc: int, size: int) -> bytes:
    """The 8-byte trailer: CRC-32 and size modulo 2**32 of the uncompressed data."""
    return struct.pack("<II", crc, size & 0xFFFFFFFF)


class _Gzip(_Levelled):
    extension = "gz"
    levels = range(10)
    default_level = 9

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (gzip.BadGzipFile, EOFError, zlib.error)

    def compress(self, data: Buffer) -> bytes:
        deflated = _deflate(data, self.level)
        return _gzip_header(self.level) + deflated + _gzip_trailer(zlib.crc32(data), len(data))

    def _decompress(self, data: Buffer) -> bytes:
        return gzip.decompress(data)

    def _stream_compressor(self) -> _StreamCompressor | None:
        # Stored blocks (level 0) are cut where the input chunks end: only one shot matches compress().
        return _GzipStream(self.level) if self.level else None

    def _large_stream_compressor(self) -> _StreamCompressor:
        return _GzipStream(self.level)

    def _stream_decompress(self, file: IO[bytes]) -> Iterator[bytes]:
        with gzip.GzipFile(fileobj=file) as stream:
            yield from _chunks(stream)


class _Snappy(Compressor):
    extension = "snappy"
    module = "snappy"
    extra = "snappy"

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (self._lib().UncompressError, ValueError)

    def compress(self, data: Buffer) -> bytes:
        return self._lib().compress(data)

    def _decompress(self, data: Buffer) -> bytes:
        return self._lib().decompress(data)


class _Zstandard(_Levelled):
    extension = "zstd"
    # One frame per chunk; large, so that frames compress well and one call releases the GIL for long (a
    # busy Python thread beside it then costs one GIL hand-over, up to 5 ms, per call).
    chunk = 1 << 24
    levels = range(1, 23)
    default_level = 3
    module = "zstandard"

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (self._lib().ZstdError,)

    def compress(self, data: Buffer) -> bytes:
        return self._lib().ZstdCompressor(level=self.level).compress(data)

    def _large_stream_compressor(self) -> _StreamCompressor:
        return _ZstdFrames(self._lib().ZstdCompressor(level=self.level))

    def _decompress(self, data: Buffer) -> bytes:
        return b"".join(self._frames(iter((data,))))

    def _stream_decompress(self, file: IO[bytes]) -> Iterator[bytes]:
        return self._frames(_chunks(file, _ZIPPED_CHUNK))

    def _frames(self, chunks: Iterator[Buffer]) -> Iterator[bytes]:
        """Decompress every frame of a stream of chunks, and fail on a truncated last frame."""
        zstandard = self._lib()
        context = zstandard.ZstdDecompressor()
        frame = None
        started = False
        for chunk in chunks:
            while chunk:
                if frame is None:
                    frame = context.decompressobj()
                    started = True
                yield frame.decompress(chunk)
                chunk = b""
                if frame.eof:
                    chunk, frame = frame.unused_data, None
        if frame is not None or not started:
            raise zstandard.ZstdError(
                "the zstd stream ends early" if started else "no zstd frame in the data"
            )


class _ZstdFrames:
    """Compresses each piece into a frame of its own, in one shot: zstd streams may hold many frames."""

    def __init__(self, compressor: Any) -> None:
        self.compress = compressor.compress

    def flush(self) -> bytes:
        return b""


_FAMILIES: tuple[type[Compressor], ...] = (_Brotli, _Bzip2, _Gzip, _Snappy, _Zstandard)


def _collect() -> dict[str, Compressor]:
    compressors: dict[str, Compressor] = {}
    for family in _FAMILIES:
        compressors[family.extension] = family(family.extension, family.default_level)
        for level in family.levels:
            name = f"{family.extension}:{level}"
            compressors[name] = family(name, level)
    return compressors


_COMPRESSORS = _collect()


def get_compressions() -> set[str]:
    """The compression names: each family (``'zstd'``) and each of its levels (``'zstd:7'``).

    Returns:
        A new set of the names, as mosaicml-streaming returns them. ``br`` and ``snappy`` need the
        ``brotli`` / ``snappy`` extras.
    """
    return set(_COMPRESSORS)


def is_compression(name: str | None) -> bool:
    """Whether ``name`` is a supported compression name (``None``, no compression, is not one).

    Args:
        name: The name to check.

    Returns:
        ``True`` when :func:`get_compressor` accepts it.
    """
    return isinstance(name, str) and name in _COMPRESSORS


def get_compressor(name: str) -> Compressor:
    """Get the compressor of a compression name.

    Args:
        name: A name from :func:`get_compressions`, e.g. ``'zstd'``, ``'gz:5'``.

    Returns:
        The (shared) compressor.

    Raises:
        UnknownNameError: Not a supported compression; the message lists the valid ones.
    """
    compressor = _COMPRESSORS.get(name) if isinstance(name, str) else None
    if compressor is None:
        families = ", ".join(
            f"{f.extension} (levels {f.levels.start}-{f.levels.stop - 1}, default {f.default_level})"
            if f.levels
            else f.extension
            for f in _FAMILIES
        )
        raise UnknownNameError(
            f"unknown compression {name!r}; valid: {families}, written '<name>' or '<name>:<level>'"
        )
    return compressor


def get_compression_extension(name: str) -> str:
    """The file name extension of shards compressed with ``name`` (e.g. ``'zstd'`` for ``'zstd:7'``).

    Args:
        name: A compression name.

    Returns:
        The extension, without the dot.
    """
    return get_compressor(name).extension


def compress(name: str | None, data: Buffer) -> bytes:
    """Compress bytes with ``name`` (``None``: return them unchanged).

    Args:
        name: A compression name, or ``None``.
        data: The bytes.

    Returns:
        The compressed bytes.
    """
    if name is None:
        return bytes(data)
    return get_compressor(name).compress(data)


def decompress(name: str | None, data: Buffer) -> bytes:
    """Decompress bytes compressed with ``name`` (``None``: return them unchanged).

    Args:
        name: A compression name, or ``None``.
        data: The compressed bytes.

    Returns:
        The uncompressed bytes.

    Raises:
        ShardFormatError: The data is corrupt, truncated or not compressed with ``name``.
    """
    if name is None:
        return bytes(data)
    return get_compressor(name).decompress(data)
