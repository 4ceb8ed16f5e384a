"""parquet: Parquet files (or folders of them) into MDS, one sample a row, through pyarrow.

Column types map to MDS encodings: ``int8`` .. ``int64`` and ``uint8`` .. ``uint64`` keep their names,
``float16/32/64`` too, ``bool`` -> ``uint8``, ``string`` -> ``str``, ``binary`` -> ``bytes``, a list of
numbers -> ``ndarray:<dtype>`` (``ndarray:<dtype>:<n>`` for a fixed-size list). ``--columns
name:encoding,...`` overrides the mapping of those columns (e.g. ``meta:json`` for a struct); any other
type is an error naming the column and its type. Every file must have the first one's schema. MDS has no
nulls: a null anywhere in a value (the value itself, a list's element, a struct's field) is an error
naming the file, row and column, unless the column is stored as ``json`` or ``pkl`` (which store
``None``). Files are split between workers by rows; the summary lists the rows read per file.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shardflow.convert import _cli
from shardflow.convert._deps import require
from shardflow.convert._nulls import NULLABLE, first_null, null_message
from shardflow.convert._plan import Segment, Unit, find_files
from shardflow.convert._run import Converter, Options, Plan, Summary, convert
from shardflow.convert.errors import InputError

__all__ = ["Parquet", "parquet_to_mds", "encoding_of", "main"]

_NUMBERS = {f"{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)} | {
    "float16",
    "float32",
    "float64",
}


def _pa() -> Any:
    return require("pyarrow", "parquet", "parquet")


def encoding_of(kind: Any) -> str | None:
    """The MDS encoding for the pyarrow type ``kind``, or None when there is none."""
    pa = _pa()
    if pa.types.is_boolean(kind):
        return "uint8"
    if pa.types.is_integer(kind):
        return str(kind)  # int8 .. int64, uint8 .. uint64: the MDS names
    if pa.types.is_floating(kind):
        return {"halffloat": "float16", "float": "float32", "double": "float64"}[str(kind)]
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "str"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return "bytes"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        inner = encoding_of(kind.value_type)
        if inner not in _NUMBERS or pa.types.is_boolean(kind.value_type):
            return None
        return (
            f"ndarray:{inner}:{kind.list_size}" if pa.types.is_fixed_size_list(kind) else f"ndarray:{inner}"
        )
    return None


@dataclass
class Parquet(Converter):
    """Converts Parquet files; ``inputs`` are files or folders (searched for ``*.parquet``)."""

    inputs: list[str]
    columns: dict[str, str] = field(default_factory=dict)
    name = "parquet"

    def plan(self) -> Plan:
        pq = require("pyarrow.parquet", "parquet", "parquet")
        files = find_files(self.inputs, "parquet", "Parquet files", (".parquet",), (".", "_"))
        units, schema = [], None
        for path in files:
            try:
                metadata = pq.ParquetFile(path).metadata
            except Exception as err:  # pyarrow raises ArrowInvalid, OSError...
                raise InputError(f"parquet: {path} is not a readable Parquet file ({err})") from None
            file_schema = metadata.schema.to_arrow_schema()
            if schema is None:
                schema = file_schema
            elif not file_schema.equals(schema):
                raise InputError(
                    f"parquet: {path} has schema {_fields(file_schema)}, unlike {files[0]}'s "
                    f"{_fields(schema)}: convert files of one schema together"
                )
            units.append(Unit(path, metadata.num_rows, True))
        assert schema is not None
        unknown = sorted(set(self.columns) - set(schema.names))
        if unknown:
            raise InputError(
                f"parquet: --columns names {unknown}, which {files[0]} lacks (it has {schema.names})"
            )
        columns = {}
        for item in schema:
            encoding = self.columns.get(item.name) or encoding_of(item.type)
            if encoding is None:
                raise InputError(
                    f"parquet: {files[0]}: column {item.name!r} has type {item.type}, which has no MDS "
                    f"encoding: pass --columns {item.name}:json (or :pkl) to store its Python values"
                )
            columns[item.name] = encoding
        return Plan(units, columns, samples=sum(unit.size for unit in units))

    def config(self) -> dict[str, Any]:
        return {"inputs": [os.path.abspath(p) for p in self.inputs], "--columns": self.columns}

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        pq = require("pyarrow.parquet", "parquet", "parquet")
        path = segment.unit.name
        file = pq.ParquetFile(path)
        first = 0
        names = list(columns)
        for group in range(file.metadata.num_row_groups):
            rows = file.metadata.row_group(group).num_rows
            start, stop = max(segment.start, first), min(segment.stop, first + rows)
            if start < stop:
                table = file.read_row_group(group, columns=names).slice(start - first, stop - start)
                values = [_values(table.column(name), name, columns[name], path, start) for name in names]
                for row in zip(*values, strict=True):
                    yield dict(zip(names, row, strict=True))
            first += rows
            if first >= segment.stop:
                break

    def where(self, segment: Segment, produced: int) -> str:
        return f"{segment.unit.name} (row {segment.start + produced})"

    def tally(self, segment: Segment, produced: int) -> tuple[str, dict[str, int]]:
        return segment.unit.name, {"rows": segment.stop - segment.start}


def _values(column: Any, name: str, encoding: str, path: str, first_row: int) -> list[Any]:
    """The Python values of one column of a table, as the writer takes them for ``encoding``."""
    array = column.combine_chunks()
    found = None if encoding in NULLABLE else first_null(array)
    if found is not None:
        raise InputError(
            f"parquet: {path}: row {first_row + found[0]}: {null_message(name, found[1])}, and MDS has no "
            f"nulls: fill the nulls, or store the column as --columns {name}:json (or :pkl)"
        )
    if encoding.startswith("ndarray"):
        dtype = np.dtype(encoding.split(":")[1]) if ":" in encoding else None
        values = array.values.to_numpy(zero_copy_only=False)
        values = values.astype(dtype, copy=False) if dtype is not None else values
        if hasattr(array, "offsets"):
            offsets = array.offsets.to_numpy().tolist()
        else:  # a fixed-size list
            size = array.type.list_size
            offsets = list(range(array.offset * size, (array.offset + len(array)) * size + 1, size))
        return [values[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    if encoding in _NUMBERS or encoding == "int":
        return array.to_numpy(zero_copy_only=False).tolist()  # type: ignore[no-any-return]
    return array.to_pylist()  # type: ignore[no-any-return]


def _fields(schema: Any) -> str:
    return "{" + ", ".join(f"{item.name}: {item.type}" for item in schema) + "}"


def parquet_to_mds(inputs: list[str], options: Options, *, columns: dict[str, str] | None = None) -> Summary:
    """Convert Parquet files or folders into an MDS dataset at ``options.out``."""
    return convert(Parquet(inputs, columns or {}), options)


def _parser() -> argparse.ArgumentParser:
    cli = _cli.parser("parquet", __doc__ or "")
    cli.add_argument("inputs", nargs="+", help="Parquet files or folders, in the order to convert them")
    cli.add_argument("--columns", help="name:encoding,... overriding the encodings mapped from the schema")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.parquet FILE_OR_FOLDER... --out OUT``."""
    return _cli.main(_parser(), lambda args: Parquet(args.inputs, _cli.parse_columns(args.columns)), argv)


if __name__ == "__main__":
    raise SystemExit(main())
