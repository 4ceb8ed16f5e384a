"""Parquet files as shards (format ``parquet``, needs pyarrow: the ``parquet`` extra).

A shard is a run of consecutive row groups of one file. Its index entry comes from the file's footer
alone (:func:`read_parquet_footer` takes a byte-range reader, so a remote file is never downloaded to
be indexed), and its local file holds those row groups' bytes followed by the footer (its ``parts``);
a shard covering a whole file is the file itself. Row groups are joined, in file order, until a shard
holds at least ``shard_bytes`` (compressed); a file whose row groups all fit in one shard is one shard.

Columns: numbers and booleans (``int8`` ... ``float64``, ``bool``), and fixed-size lists of them
(``ndarray:<dtype>:<shape>``) read as numpy arrays (capability ``arrays``) when the footers' statistics
show no null in them anywhere in the dataset; variable-length lists of numbers likewise become one 1-D
numpy array per value (``ndarray:<dtype>``). ``string`` columns are ``str``, ``binary`` ones ``bytes``
(a null is ``None``), and every other column, and every number or list column that may hold a null, is
``arrow:<type>``: pyarrow's Python value, ``None`` for a null. A null is never turned into a number: a
column the statistics declared free of nulls that holds one fails to open with a ``ShardFormatError``.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shardflow.format._deps import require
from shardflow.format._parts import Spliced, check_parts
from shardflow.format.errors import ShardFormatError, ShardMissingError
from shardflow.format.formats import Capability, ShardFormat

if TYPE_CHECKING:
    from shardflow.format.index import IndexChecker
    from shardflow.format.shards import ShardInfo

__all__ = [
    "PARQUET_FORMAT",
    "ParquetFormat",
    "ParquetFooter",
    "read_parquet_footer",
    "parquet_entries",
    "SHARD_BYTES",
]

SHARD_BYTES = 16 << 20
"""Row groups are joined until a shard holds at least this many (compressed) bytes."""

_MAGIC = b"PAR1"
_FIRST_READ = 64 << 10  # bytes read from a file's end to find its footer (more when it is larger)
_NUMBERS = {
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "bool",
}  # fmt: skip


def _pa() -> Any:
    return require("pyarrow.parquet", "parquet", "reading Parquet files", "pyarrow")


@dataclass(frozen=True)
class ParquetFooter:
    """What the footer of one Parquet file says, for indexing it.

    Attributes:
        file: The file's name, relative to the dataset folder.
        size: Its bytes.
        tail: Where its footer starts (footer, length and magic run to the end).
        digest: SHA-256 of those tail bytes: fetched shards are checked against it.
        metadata: pyarrow's ``FileMetaData``.
    """

    file: str
    size: int
    tail: int
    digest: str
    metadata: Any

    @property
    def schema(self) -> Any:
        """The file's Arrow schema."""
        return self.metadata.schema.to_arrow_schema()

    def row_group_span(self, k: int) -> tuple[int, int]:
        """Where row group ``k``'s column chunks lie in the file, ``(start, end)``."""
        group = self.metadata.row_group(k)
        starts, ends = [], []
        for c in range(group.num_columns):
            chunk = group.column(c)
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                start = min(start, chunk.dictionary_page_offset)
            starts.append(start)
            ends.append(start + chunk.total_compressed_size)
        return min(starts), max(ends)

    def leaf_nulls(self) -> list[bool]:
        """Per leaf column: whether it may hold a null in some row group (no statistics: it may)."""
        meta = self.metadata
        found = [False] * meta.num_columns
        for r in range(meta.num_row_groups):
            group = meta.row_group(r)
            for c in range(meta.num_columns):
                stats = group.column(c).statistics
                if stats is None or not stats.has_null_count or stats.null_count:
                    found[c] = True
        return found


def read_parquet_footer(file: str, size: int, read: Callable[[int, int], bytes]) -> ParquetFooter:
    """The footer of Parquet file ``file`` (``size`` bytes), read through ``read(start, end)`` (bytes
    ``[start, end)`` of the file): one read of its last 64 KiB, another when the footer is larger.

    Raises:
        ShardFormatError: The file is no Parquet file (too short, no magic, a footer pyarrow refuses).
    """
    pa = require("pyarrow", "parquet", "reading Parquet files")
    pq = _pa()
    if size < 12:
        raise ShardFormatError(f"{file} has {size} bytes: too short for a Parquet file")
    start = max(0, size - _FIRST_READ)
    tail = read(start, size)
    if tail[-4:] != _MAGIC:
        raise ShardFormatError(f"{file} does not end with the Parquet magic bytes: it is no Parquet file")
    length = struct.unpack("<I", tail[-8:-4])[0]
    begin = size - 8 - length
    if begin < 4:
        raise ShardFormatError(f"{file}: its footer length {length} does not fit in its {size} bytes")
    if begin < start:
        tail = read(begin, start) + tail
        start = begin
    tail = tail[begin - start :]
    try:
        metadata = pq.read_metadata(pa.BufferReader(_MAGIC + tail))
    except (OSError, ValueError) as exc:
        raise ShardFormatError(f"{file}: pyarrow cannot read its footer: {exc}") from None
    return ParquetFooter(file, size, begin, hashlib.sha256(tail).hexdigest(), metadata)


def _leaves(kind: Any) -> int:
    """How many leaf (Parquet) columns an Arrow type is stored as."""
    pa = require("pyarrow", "parquet", "reading Parquet files")
    if pa.types.is_struct(kind):
        return sum(_leaves(field.type) for field in kind)
    if pa.types.is_map(kind):
        return _leaves(kind.key_type) + _leaves(kind.item_type)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _leaves(kind.value_type)
    return 1


def _number(kind: Any) -> str | None:
    """The numpy dtype name of an Arrow number or boolean type, else None."""
    name = "float16" if str(kind) == "halffloat" else "float32" if str(kind) == "float" else (
        "float64" if str(kind) == "double" else str(kind))  # fmt: skip
    return name if name in _NUMBERS else None


def _encoding(kind: Any, may_be_null: bool) -> str:
    """A column's encoding from its Arrow type and whether the footers allow a null in it."""
    pa = require("pyarrow", "parquet", "reading Parquet files")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "str"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "bytes"
    if not may_be_null:
        number = _number(kind)
        if number is not None:
            return number
        shape = []
        inner = kind
        while pa.types.is_fixed_size_list(inner):
            shape.append(inner.list_size)
            inner = inner.value_type
        if shape and _number(inner) is not None:
            return f"ndarray:{_number(inner)}:{','.join(map(str, shape))}"
        if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _number(kind.value_type):
            return f"ndarray:{_number(kind.value_type)}"
    return f"arrow:{kind}"


def parquet_entries(footers: Sequence[ParquetFooter], shard_bytes: int = SHARD_BYTES) -> list[dict[str, Any]]:
    """The ``index.json`` shard entries of Parquet files, from their footers, in order.

    Every file must have the first one's columns (names and types); a column's encoding is decided
    for the whole dataset (see the module's docstring).

    Raises:
        ShardFormatError: A file's columns differ from the first file's.
    """
    if not footers:
        return []
    schema = footers[0].schema
    for footer in footers[1:]:
        if not footer.schema.equals(schema):
            raise ShardFormatError(
                f"{footer.file} has columns {_describe(footer.schema)}, but {footers[0].file} has "
                f"{_describe(schema)}: the files of one Parquet stream need the same columns and types"
            )
    nulls = [False] * footers[0].metadata.num_columns
    for footer in footers:
        nulls = [a or b for a, b in zip(nulls, footer.leaf_nulls(), strict=True)]
    names, encodings, leaf = [], [], 0
    for field in schema:
        count = _leaves(field.type)
        names.append(field.name)
        encodings.append(_encoding(field.type, any(nulls[leaf : leaf + count])))
        leaf += count
    entries = []
    for footer in footers:
        for groups in _runs(footer, shard_bytes):
            entries.append(_entry(footer, groups, names, encodings))
    return entries


def _describe(schema: Any) -> str:
    return "{" + ", ".join(f"{field.name}: {field.type}" for field in schema) + "}"


def _runs(footer: ParquetFooter, shard_bytes: int) -> list[list[int]]:
    """The file's row groups, in runs of at least ``shard_bytes`` (the last may be smaller)."""
    runs: list[list[int]] = []
    held = 0
    for k in range(footer.metadata.num_row_groups):
        if not runs or held >= shard_bytes:
            runs.append([])
            held = 0
        start, end = footer.row_group_span(k)
        runs[-1].append(k)
        held += end - start
    return runs


def _entry(
    footer: ParquetFooter, groups: list[int], names: list[str], encodings: list[str]
) -> dict[str, Any]:
    meta = footer.metadata
    whole = len(groups) == meta.num_row_groups
    entry: dict[str, Any] = {
        "version": 2,
        "format": "parquet",
        "samples": sum(meta.row_group(k).num_rows for k in groups),
        "compression": None,
        "hashes": [],
        "size_limit": None,
        "column_names": names,
        "column_encodings": encodings,
        "file": footer.file,
        "file_bytes": footer.size,
        "row_groups": groups,
        "footer_sha256": footer.digest,
    }
    if whole:
        entry["raw_data"] = {"basename": footer.file, "bytes": footer.size, "hashes": {}}
        return entry
    spans = [footer.row_group_span(k) for k in groups]
    start, end = spans[0][0], spans[-1][1]
    entry["parts"] = [[footer.file, start, end], [footer.file, footer.tail, footer.size]]
    entry["raw_data"] = {
        "basename": f"{footer.file}.rg{groups[0]}",
        "bytes": end - start + footer.size - footer.tail,
        "hashes": {},
    }
    return entry


# -- reading -------------------------------------------------------------------------------------------


class ParquetPlan:
    """How to read one Parquet shard, from its validated entry."""

    def __init__(self, entry: dict[str, Any], index_path: Path) -> None:
        self.entry = entry
        self.index_path = index_path
        self.columns: dict[str, str] = dict(
            zip(entry["column_names"], entry["column_encodings"], strict=True)
        )
        self.unsafe_columns: list[str] = []

    def open(self, root: Path, validate_hash: str | None, populate: bool = False) -> ParquetShard:
        """Open the shard under ``root``: its fetched file, or (a folder read in place) the Parquet file."""
        entry = self.entry
        local = root / entry["raw_data"]["basename"]
        source = root / entry["file"]
        parts = entry.get("parts")
        if _has_size(local, entry["raw_data"]["bytes"]):
            spans = [(start, end) for _, start, end in parts] if parts else [(0, entry["file_bytes"])]
            path = local
        elif parts and _has_size(source, entry["file_bytes"]):
            spans, path = [(0, entry["file_bytes"])], source
        elif source.exists():
            raise ShardFormatError(
                f"{source} has {source.stat().st_size} bytes, not the {entry['file_bytes']} that "
                f"{self.index_path} was built from: the file changed since it was indexed"
            )
        else:
            raise ShardMissingError(
                f"{local} does not exist (or has not the {entry['raw_data']['bytes']} bytes "
                f"{self.index_path} lists): fetch the shard first"
            )
        if spans == [(0, entry["file_bytes"])]:  # the whole file: pyarrow maps it and reads it natively
            pa = require("pyarrow", "parquet", "reading Parquet files")
            return ParquetShard(path, pa.memory_map(str(path)), self)
        return ParquetShard(path, Spliced(path, entry["file_bytes"], spans), self)


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


class ParquetShard:
    """One open Parquet shard: its row groups decoded into an Arrow table on first read, each column made
    numpy arrays or Python values on first use."""

    def __init__(self, path: Path, file: Any, plan: ParquetPlan) -> None:
        self.path = path
        self._file = file  # a Spliced file, or pyarrow's map of a whole Parquet file
        self._plan = plan
        self._table: Any = None
        self._columns: dict[str, Any] = {}
        self._arrow: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _where(self) -> str:
        entry = self._plan.entry
        return f"{entry['file']} (row groups {entry['row_groups'][0]}-{entry['row_groups'][-1]})"

    def _decoded(self, name: str) -> Any:
        found = self._columns.get(name)
        return found if found is not None else self._load(self._columns, name, convert=True)

    def _arrow_column(self, name: str) -> Any:
        """Column ``name`` as Arrow's (chunked) array, for taking a batch's rows and converting only those."""
        found = self._arrow.get(name)
        return found if found is not None else self._load(self._arrow, name, convert=False)

    def _load(self, cache: dict[str, Any], name: str, convert: bool) -> Any:
        """Column ``name`` into ``cache`` once (the shard's table read first if need be), under the lock;
        ``convert``: as :meth:`_convert` makes it, else Arrow's column."""
        with self._lock:
            if name not in cache:
                if self._table is None:
                    self._table = self._read_table()
                column = self._table.column(name)
                cache[name] = self._convert(name, column) if convert else column
            return cache[name]

    def _read_table(self) -> Any:
        pa = require("pyarrow", "parquet", "reading Parquet files")
        pq = _pa()
        entry, file = self._plan.entry, self._file
        file.seek(entry["file_bytes"] - 8)
        (length,) = struct.unpack("<I", file.read(4))
        file.seek(entry["file_bytes"] - 8 - length)
        tail = file.read(length + 8)
        if hashlib.sha256(tail).hexdigest() != entry["footer_sha256"]:
            raise ShardFormatError(
                f"{self.path}: the footer of {entry['file']} is not the one {self._plan.index_path} was "
                "built from: the file changed since it was indexed"
            )
        try:
            metadata = pq.read_metadata(pa.BufferReader(_MAGIC + tail))
            # One thread, and column chunks read straight from the map: pyarrow's thread pool and its
            # pre-buffered copies made an epoch about twice as slow (allocator churn), in workers too.
            parquet = pq.ParquetFile(file, metadata=metadata, pre_buffer=False)
            return parquet.read_row_groups(entry["row_groups"], use_threads=False)
        except (OSError, ValueError) as exc:
            raise ShardFormatError(f"{self.path}: pyarrow cannot read {self._where()}: {exc}") from None

    def _convert(self, name: str, column: Any) -> Any:
        """A column as a numpy array (array encodings), a list of numpy arrays (``ndarray:<dtype>``) or a
        list of Python values."""
        pa = require("pyarrow", "parquet", "reading Parquet files")
        encoding = self._plan.columns[name]
        if encoding in ("str", "bytes") or encoding.startswith("arrow:"):
            return column.to_pylist()
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        values, shape = array, []
        while pa.types.is_fixed_size_list(values.type) or pa.types.is_list(values.type) or (
            pa.types.is_large_list(values.type)
        ):  # fmt: skip
            if values.null_count:
                break
            if pa.types.is_fixed_size_list(values.type):
                shape.append(values.type.list_size)
            values = values.flatten()
        if values.null_count:
            row = _first_null_row(array)
            raise ShardFormatError(
                f"{self.path}: column {name!r} has a null in row {row} of {self._where()}, though the "
                f"footers' statistics said it has none: it cannot be read as numbers ({encoding}); fix "
                "the file's statistics or rewrite it"
            )
        flat = values.to_numpy(zero_copy_only=False)
        if encoding.count(":") == 2 or ":" not in encoding:
            return flat.reshape(len(array), *shape)
        offsets = array.offsets.to_numpy()  # flatten() kept only this slice's values
        return np.split(flat, offsets[1:-1] - offsets[0])

    def get(self, i: int) -> dict[str, Any]:
        """Row ``i`` of every column, in column order."""
        return {name: self._decoded(name)[i] for name in self._plan.columns}

    def read(
        self, ids: np.ndarray, arrays: Sequence[str], values: Sequence[str], spans: Sequence[str] = ()
    ) -> tuple[dict[str, np.ndarray], dict[str, list[Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Columns of rows ``ids``: ``arrays`` as one numpy array each, ``values`` as lists.

        Strings, bytes and ``arrow:`` values are converted for the rows asked only (a DataLoader worker
        reads every other batch of a shard), unless :meth:`get` converted their whole column already."""
        got = {name: self._decoded(name)[ids] for name in arrays}
        listed: list[int] | None = None
        found = {}
        for name in values:
            column = self._columns.get(name)
            encoding = self._plan.columns[name]
            if column is None and (encoding in ("str", "bytes") or encoding.startswith("arrow:")):
                found[name] = self._arrow_column(name).take(ids).to_pylist()
                continue
            column = self._decoded(name)
            listed = ids.tolist() if listed is None else listed
            found[name] = [column[i] for i in listed]
        return got, found, {}

    def close(self) -> None:
        """Drop the decoded table and the file's map."""
        with self._lock:
            self._table = None
            self._columns = {}
            self._arrow = {}
            self._file.close()


def _first_null_row(array: Any) -> int:
    pa = require("pyarrow", "parquet", "reading Parquet files")
    values, rows = array, np.arange(len(array))
    while True:
        if values.null_count:
            return int(rows[int(np.argmax(values.is_null().to_numpy(zero_copy_only=False)))])
        if pa.types.is_fixed_size_list(values.type):
            rows = np.repeat(rows, values.type.list_size)
        elif pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            offsets = values.offsets.to_numpy()
            rows = np.repeat(rows, np.diff(offsets))
        else:
            return -1
        values = values.flatten()


class ParquetFormat(ShardFormat):
    """Runs of row groups of Parquet files (see the module's docstring)."""

    name = "parquet"
    capabilities = frozenset({Capability.COLUMNS, Capability.ARRAYS})
    file_keys = ("raw_data",)

    @property
    def label(self) -> str:
        return "a Parquet shard (row groups of a Parquet file)"

    def check_entry(self, entry: dict[str, Any], check: IndexChecker, where: str) -> None:
        names, encodings = check.column_lists(entry, where)
        check.field(entry, "file", where, (str,))
        check.field(entry, "file_bytes", where, (int,))
        check.field(entry, "footer_sha256", where, (str,))
        groups = check.field(entry, "row_groups", where, (list,))
        if not groups or not all(isinstance(k, int) and k >= 0 for k in groups):
            raise check.fail(where, f"row_groups is {groups!r}, expected a list of row group numbers")
        parts = check_parts(entry, check, where)
        if not parts and entry["raw_data"]["bytes"] != entry["file_bytes"]:
            raise check.fail(
                where, "a shard without parts is the whole file: raw_data bytes must be file_bytes"
            )
        if any(file != entry["file"] for file, _, _ in parts):
            raise check.fail(where, f"parts name files other than {entry['file']!r}")

    def plan(self, entry: dict[str, Any], index_path: Path) -> ParquetPlan:
        return ParquetPlan(entry, index_path)

    def array_columns(self, shard: ShardInfo) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        found: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        for name, encoding in shard.columns.items():
            if encoding in _NUMBERS:
                found[name] = (np.dtype(encoding), ())
            elif encoding.count(":") == 2 and encoding.startswith("ndarray:"):
                _, dtype, shape = encoding.split(":")
                found[name] = (np.dtype(dtype), tuple(int(n) for n in shape.split(",")))
        return found


PARQUET_FORMAT = ParquetFormat()
