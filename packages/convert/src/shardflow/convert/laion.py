"""laion: img2dataset's output (LAION-400M) into MDS, with the columns of mosaicml-streaming's converter.

The input is one or more folders written by img2dataset (or some of their ``.parquet`` files). Each of its
shards is ``NNNNN.parquet``, one row per URL (``url``, ``caption``, ``key``, ``status``,
``error_message``, ``width``, ``height``, ``original_width``, ``original_height``, ``exif``, and the
columns it was told to keep, LAION's ``NSFW``, ``similarity`` and ``LICENSE``), and its images: in the
Parquet file's ``jpg`` column (``--output_format parquet``), in ``NNNNN.tar`` (``webdataset``) or in
the folder ``NNNNN/`` (``files``), as ``<key>.jpg`` beside ``<key>.txt`` and ``<key>.json``. Only
downloaded rows (``status`` ``success``) have an image there.

One sample per row, shards in name order, rows in order, failed downloads included (with an empty
``jpg``) as the reference writes them, unless ``--only-success``. Columns: ``nsfw``, ``license``,
``caption``, ``url``, ``key``, ``status``, ``error_message``, ``exif`` (``str``), ``similarity``
(``float64``), ``width``, ``height``, ``original_width``, ``original_height`` (``int32``) and ``jpg``
(``bytes``: the image file as stored). A null (or an absent column) is stored as ``''``, ``0``, NaN or
``b''``. A Parquet file without ``url``, ``key`` and ``status``, or whose images are in none of the three
places, is an error; so is a downloaded row whose image is missing. Needs pyarrow (``[parquet]``).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from shardflow.convert import _cli
from shardflow.convert._deps import require
from shardflow.convert._plan import Segment, Unit, find_files
from shardflow.convert._run import Converter, Options, Plan, Summary, convert
from shardflow.convert.errors import InputError
from shardflow.convert.webdataset import _groups

__all__ = ["LAION", "laion_to_mds", "main", "COLUMNS"]

logger = logging.getLogger(__name__)

COLUMNS = {
    "nsfw": "str",
    "similarity": "float64",
    "license": "str",
    "caption": "str",
    "url": "str",
    "key": "str",
    "status": "str",
    "error_message": "str",
    "width": "int32",
    "height": "int32",
    "original_width": "int32",
    "original_height": "int32",
    "exif": "str",
    "jpg": "bytes",
}
"""The columns mosaicml-streaming's LAION-400M converter writes, in its order."""

_SOURCE = {"nsfw": "NSFW", "license": "LICENSE"}  # the Parquet column of an output column, where it differs
_REQUIRED = ("url", "key", "status")
_EMPTY: dict[str, Any] = {"str": "", "float64": float("nan"), "int32": 0, "bytes": b""}


def _source(column: str) -> str:
    return _SOURCE.get(column, column)


def _value(value: Any, encoding: str) -> Any:
    """A Parquet value as the column's encoding takes it; a null (or NaN in an integer column) is empty."""
    if value is None or (encoding == "int32" and value != value):
        return _EMPTY[encoding]
    if encoding == "str":
        return value if isinstance(value, str) else str(value)
    if encoding == "float64":
        return float(value)
    return int(value) if encoding == "int32" else value


@dataclass
class LAION(Converter):
    """Converts img2dataset output: ``inputs`` are its folders or ``.parquet`` files."""

    inputs: list[str]
    only_success: bool = False
    name = "laion"

    def __post_init__(self) -> None:
        self._row = 0  # of the sample read last
        self._images = self._bytes = 0  # of the segment read last

    def plan(self) -> Plan:
        pq = require("pyarrow.parquet", "parquet", "laion")
        files = find_files(
            self.inputs, "laion", "img2dataset output folders or .parquet files", (".parquet",), (".", "_")
        )
        units: list[Unit] = []
        inputs: list[str] = []
        absent: set[str] = set()
        for path in files:
            try:
                metadata = pq.read_metadata(path)
            except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
                raise InputError(f"laion: {path} is not a readable Parquet file ({err})") from None
            names = set(metadata.schema.names)
            lacking = [name for name in _REQUIRED if name not in names]
            if lacking:
                raise InputError(
                    f"laion: {path} lacks the column(s) {lacking}: it is not a shard of img2dataset"
                )
            absent |= {_source(c) for c in COLUMNS if c != "jpg" and _source(c) not in names}
            stem = path[: -len(".parquet")]
            if "jpg" in names:
                units.append(Unit(path, metadata.num_rows, True, info=[path, "parquet"]))
            elif os.path.isfile(stem + ".tar"):
                units.append(Unit(stem + ".tar", metadata.num_rows, True, info=[path, "tar"]))
                inputs.append(path)
            elif os.path.isdir(stem):
                units.append(Unit(path, metadata.num_rows, True, info=[path, "files"]))
                inputs += sorted(os.path.join(stem, n) for n in os.listdir(stem) if n.endswith(".jpg"))
            else:
                raise InputError(
                    f"laion: {path} has no jpg column, and neither {stem}.tar nor the folder {stem}/ is "
                    "there: "
                    "give img2dataset output of the parquet, webdataset or files format"
                )
        if absent:
            logger.warning(
                "laion: no column %s in the input: stored as empty values", ", ".join(sorted(absent))
            )
        total = None if self.only_success else sum(unit.size for unit in units)
        return Plan(units, dict(COLUMNS), samples=total, inputs=inputs)

    def config(self) -> dict[str, Any]:
        return {"inputs": [os.path.abspath(p) for p in self.inputs], "--only-success": self.only_success}

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        pq = require("pyarrow.parquet", "parquet", "laion")
        path, kind = segment.unit.info
        file = pq.ParquetFile(path)
        present = [c for c in columns if _source(c) in file.schema_arrow.names]
        images = _Images(segment.unit.name, kind, path)
        self._images = self._bytes = 0
        first = 0
        for group in range(file.metadata.num_row_groups):
            rows = file.metadata.row_group(group).num_rows
            start, stop = max(segment.start, first), min(segment.stop, first + rows)
            if start < stop:
                read = file.read_row_group(group, columns=[_source(c) for c in present])
                table = read.slice(start - first, stop - start)
                values = {c: table.column(_source(c)).to_pylist() for c in present}
                for k in range(stop - start):
                    self._row = start + k
                    sample = {
                        c: _value(values[c][k], e) if c in values else _EMPTY[e] for c, e in columns.items()
                    }
                    if self.only_success and sample["status"] != "success":
                        continue
                    if kind != "parquet" and sample["status"] == "success":
                        sample["jpg"] = images.get(sample["key"], self._row)
                    self._images += bool(sample["jpg"])
                    self._bytes += len(sample["jpg"])
                    yield sample
            first += rows
            if first >= segment.stop:
                break

    def where(self, segment: Segment, produced: int) -> str:
        return f"{segment.unit.info[0]} (row {self._row})"

    def tally(self, segment: Segment, produced: int) -> tuple[str, dict[str, int]]:
        rows = segment.stop - segment.start
        return segment.unit.info[0], {"rows": rows, "images": self._images, "bytes": self._bytes}


class _Images:
    """The images of one shard stored beside its Parquet file (``NNNNN.tar`` or ``NNNNN/``), by key, for
    keys asked in the order img2dataset wrote them."""

    def __init__(self, name: str, kind: str, parquet: str) -> None:
        self.name, self.kind, self.parquet = name, kind, parquet
        self._members = _groups(name) if kind == "tar" else None

    def get(self, key: str, row: int) -> bytes:
        """The ``jpg`` bytes of ``key`` (the Parquet file's row ``row``, a downloaded one)."""
        lost = f"laion: {self.parquet} row {row}: key {key!r} is downloaded, but "
        if self._members is None:
            try:
                with open(os.path.join(self.parquet[: -len(".parquet")], f"{key}.jpg"), "rb") as image:
                    return image.read()
            except OSError as err:
                raise InputError(lost + f"its image cannot be read ({err})") from None
        for found, members in self._members:
            if found == key:
                if "jpg" not in members:
                    raise InputError(lost + f"{self.name} has no {key}.jpg (it has {sorted(members)})")
                return members["jpg"]
        raise InputError(lost + f"{self.name} has no {key}.jpg after the key before it")


def laion_to_mds(inputs: list[str], options: Options, *, only_success: bool = False) -> Summary:
    """Convert img2dataset output folders (or their ``.parquet`` files) into MDS at ``options.out``."""
    return convert(LAION(inputs, only_success), options)


def _parser() -> argparse.ArgumentParser:
    cli = _cli.parser("laion", __doc__ or "")
    cli.add_argument("inputs", nargs="+", help="img2dataset output folders, or some of their .parquet files")
    cli.add_argument(
        "--only-success",
        action="store_true",
        help="write only the downloaded rows (status 'success'); default: every row, as the reference",
    )
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.laion FOLDER... --out OUT``."""
    return _cli.main(_parser(), lambda args: LAION(args.inputs, args.only_success), argv)


if __name__ == "__main__":
    raise SystemExit(main())
