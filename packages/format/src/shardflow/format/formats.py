"""The shard formats: what each ``format`` name of an ``index.json`` entry means and what it can do.

A :class:`ShardFormat` checks its shards' index entries, describes their columns, and opens a shard's
files into an :class:`OpenShard`, which :class:`~shardflow.format.ShardReader` reads. What a format can
do beyond reading one sample at a time is told by its :attr:`~ShardFormat.capabilities` (see
:class:`Capability`); readers ask for a capability, never for a format's name.

Formats are found by name: the built-in ones (``mds``, ``json``, ``csv``, ``tsv``, ``xsv``), those
registered in this process with :func:`register_format`, and those other distributions declare in the
entry-point group :data:`ENTRY_POINT_GROUP`.

Example:
    >>> from shardflow.format.formats import get_format, Capability
    >>> Capability.ARRAYS in get_format("mds").capabilities
    True
"""

from __future__ import annotations

import importlib
import re
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from shardflow.format.errors import UnknownFormatError

if TYPE_CHECKING:
    from shardflow.format.index import IndexChecker
    from shardflow.format.shards import ShardInfo

__all__ = [
    "ENTRY_POINT_GROUP",
    "Capability",
    "OpenShard",
    "ShardPlan",
    "ShardFormat",
    "register_format",
    "get_format",
    "known_formats",
]

ENTRY_POINT_GROUP = "shardflow.format.formats"
"""Entry-point group through which other distributions add formats: ``name = format name``,
``value = "module:attribute"`` where the attribute is a :class:`ShardFormat` (or a callable returning one)
whose ``name`` is that name."""


class Capability:
    """What a format can do beyond reading one sample at a time, as its ``capabilities`` list it."""

    COLUMNS = "columns"
    """Its open shards have ``read(ids, arrays, values, spans)``: a batch's columns located once for all
    of them. A sample holds exactly the shard's columns in their order, so a reader may cut samples out of
    whole columns: ``get(i)`` gives row ``i`` of each array column (a Python ``int`` for a column encoded
    ``int``, else the array's item) and the decoded value of each other column."""

    ARRAYS = "arrays"
    """Some columns (:meth:`ShardFormat.array_columns`) read as one numpy array per batch. Needs
    ``columns``."""

    SPANS = "spans"
    """``read`` also tells where each stored value lies in the shard's file, and ``read_spans(starts,
    ends)`` copies them out (maybe in another process mapping the same file); for the columns of
    :meth:`ShardFormat.byte_columns` those bytes are the values. Needs ``columns``."""

    ALL = frozenset({COLUMNS, ARRAYS, SPANS})


class OpenShard(Protocol):
    """One open shard, as :meth:`ShardPlan.open` returns it.

    Every format's has ``get`` and ``close``. With the capability ``columns`` it also has
    ``read(ids, arrays, values, spans)`` (``ids``: an int64 array of valid ids; returns the arrays, the
    lists of decoded values, and ``(starts, ends)`` int64 arrays per span column), and with ``spans``
    ``read_spans(starts, ends) -> list[bytes]``.
    """

    path: Path

    def get(self, i: int) -> dict[str, Any]:
        """Sample ``i``, ``0 <= i < samples`` (checked by the caller)."""
        ...

    def close(self) -> None:
        """Release the shard's files; reading again needs a new open."""
        ...


class ShardPlan(Protocol):
    """How to read one shard, worked out once from its validated index entry."""

    columns: dict[str, str]
    """Column name to encoding, in the order samples hold them."""

    unsafe_columns: list[str]
    """Columns whose decoding may run arbitrary code (refused unless ``allow_unsafe_types``)."""

    def open(self, root: Path, validate_hash: str | None, populate: bool = False) -> OpenShard:
        """Open the shard's files under ``root`` (decompress, check ``validate_hash``, map them)."""
        ...


class ShardFormat:
    """One shard format. Subclass it, set :attr:`name` (and what else differs), implement :meth:`plan`,
    then register an instance (:func:`register_format`, or an entry point of :data:`ENTRY_POINT_GROUP`).

    Attributes:
        name: The ``format`` value of the shard entries it reads.
        capabilities: What it can do beyond single samples (:class:`Capability` values).
        file_keys: The index keys that name its files (``{"basename", "bytes", "hashes"}`` each), the
            first ``raw_data``: ``raw_*`` keys name the files a reader opens, ``zip_*`` keys their
            compressed forms, present exactly when the entry's ``compression`` is set. They are checked
            (a basename stays inside the dataset folder) and are what a cache downloads and evicts.
    """

    name: str = ""
    capabilities: frozenset[str] = frozenset()
    file_keys: tuple[str, ...] = ("raw_data", "zip_data")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @property
    def label(self) -> str:
        """How messages name one of its shards, e.g. ``'an MDS shard'``."""
        return f"a {self.name} shard"

    def check_entry(self, entry: dict[str, Any], check: IndexChecker, where: str) -> None:
        """Validate the format's own fields of a shard entry, raising ``check.fail(where, problem)``.

        The fields every entry has (version, samples, compression, hashes, the files of
        :attr:`file_keys`) are checked before this is called.
        """

    def plan(self, entry: dict[str, Any], index_path: Path) -> ShardPlan:
        """The plan of a shard from its validated entry (``index_path``: the index, for messages)."""
        raise NotImplementedError(f"{type(self).__name__} must implement plan()")

    def array_columns(self, shard: ShardInfo) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """The columns of ``shard`` that read as arrays, as name to ``(dtype, shape of one value)``;
        none unless the format has :attr:`Capability.ARRAYS`."""
        return {}

    def byte_columns(self, shard: ShardInfo) -> dict[str, str]:
        """The columns of ``shard`` whose located spans are their values (name to encoding); none unless
        the format has :attr:`Capability.SPANS`."""
        return {}


# Built-in formats, imported on first use.
_BUILTIN = {
    "mds": "shardflow.format._read_mds:MDS_FORMAT",
    "json": "shardflow.format._read_text:JSON_FORMAT",
    "csv": "shardflow.format._read_text:CSV_FORMAT",
    "tsv": "shardflow.format._read_text:TSV_FORMAT",
    "xsv": "shardflow.format._read_text:XSV_FORMAT",
    "webdataset": "shardflow.format.webdataset:WEBDATASET_FORMAT",
    "litdata": "shardflow.format.litdata:LITDATA_FORMAT",
    "parquet": "shardflow.format._read_parquet:PARQUET_FORMAT",
    "files": "shardflow.format._read_plain:FILES_FORMAT",
}

_NAME = re.compile(r"[a-z][a-z0-9_.+-]*")
_lock = threading.Lock()
_registered: dict[str, ShardFormat] = {}
_loaded: dict[str, ShardFormat] = {}  # built-in and entry-point formats, once imported


def _checked(fmt: object, name: str | None, source: str) -> ShardFormat:
    """``fmt`` when it is a well-formed format (named ``name`` when given); the error names ``source``."""
    if not isinstance(fmt, ShardFormat):
        raise TypeError(f"{source}: expected a ShardFormat, got {type(fmt).__name__}")
    if not isinstance(fmt.name, str) or not _NAME.fullmatch(fmt.name):
        raise ValueError(
            f"{source}: format name {fmt.name!r} must be lowercase letters, digits, '_', '.', '+' or '-', "
            "starting with a letter"
        )
    if name is not None and fmt.name != name:
        raise ValueError(f"{source}: the format is named {fmt.name!r}, not {name!r}")
    unknown = set(fmt.capabilities) - Capability.ALL
    if unknown:
        raise ValueError(f"{source}: unknown capabilities {sorted(unknown)}; known: {sorted(Capability.ALL)}")
    if {Capability.ARRAYS, Capability.SPANS} & set(fmt.capabilities) and (
        Capability.COLUMNS not in fmt.capabilities
    ):
        raise ValueError(f"{source}: capabilities 'arrays' and 'spans' need 'columns' (the read they extend)")
    keys = tuple(fmt.file_keys)
    if not keys or keys[0] != "raw_data" or not all(re.fullmatch(r"(raw|zip)_\w+", key) for key in keys):
        raise ValueError(
            f"{source}: file_keys {keys!r} must start with 'raw_data' (the shard's own file) and name only "
            "'raw_*' and 'zip_*' keys"
        )
    return fmt


def register_format(fmt: ShardFormat) -> None:
    """Read shards whose entries say ``"format": fmt.name`` with ``fmt``, in this process.

    Registrations take precedence over entry points and built-in formats. Processes started afresh
    (spawned DataLoader workers) do not inherit them: register in a module those processes import, or
    declare an entry point.

    Raises:
        TypeError: ``fmt`` is not a :class:`ShardFormat`.
        ValueError: Its name is not a valid format name, or its capabilities are unknown or inconsistent.
    """
    _checked(fmt, None, f"register_format({fmt!r})")
    with _lock:
        _registered[fmt.name] = fmt


def known_formats() -> list[str]:
    """Every format name served: built in, registered, or from entry points."""
    names = set(_BUILTIN) | set(_registered)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def get_format(name: str) -> ShardFormat:
    """The format that reads shards of ``name``.

    Raises:
        UnknownFormatError: No format has that name; the message lists the known ones.
    """
    fmt = _registered.get(name) or _loaded.get(name)
    if fmt is not None:
        return fmt
    with _lock:
        fmt = _registered.get(name) or _loaded.get(name)
        if fmt is None:
            fmt = _loaded[name] = _load(name)
    return fmt


def _load(name: str) -> ShardFormat:
    target = _BUILTIN.get(name)
    if target is not None:
        module_name, _, attribute = target.partition(":")
        fmt: ShardFormat = getattr(importlib.import_module(module_name), attribute)
        return fmt
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise UnknownFormatError(
            f"no shard format is named {name!r}; known formats: {', '.join(known_formats())}. A package "
            f"adds one with shardflow.format.formats.register_format or the {ENTRY_POINT_GROUP!r} "
            "entry-point group"
        )
    loaded = found[0].load()
    if not isinstance(loaded, ShardFormat) and callable(loaded):
        loaded = loaded()
    return _checked(loaded, name, f"entry point {found[0].name} = {found[0].value}")
