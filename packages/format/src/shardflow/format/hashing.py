"""Shard hashes: hashlib (but shake_*) and xxhash algorithms, one-shot, streaming and per file."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from shardflow.format._deps import require
from shardflow.format.errors import UnknownNameError

__all__ = ["Hasher", "get_hashes", "is_hash", "get_hash", "new_hasher", "hash_file", "hash_file_all"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20

# The xxhash algorithms (names as xxhash.algorithms_available has them); they need the 'xxhash' extra.
_XXHASH_NAMES = ("xxh32", "xxh64", "xxh3_64", "xxh3_128", "xxh128")
_HASHLIB_NAMES = tuple(
    name for name in hashlib.algorithms_available if hasattr(hashlib, name) and not name.startswith("shake_")
)


class Hasher(Protocol):
    """A streaming hash: feed it with :meth:`update`, read it with :meth:`hexdigest`."""

    def update(self, data: Any, /) -> None:
        """Add bytes (any bytes-like object) to the hashed data."""

    def hexdigest(self) -> str:
        """The hash of all the bytes added so far, in lowercase hex."""


def get_hashes() -> set[str]:
    """The supported hash names (the xxhash ones need ``pip install 'shardflow-format[xxhash]'``).

    Returns:
        A new set of the names, as mosaicml-streaming returns them.
    """
    return set(_HASHLIB_NAMES + _XXHASH_NAMES)


def is_hash(name: str | None) -> bool:
    """Whether ``name`` is a supported hash name.

    Args:
        name: The name to check.

    Returns:
        ``True`` when :func:`new_hasher` accepts it (an xxhash name may still need the extra).
    """
    return name in _HASHLIB_NAMES or name in _XXHASH_NAMES


def _constructor(name: str) -> Callable[[], Hasher]:
    if name in _HASHLIB_NAMES:
        return getattr(hashlib, name)
    if name in _XXHASH_NAMES:
        return getattr(require("xxhash", "xxhash", f"hash {name!r}"), name)
    raise UnknownNameError(f"unknown hash {name!r}; valid hashes: {', '.join(sorted(get_hashes()))}")


def new_hasher(name: str) -> Hasher:
    """Start a streaming hash.

    Args:
        name: A name from :func:`get_hashes`.

    Returns:
        A fresh hasher.

    Raises:
        UnknownNameError: Not a supported hash; the message lists the valid ones.
        MissingDependencyError: An xxhash name without the ``xxhash`` package.
    """
    return _constructor(name)()


def get_hash(name: str, data: bytes | bytearray | memoryview) -> str:
    """Hash bytes in one shot.

    Args:
        name: A name from :func:`get_hashes`.
        data: The bytes.

    Returns:
        The lowercase hex digest, as mosaicml-streaming records it in ``index.json``.
    """
    hasher = new_hasher(name)
    hasher.update(data)
    return hasher.hexdigest()


def hash_file(name: str, path: str | Path) -> str:
    """Hash a file in chunks (constant memory).

    Args:
        name: A name from :func:`get_hashes`.
        path: The file.

    Returns:
        The lowercase hex digest of the file's bytes.
    """
    return hash_file_all([name], path)[name]


def hash_file_all(names: Sequence[str], path: str | Path) -> dict[str, str]:
    """Hash a file with several algorithms in one read (constant memory).

    Args:
        names: Names from :func:`get_hashes`.
        path: The file.

    Returns:
        The lowercase hex digest of the file's bytes, keyed by algorithm, in the order of ``names``.
    """
    hashers = {name: new_hasher(name) for name in names}
    if hashers:
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                for hasher in hashers.values():
                    hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}
