"""The dataset index ``index.json`` (version 2): read it with validation, write it atomically.

Merging the indexes of partitions is :mod:`shardflow.format.merge`'s.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from shardflow.format._atomic import write_atomic
from shardflow.format.compression import is_compression
from shardflow.format.errors import IndexDecodeError, IndexFormatError, UnknownFormatError
from shardflow.format.formats import get_format, known_formats

if TYPE_CHECKING:
    from shardflow.format.merge import merge_index

__all__ = [
    "INDEX_BASENAME",
    "INDEX_VERSION",
    "FILE_KEYS",
    "IndexChecker",
    "shard_file_keys",
    "encode_index",
    "write_index",
    "read_index",
    "is_mds_index",
    "shard_files",
    "merge_index",
]

logger = logging.getLogger(__name__)

INDEX_BASENAME = "index.json"
INDEX_VERSION = 2

# The keys of a shard entry that describe one file each, in the order the writers produce the files.
FILE_KEYS = ("raw_data", "zip_data", "raw_meta", "zip_meta")

_DRIVE = re.compile(r"^[A-Za-z]:")

PathLike = Union[str, "os.PathLike[str]"]


def encode_index(shards: Sequence[dict[str, Any]], *, merged: bool = False) -> bytes:
    """The bytes of an ``index.json`` listing ``shards``, laid out exactly as the reference does.

    Args:
        shards: The shard entries, in order.
        merged: Lay the top level out as the reference's ``merge_index`` does (``version`` first, keys
            unsorted) rather than as its writers do (keys sorted).
    """
    if merged:
        return json.dumps({"version": INDEX_VERSION, "shards": list(shards)}).encode("utf-8")
    return json.dumps({"shards": list(shards), "version": INDEX_VERSION}, sort_keys=True).encode("utf-8")


def write_index(folder: PathLike, shards: Sequence[dict[str, Any]], *, merged: bool = False) -> Path:
    """Write ``folder/index.json`` atomically (temporary file, then rename).

    Args:
        folder: The dataset folder; created if missing.
        shards: The shard entries, in order.
        merged: Lay it out as a merged index (see :func:`encode_index`).

    Returns:
        The path of the index written.
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / INDEX_BASENAME
    write_atomic(path, encode_index(shards, merged=merged))
    return path


def shard_file_keys(shard: dict[str, Any]) -> tuple[str, ...]:
    """The keys of a (validated) shard entry that may name its files: its format's ``file_keys``."""
    return get_format(shard["format"]).file_keys


def shard_files(shard: dict[str, Any]) -> list[str]:
    """The basenames of every file a shard entry names (raw and compressed, data and meta)."""
    return [shard[key]["basename"] for key in shard_file_keys(shard) if shard.get(key)]


class IndexChecker:
    """Validates one parsed index, raising IndexFormatError that names the file (or URL) and the field.

    A shard format's ``check_entry`` gets one to check its own fields with: :meth:`fail`, :meth:`field`,
    :meth:`string_list` and :meth:`column_lists`.
    """

    def __init__(self, source: str | Path) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> IndexFormatError:
        """The error to raise: ``problem`` at ``where`` (e.g. ``'shard 3'``) of this index."""
        return IndexFormatError(
            f"{self.source}: {where}: {problem}. The index is corrupt or was not written by a compatible "
            "writer: rewrite the dataset, or restore index.json from a good copy"
        )

    def field(self, obj: dict[str, Any], key: str, where: str, kinds: tuple[type, ...]) -> Any:
        """``obj[key]``, which must be present and of one of ``kinds`` (``bool`` only when listed)."""
        if key not in obj:
            raise self.fail(where, f"the field {key!r} is missing")
        value = obj[key]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
            raise self.fail(where, f"field {key!r} is {value!r}, expected {names}")
        return value

    def string_list(self, obj: dict[str, Any], key: str, where: str) -> list[str]:
        """``obj[key]``, which must be a list of strings."""
        values = self.field(obj, key, where, (list,))
        if not all(isinstance(value, str) for value in values):
            raise self.fail(where, f"field {key!r} is {values!r}, expected a list of strings")
        return values

    def index(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise self.fail("top level", f"expected a JSON object, found {type(obj).__name__}")
        version = self.field(obj, "version", "top level", (int,))
        if version != INDEX_VERSION:
            raise self.fail("top level", f"version {version} is not supported (only version {INDEX_VERSION})")
        shards = self.field(obj, "shards", "top level", (list,))
        seen: dict[str, int] = {}
        for number, shard in enumerate(shards):
            self.shard(shard, f"shard {number}")
            for name in shard_files(shard):
                if name in seen:
                    raise self.fail(f"shard {number}", f"file {name!r} is also named by shard {seen[name]}")
                seen[name] = number

    def shard(self, shard: Any, where: str) -> None:
        if not isinstance(shard, dict):
            raise self.fail(where, f"expected a JSON object, found {type(shard).__name__}")
        version = self.field(shard, "version", where, (int,))
        if version != INDEX_VERSION:
            raise self.fail(where, f"version {version} is not supported (only version {INDEX_VERSION})")
        name = self.field(shard, "format", where, (str,))
        try:
            fmt = get_format(name)
        except UnknownFormatError:
            raise self.fail(where, f"format {name!r} is unknown; known formats: {known_formats()}") from None
        if self.field(shard, "samples", where, (int,)) < 0:
            raise self.fail(where, f"samples is {shard['samples']}, expected a count >= 0")
        shard.setdefault("compression", None)
        shard.setdefault("hashes", [])
        shard.setdefault("size_limit", None)
        compression = self.field(shard, "compression", where, (str, type(None)))
        if compression is not None and not is_compression(compression):
            raise self.fail(where, f"compression {compression!r} is unknown")
        self.string_list(shard, "hashes", where)
        self.field(shard, "size_limit", where, (int, type(None)))
        for key in fmt.file_keys:
            shard.setdefault(key, None)
            compressed = key.startswith("zip_")
            required = not compressed or compression is not None
            self.file_info(shard, key, f"{where} {key}", required)
        fmt.check_entry(shard, self, where)

    def file_info(self, shard: dict[str, Any], key: str, where: str, required: bool) -> None:
        info = shard[key]
        if info is None:
            if required:
                raise self.fail(where, "missing: compressed shards need both raw and zip entries")
            return
        if not required:
            raise self.fail(where, "present, but the shard's compression is null")
        if not isinstance(info, dict):
            raise self.fail(where, f"expected a JSON object, found {type(info).__name__}")
        name = self.field(info, "basename", where, (str,))
        problem = _basename_problem(name)
        if problem:
            raise self.fail(where, f"basename {name!r} {problem}")
        if self.field(info, "bytes", where, (int,)) < 0:
            raise self.fail(where, f"bytes is {info['bytes']}, expected a size >= 0")
        info.setdefault("hashes", {})
        hashes = self.field(info, "hashes", where, (dict,))
        if not all(isinstance(value, str) for value in hashes.values()):
            raise self.fail(where, f"hashes is {hashes!r}, expected a map of algorithm to hex digest")

    def column_lists(self, shard: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
        """The entry's ``column_names`` and ``column_encodings``: lists of strings, as long, names unique."""
        names = self.string_list(shard, "column_names", where)
        encodings = self.string_list(shard, "column_encodings", where)
        if len(names) != len(encodings):
            raise self.fail(where, f"{len(names)} column_names but {len(encodings)} column_encodings")
        if len(set(names)) != len(names):
            raise self.fail(where, f"column_names {names!r} repeat a name")
        return names, encodings


def _basename_problem(name: str) -> str | None:
    """Why a shard basename from an index is unsafe, or ``None`` when it stays inside the dataset folder."""
    if not name:
        return "is empty"
    if "\\" in name or "\x00" in name or _DRIVE.match(name) or name.startswith("/"):
        return "is not a relative POSIX path"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' part: it could name a file outside the dataset folder"
    if len(parts) > 2:
        return "has more than one sub-folder (only merged indexes use one, like 'part0/shard.00000.mds')"
    return None


def is_mds_index(path: PathLike) -> bool:
    """Whether the ``index.json`` at ``path`` is an MDS one (it lists ``shards``), not another tool's
    (LitData's lists ``chunks``)."""
    with open(path, "rb") as file:
        return b'"shards"' in file.read()


def read_index(path: PathLike) -> dict[str, Any]:
    """Read and validate an ``index.json``.

    Every shard entry is checked: version, format, sample count, columns, compression, and each file's
    basename, size and hashes. Basenames must stay inside the dataset folder (no ``..``, no absolute
    path; at most one sub-folder, as in merged indexes). Optional fields absent from the file are filled
    in with their defaults (``compression``/``zip_data``/``zip_meta``/``size_limit``: ``None``,
    ``hashes``: empty).

    Args:
        path: The ``index.json`` file, or the dataset folder holding it.

    Returns:
        The index: ``{'version': 2, 'shards': [shard entry, ...]}``.

    Raises:
        FileNotFoundError: There is no index at ``path``.
        IndexFormatError: The file is not valid JSON (corrupt or truncated: an IndexDecodeError, also a
            ``json.JSONDecodeError``) or breaks one of the rules above; the message names the file, the
            shard and the field.
    """
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_BASENAME
    return _load_index(path, path)


def _load_index(path: Path, source: str | Path) -> dict[str, Any]:
    """Read and validate the local index file ``path``; errors name ``source``, where it came from."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}: no dataset index here; write the dataset first") from None
    try:
        obj = json.loads(data)
    except json.JSONDecodeError as err:
        raise IndexDecodeError(
            f"{source}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}): the file is "
            "corrupt or truncated; rewrite the dataset or restore index.json from a good copy",
            err.doc,
            err.pos,
            err.msg,
        ) from None
    except UnicodeDecodeError as err:
        raise IndexFormatError(f"{source}: not UTF-8 text ({err.reason}): the file is corrupt") from None
    IndexChecker(source).index(obj)
    return obj


if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        # merge_index lived here; it is shardflow.format.merge's now (imported on first use: merge imports
        # this module).
        if name == "merge_index":
            from shardflow.format.merge import merge_index

            return merge_index
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
