"""Shards as units: what files each one needs, reading one by itself, and which shard holds a sample.

The building blocks of every reader: :func:`read_shards` lists a dataset's shards, a :class:`ShardReader`
opens, reads and releases one shard, and a :class:`ShardLocator` maps dataset sample ids to
``(shard, index within shard)``.

Example:
    >>> shards = read_shards("/data/my_dataset")
    >>> locator = ShardLocator.from_shards(shards)
    >>> k, i = locator.locate_one(1234)
    >>> with ShardReader("/data/my_dataset", shards[k]) as reader:
    ...     sample = reader.get(i)
    ...     tokens = reader.get_columns([0, 1, 2], ["tokens"])["tokens"]
    ...     images = reader.get_values([0, 1, 2], ["image"])["image"]
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np

from shardflow.format.errors import UnknownNameError, UnsafeEncodingError, UnsupportedColumnError
from shardflow.format.formats import Capability, OpenShard, ShardFormat, get_format
from shardflow.format.hashing import get_hashes, is_hash
from shardflow.format.index import INDEX_BASENAME, read_index

__all__ = ["Columns", "ShardFile", "ShardInfo", "ShardReader", "ShardLocator", "read_shards"]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# The encodings get_columns serves, for error messages.
_ARRAY_ENCODINGS = "int, int8..int64, uint8..uint64, float16/32/64 and ndarray:<dtype>:<shape>"


class Columns(NamedTuple):
    """What :meth:`ShardReader.read_columns` read: arrays, decoded values, and spans (start and end
    offsets in the shard's file, two int64 arrays per column)."""

    arrays: dict[str, np.ndarray]
    values: dict[str, list[Any]]
    spans: dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ShardFile:
    """One file of a shard, as its index entry describes it.

    Attributes:
        basename: The file, relative to the dataset folder (one sub-folder in merged indexes).
        bytes: Its size.
        hashes: Algorithm to hex digest, as the index records them (may be empty).
        compressed: Whether this is the compressed form of the file.
        kind: The index key that names it: ``raw_data``, ``zip_data``, ``raw_meta`` or ``zip_meta``.
    """

    basename: str
    bytes: int
    hashes: dict[str, str] = field(hash=False)
    compressed: bool
    kind: str


@dataclass(frozen=True)
class ShardInfo:
    """One shard of a dataset, as its index describes it.

    Attributes:
        index: Position of the shard in the index.
        basename: Its (raw) data file, relative to the dataset folder.
        format: Its format's name: ``mds``, ``json``, ``csv``, ``tsv``, ``xsv`` or a registered one
            (see :mod:`shardflow.format.formats`).
        samples: How many samples it holds.
        start: The dataset index of its first sample.
        compression: Its compression name, or None.
        columns: Column name to encoding.
        files: Every file its index entry names, in the order ``raw_data``, ``zip_data``, ``raw_meta``,
            ``zip_meta``.
        entry: Its validated index entry (left out of repr and comparisons).
    """

    index: int
    basename: str
    format: str
    samples: int
    start: int
    compression: str | None
    columns: dict[str, str] = field(hash=False)
    files: tuple[ShardFile, ...] = ()
    entry: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def raw_files(self) -> tuple[ShardFile, ...]:
        """The raw data file, then the raw ``.meta`` file if the format has one: what a reader maps."""
        return tuple(file for file in self.files if not file.compressed)

    @property
    def zip_files(self) -> tuple[ShardFile, ...]:
        """The compressed counterparts of :attr:`raw_files`, in the same order; empty when uncompressed."""
        return tuple(file for file in self.files if file.compressed)

    @property
    def capabilities(self) -> frozenset[str]:
        """What its format can do beyond single samples (:class:`~shardflow.format.formats.Capability`)."""
        return get_format(self.format).capabilities

    @functools.cached_property
    def array_columns(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """The columns :meth:`ShardReader.get_columns` serves, as name to ``(dtype, shape of one value)``.

        Worked out once per shard (batch reads ask for it per batch); do not modify the dict.

        Those of an MDS shard with a fixed-size number or array encoding (``int``, ``int8`` ...
        ``float64``, ``ndarray:<dtype>:<shape>``); none for text shards; for other formats, their
        ``array_columns`` (none without the capability ``arrays``).
        """
        fmt = get_format(self.format)
        return fmt.array_columns(self) if Capability.ARRAYS in fmt.capabilities else {}

    @functools.cached_property
    def byte_columns(self) -> dict[str, str]:
        """The columns whose spans, as :meth:`ShardReader.read_columns` locates them, are their values, as
        name to encoding: an MDS shard's ``bytes`` columns; none for a format without the capability
        ``spans``. Do not modify the dict."""
        fmt = get_format(self.format)
        return fmt.byte_columns(self) if Capability.SPANS in fmt.capabilities else {}


def read_shards(
    folder: PathLike, split: str | None = None, allow_unsafe_types: bool = False
) -> tuple[ShardInfo, ...]:
    """Read and validate a dataset's ``index.json`` and describe its shards.

    Args:
        folder: The dataset folder, or its ``index.json`` file.
        split: A sub-folder of ``folder`` holding the split to read, or None.
        allow_unsafe_types: Accept ``pkl`` columns, which run arbitrary code when decoded. Only for data
            you trust.

    Returns:
        The shards in index order, each with ``start`` (its first sample's dataset index) filled in.

    Raises:
        FileNotFoundError: There is no index there.
        IndexFormatError: The index is corrupt, of an unsupported version or unsafe.
        UnsafeEncodingError: A column is ``pkl`` and ``allow_unsafe_types`` is False.
        ValueError: ``folder`` is an index file and ``split`` is given.
    """
    index_path = _index_path(folder, split)
    shards, start = [], 0
    for k, entry in enumerate(read_index(index_path)["shards"]):
        fmt = get_format(entry["format"])
        plan = fmt.plan(entry, index_path)
        if plan.unsafe_columns and not allow_unsafe_types:
            raise UnsafeEncodingError(
                f"column {plan.unsafe_columns[0]!r} of {index_path.parent / entry['raw_data']['basename']} "
                f"(listed in {index_path}) is pickled, and unpickling runs arbitrary code: pass "
                "allow_unsafe_types=True only if you trust whoever wrote this dataset"
            )
        files = tuple(
            ShardFile(info["basename"], info["bytes"], dict(info["hashes"]), key.startswith("zip_"), key)
            for key in fmt.file_keys
            if (info := entry.get(key))
        )
        shards.append(
            ShardInfo(
                k,
                entry["raw_data"]["basename"],
                entry["format"],
                entry["samples"],
                start,
                entry.get("compression"),
                plan.columns,
                files,
                entry,
            )
        )
        start += entry["samples"]
    logger.debug("read index %s: %d shards, %d samples", index_path, len(shards), start)
    return tuple(shards)


def _index_path(folder: PathLike, split: str | None) -> Path:
    path = Path(folder)
    if path.is_file():
        if split:
            raise ValueError(f"split={split!r} needs the dataset folder, not the index file {path}")
        return path
    return (path / split if split else path) / INDEX_BASENAME


class ShardReader:
    """Random access to the samples of one shard, opened on first use and released on :meth:`close`.

    Constructing one does no I/O. :meth:`open` (or the first read) makes the raw files ready (when only
    the compressed form exists, it is decompressed next to it through a temporary name and a rename),
    checks the hash if asked, and memory-maps the shard. :meth:`close` releases this shard alone; the
    next read opens it again. A reader is safe to share between threads (closing it while another
    thread reads the same shard makes that read fail) and pickles without its map: the copy reopens
    on first use.

    Args:
        folder: The folder of the index that lists the shard (the split's folder for a split), or that
            ``index.json`` file.
        shard: The shard, from :func:`read_shards`.
        validate_hash: A hash algorithm (e.g. ``'sha1'``) to check the shard's files with when opening:
            the compressed file before decompressing it, else the raw file. None checks nothing (sizes
            and structure are always checked).
        populate: Map every page of the shard when opening (``MAP_POPULATE``) instead of on first touch:
            opening costs a pass over the file, reads then fault no more. Worth it before reading most of
            the shard (an epoch's pass), not for a few random samples.

    Raises:
        UnknownNameError: ``validate_hash`` names no known hash algorithm.
        ValueError: ``shard`` has no index entry (build it with :func:`read_shards`).

    Opening raises ShardMissingError (also a FileNotFoundError) when neither form of a file exists,
    ShardFormatError for a truncated or corrupt file and ShardHashError for a digest mismatch.
    """

    def __init__(
        self, folder: PathLike, shard: ShardInfo, validate_hash: str | None = None, populate: bool = False
    ) -> None:
        if validate_hash is not None and not is_hash(validate_hash):
            raise UnknownNameError(
                f"validate_hash={validate_hash!r} is not a known hash; use one of "
                f"{sorted(get_hashes())} or None"
            )
        if not shard.entry:
            raise ValueError(f"shard {shard.basename} has no index entry: get shards from read_shards()")
        root = Path(folder)
        self.folder = root.parent if root.name == INDEX_BASENAME else root
        self.shard = shard
        self.samples = shard.samples
        self.validate_hash = validate_hash
        self.populate = populate
        self._format: ShardFormat = get_format(shard.format)
        self._plan = self._format.plan(shard.entry, self.folder / INDEX_BASENAME)
        self._open: OpenShard | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"ShardReader({str(self.folder / self.shard.basename)!r}, samples={self.samples}, {state})"

    @property
    def is_open(self) -> bool:
        """Whether the shard is mapped now."""
        return self._open is not None

    @property
    def array_columns(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """The columns :meth:`get_columns` serves (see :attr:`ShardInfo.array_columns`)."""
        return self.shard.array_columns

    def open(self) -> ShardReader:
        """Make the shard's raw files ready, check them and map them; does nothing when already open."""
        self._opened()
        return self

    def _opened(self) -> Any:  # an OpenShard, with the methods its format's capabilities add
        opened = self._open
        if opened is None:
            with self._lock:
                opened = self._open
                if opened is None:
                    opened = self._open = self._plan.open(self.folder, self.validate_hash, self.populate)
                    logger.debug("opened shard %s", opened.path)
        return opened

    def sample_getter(self) -> Callable[[int], dict[str, Any]]:
        """The open shard's own ``get(i)`` (opening it first), unchecked: for loops whose ids are valid.

        The getter reads the current map: after :meth:`close`, ask for a new one.
        """
        return self._opened().get

    def get(self, i: int) -> dict[str, Any]:
        """Sample ``i`` of this shard, ``0 <= i < samples``.

        Raises:
            IndexError: ``i`` is out of range.
        """
        i = operator.index(i)
        if not 0 <= i < self.samples:
            raise IndexError(f"sample {i} is out of range for shard {self.shard.basename} of {self.samples}")
        return (self._open or self._opened()).get(i)

    def get_batch(self, local_ids: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Samples ``local_ids`` of this shard, in the order given.

        Raises:
            IndexError: An id is out of range.
            TypeError: ``local_ids`` is not a flat sequence of integers.
        """
        ids = self._checked_ids(local_ids)
        get = self._opened().get
        samples = []
        for i in ids.tolist():
            samples.append(get(i))
        return samples

    def get_columns(
        self, local_ids: Sequence[int] | np.ndarray, columns: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Columns of samples ``local_ids`` as one numpy array each: the vectorised batch read.

        Each array has shape ``(len(local_ids), *shape of one value)`` and is gathered from the map with
        numpy fancy indexing, with no Python step per sample. It owns its memory.

        Args:
            local_ids: Sample ids within this shard, as a sequence or 1-D integer array.
            columns: The column names to read; None for every column of the shard.

        Returns:
            Column name to array, in the order of ``columns``.

        Raises:
            UnsupportedColumnError: A column is not a fixed-size number or array (see
                :attr:`array_columns`), or the shard's format has no capability ``arrays`` (text shards).
            KeyError: The shard has no such column.
            IndexError: An id is out of range.
            TypeError: ``local_ids`` is not a flat sequence of integers.
        """
        return self.read_columns(local_ids, self._array_names(columns), ()).arrays

    def get_values(
        self, local_ids: Sequence[int] | np.ndarray, columns: Sequence[str] | None = None
    ) -> dict[str, list[Any]]:
        """Columns of samples ``local_ids`` as one list of values each, equal to what :meth:`get` decodes.

        For any column (``bytes``, ``str``, ``json`` ... as well as arrays): in an MDS shard, where every
        value lies is worked out for all samples at once, with numpy, and only the decode runs per value,
        with no sample dict; a text shard's samples are parsed one by one.

        Args:
            local_ids: Sample ids within this shard, as a sequence or 1-D integer array.
            columns: The column names to read; None for every column of the shard.

        Returns:
            Column name to the list of its values, in the order of ``columns``.

        Raises:
            KeyError: The shard has no such column.
            IndexError: An id is out of range.
            TypeError: ``local_ids`` is not a flat sequence of integers.
        """
        return self.read_columns(local_ids, (), self._column_names(columns)).values

    def read_columns(
        self,
        local_ids: Sequence[int] | np.ndarray,
        arrays: Sequence[str],
        values: Sequence[str],
        spans: Sequence[str] = (),
    ) -> Columns:
        """:meth:`get_columns` of ``arrays`` and :meth:`get_values` of ``values`` in one read, and where
        the stored values of ``spans`` lie in the shard's file (for :meth:`read_spans`, maybe in another
        process): an MDS shard's samples are located once for all three.

        Raises:
            UnsupportedColumnError: A column of ``arrays`` is not a fixed-size number or array, or
                ``spans`` is not empty and the shard's format has no capability ``spans`` (text shards).
            KeyError: The shard has no such column.
            IndexError: An id is out of range.
            TypeError: ``local_ids`` is not a flat sequence of integers.
        """
        arrays, values = self._array_names(arrays), self._column_names(values)
        spans = self._span_names(spans)
        ids = self._checked_ids(local_ids)
        opened = self._opened()
        if Capability.COLUMNS in self._format.capabilities:
            return Columns(*opened.read(ids, arrays, values, spans))
        assert not arrays and not spans  # _array_names and _span_names refuse formats without columns
        samples = [opened.get(i) for i in ids.tolist()]
        return Columns({}, {name: [sample[name] for sample in samples] for name in values}, {})

    def read_spans(self, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
        """The bytes of the shard's (raw) file between each of ``starts`` and the matching ``ends``, as
        :meth:`read_columns` located them: for a ``bytes`` column, its values.

        Raises:
            UnsupportedColumnError: The shard's format has no capability ``spans`` (text shards).
            ValueError: A span is not within the file, or the arrays differ in length.
        """
        if Capability.SPANS not in self._format.capabilities:
            raise UnsupportedColumnError(
                f"shard {self.shard.basename} is {self._format.label}: it has no value spans"
            )
        return self._opened().read_spans(np.asarray(starts, np.int64), np.asarray(ends, np.int64))

    def _column_names(self, columns: Sequence[str] | None) -> list[str]:
        shard = self.shard
        if columns is None:
            return list(shard.columns)
        names = [columns] if isinstance(columns, str) else list(columns)
        for name in names:
            if name not in shard.columns:
                raise KeyError(
                    f"shard {shard.basename} has no column {name!r}; its columns: {list(shard.columns)}"
                )
        return names

    def _span_names(self, columns: Sequence[str]) -> list[str]:
        names = self._column_names(columns)
        if names and Capability.SPANS not in self._format.capabilities:
            raise UnsupportedColumnError(
                f"shard {self.shard.basename} is {self._format.label}: columns {names} have no value "
                f"spans; only shards of formats with the capability 'spans' (MDS) store each value as its "
                "own bytes"
            )
        return names

    def _array_names(self, columns: Sequence[str] | None) -> list[str]:
        shard = self.shard
        names = self._column_names(columns)
        arrays = shard.array_columns
        for name in names:
            if name not in arrays:
                raise UnsupportedColumnError(
                    f"column {name!r} ({shard.columns[name]}) of {self._format.label} {shard.basename} "
                    f"cannot be read as an array: get_columns serves {_ARRAY_ENCODINGS} columns of MDS "
                    "shards, here "
                    f"{sorted(arrays) or 'none'}; name those in columns=, or read samples with get_batch"
                )
        return names

    def _checked_ids(self, local_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(local_ids)
        if ids.size == 0:
            return np.zeros(0, np.int64)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise TypeError(
                f"sample ids must be a flat sequence of integers, not {ids.dtype} of shape {ids.shape}"
            )
        bad = (ids < 0) | (ids >= self.samples)
        if bad.any():
            raise IndexError(
                f"sample {ids[np.argmax(bad)]} is out of range for shard {self.shard.basename} of "
                f"{self.samples}"
            )
        return ids.astype(np.int64, copy=False)

    def close(self) -> None:
        """Unmap this shard; it reopens on next use. Decoded arrays that view the map keep it alive."""
        with self._lock:
            opened, self._open = self._open, None
        if opened is not None:
            opened.close()
            logger.debug("closed shard %s", opened.path)

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "shard": self.shard,
            "validate_hash": self.validate_hash,
            "populate": self.populate,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]


class ShardLocator:
    """Maps dataset sample ids to ``(shard index, index within the shard)``.

    Args:
        samples_per_shard: How many samples each shard holds, in index order (zeros allowed).

    Attributes:
        starts: The dataset id of each shard's first sample (read-only int64 array).
        num_samples: The total.
    """

    def __init__(self, samples_per_shard: Sequence[int] | np.ndarray) -> None:
        counts = np.array(samples_per_shard, dtype=np.int64).reshape(-1)
        if (counts < 0).any():
            raise ValueError(f"samples_per_shard holds a negative count: {counts[np.argmax(counts < 0)]}")
        starts = np.zeros(len(counts), np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        starts.setflags(write=False)
        self.starts = starts
        self.num_samples = int(counts.sum())
        self._starts = starts.tolist()

    @classmethod
    def from_shards(cls, shards: Sequence[ShardInfo]) -> ShardLocator:
        """The locator of shards as :func:`read_shards` lists them."""
        return cls([shard.samples for shard in shards])

    def __repr__(self) -> str:
        return f"ShardLocator(shards={len(self._starts)}, samples={self.num_samples})"

    def locate(self, ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shard of each id and its index there, as two int64 arrays shaped like ``ids``.

        Raises:
            IndexError: An id is negative or not below ``num_samples``; the message names it.
            TypeError: ``ids`` are not integers.
        """
        wanted = np.asarray(ids)
        if wanted.size and wanted.dtype.kind not in "iu":
            raise TypeError(f"sample ids must be integers, not {wanted.dtype}")
        bad = (wanted < 0) | (wanted >= self.num_samples)
        if bad.any():
            raise IndexError(
                f"sample id {wanted.flat[np.argmax(bad)]} is out of range for a dataset of "
                f"{self.num_samples} samples"
            )
        wanted = wanted.astype(np.int64, copy=False)
        shard_ids = np.searchsorted(self.starts, wanted, side="right") - 1
        return shard_ids, wanted - self.starts[shard_ids]

    def locate_one(self, i: int) -> tuple[int, int]:
        """The shard of one id and its index there.

        Raises:
            IndexError: ``i`` is negative or not below ``num_samples``.
        """
        i = operator.index(i)
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample id {i} is out of range for a dataset of {self.num_samples} samples")
        k = bisect_right(self._starts, i) - 1
        return k, i - self._starts[k]
