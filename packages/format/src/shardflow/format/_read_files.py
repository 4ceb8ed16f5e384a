"""Local shard files: find them, check their hashes, decompress them on first use and map them."""

from __future__ import annotations

import array
import json
import logging
import mmap
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from shardflow.format.compression import get_compressor
from shardflow.format.errors import FormatError, ShardFormatError, ShardHashError, ShardMissingError
from shardflow.format.hashing import hash_file

__all__ = ["prepare_file", "map_file", "read_file", "uint32_table", "check_offsets", "check_header"]

logger = logging.getLogger(__name__)


def prepare_file(
    root: Path,
    raw: dict[str, Any],
    zipped: dict[str, Any] | None,
    compression: str | None,
    validate_hash: str | None,
) -> Path:
    """Make sure the raw form of one shard file exists under ``root`` and return its path.

    A raw file that is present is used as is. Otherwise its compressed form is decompressed next to
    it, through a temporary name unique to this call and an atomic rename, so that any number of
    processes may do it at once. With ``validate_hash`` the file that is read (the compressed one
    when decompressing, else the raw one) is checked against the digest the index records.

    Args:
        root: The folder of the index that lists the shard.
        raw: The index's ``raw_data``/``raw_meta`` entry (``basename``, ``bytes``, ``hashes``).
        zipped: The index's ``zip_data``/``zip_meta`` entry, or None for an uncompressed shard.
        compression: The shard's compression name, or None.
        validate_hash: A hash algorithm to check the file with, or None.

    Returns:
        The path of the raw file.

    Raises:
        ShardMissingError: Neither form of the file exists (also a FileNotFoundError).
        ShardFormatError: The compressed form is truncated or corrupt.
        ShardHashError: The file's digest differs from the index's, or the index has no such digest.
    """
    raw_path = root / raw["basename"]
    if raw_path.is_file():
        if validate_hash:
            _check_hash(raw_path, raw, validate_hash)
        return raw_path
    zip_path = root / zipped["basename"] if zipped else None
    if zip_path is None or compression is None or not zip_path.is_file():
        also = f" nor its compressed form {zip_path}" if zip_path else ""
        raise ShardMissingError(
            f"shard file {raw_path} does not exist{also}: copy the whole dataset folder again"
        )
    assert zipped is not None
    _check_size(zip_path, zip_path.stat().st_size, zipped)
    if validate_hash:
        _check_hash(zip_path, zipped, validate_hash)
    _decompress_atomically(compression, zip_path, raw_path)
    return raw_path


def _check_hash(path: Path, info: dict[str, Any], algorithm: str) -> None:
    expected = info.get("hashes", {}).get(algorithm)
    if expected is None:
        raise ShardHashError(
            f"cannot validate {path} with {algorithm!r}: its index records only "
            f"{sorted(info.get('hashes', {}))}; pass one of those as validate_hash, or None"
        )
    actual = hash_file(algorithm, path)
    if actual != expected:
        raise ShardHashError(
            f"{path} is corrupt: its {algorithm} digest is {actual} but the index records {expected}; "
            "copy or download this file again"
        )


def _check_size(path: Path, size: int, info: dict[str, Any]) -> None:
    if size != info["bytes"]:
        raise ShardFormatError(
            f"{path} is {size} bytes but its index says {info['bytes']}: the file is truncated or from "
            "another version of the dataset; copy it again"
        )


def _decompress_atomically(compression: str, zip_path: Path, raw_path: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{raw_path.name}.", suffix=".tmp", dir=raw_path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        try:
            get_compressor(compression).decompress_file(zip_path, tmp_path)
        except (FormatError, MemoryError):
            raise
        except OSError as exc:
            if exc.errno is not None:  # a real I/O failure (disk full, permissions), not bad data
                raise
            raise _corrupt_zip(zip_path, compression, exc) from exc
        except Exception as exc:
            raise _corrupt_zip(zip_path, compression, exc) from exc
        os.replace(tmp_path, raw_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    logger.debug("decompressed %s to %s", zip_path, raw_path)


def _corrupt_zip(zip_path: Path, compression: str, exc: BaseException) -> ShardFormatError:
    return ShardFormatError(
        f"cannot decompress {zip_path} as {compression!r} ({exc}): the file is corrupt; copy it again"
    )


def map_file(path: Path, info: dict[str, Any], populate: bool = False) -> mmap.mmap | bytes:
    """Map a raw shard file read-only into memory, after checking its size against the index.

    Args:
        path: The raw file.
        info: Its index entry (``bytes`` is compared with the file's size).
        populate: Map every page now (``MAP_POPULATE``: the file is read into the page cache if it is
            not there) rather than page by page on first touch.

    Returns:
        A read-only memory map, or empty bytes for an empty file (which cannot be mapped).
    """
    with _open_shard_file(path) as file:
        size = os.fstat(file.fileno()).st_size
        _check_size(path, size, info)
        if size == 0:
            return b""
        if populate:
            return mmap.mmap(file.fileno(), 0, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ)
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)


def read_file(path: Path) -> bytes:
    """Read a small raw shard file (a ``.meta`` file) whole; its reader checks its structure."""
    with _open_shard_file(path) as file:
        return file.read()


def _open_shard_file(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ShardMissingError(
            f"shard file {path} disappeared while being opened: copy the whole dataset folder again"
        ) from None


def uint32_table(buf: Any, offset: int, count: int) -> Sequence[int]:
    """A little-endian uint32 table inside ``buf`` as a sequence of Python ints, without copying.

    Indexing a ``memoryview`` cast to ``'I'`` is several times faster than indexing a numpy array,
    which is what the per-sample lookups need; big-endian hosts get a swapped copy instead.
    """
    view = memoryview(buf)[offset : offset + 4 * count]
    if sys.byteorder == "little":
        return view.cast("I")
    table = array.array("I", view)
    table.byteswap()
    return table


def check_offsets(path: Path, offsets: np.ndarray, first_min: int, data_size: int) -> None:
    """Check a shard's offsets table: in bounds, non-decreasing and ending at the end of the data.

    Args:
        path: The file the table was read from, for the error message.
        offsets: The table (``samples + 1`` uint32 values).
        first_min: The smallest valid first offset (the end of the shard's header).
        data_size: The size of the file the offsets point into.

    Raises:
        ShardFormatError: The table is inconsistent.
    """
    first, last = int(offsets[0]), int(offsets[-1])
    if first < first_min:
        problem = f"its first sample offset {first} points into the header (which ends at {first_min})"
    elif last != data_size:
        problem = f"its last sample offset {last} differs from the data size {data_size}"
    elif bool(np.any(offsets[1:] < offsets[:-1])):
        bad = int(np.argmax(offsets[1:] < offsets[:-1]))
        problem = f"its sample offsets decrease at sample {bad}"
    else:
        return
    raise ShardFormatError(f"{path} is corrupt or truncated: {problem}; copy it again")


def check_header(path: Path, header: bytes, expected: dict[str, Any]) -> None:
    """Check the JSON config a shard file embeds after its offsets table against the index.

    Args:
        path: The file, for the error message.
        header: The JSON bytes.
        expected: The fields to compare, with the index's values.

    Raises:
        ShardFormatError: The header is not a JSON object, or one of the fields differs.
    """
    try:
        config = json.loads(header)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        config = None
    if not isinstance(config, dict):
        raise ShardFormatError(f"{path} is corrupt: its JSON header cannot be parsed; copy it again")
    for key, value in expected.items():
        if config.get(key) != value:
            raise ShardFormatError(
                f"{path} does not match its index: its header's {key} is {config.get(key)} but the index's "
                f"is {value}; copy the dataset again, shards and index.json together"
            )
