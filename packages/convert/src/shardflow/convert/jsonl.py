"""jsonl: JSON-lines files (``.jsonl``, ``.json``, plain or ``.gz``/``.bz2``/``.zst``) into MDS, one a line.

Each line is a JSON object (C4 and Pile style). The columns are ``--columns name:encoding,...`` or, by
default, the fields of the first object (strings -> ``str``, integers -> ``int64``, floats -> ``float64``,
anything else -> ``json``). ``--map text=content`` fills column ``text`` from field ``content``. A
malformed line (or one without a column's field, or of the wrong type) stops the conversion with its file
and line number and leaves nothing at ``--out``; ``--skip-bad`` skips and counts such lines instead.
Uncompressed files are split between workers by byte ranges; compressed ones go whole to one partition.
A compressed file that is truncated or corrupt stops the conversion naming the file and the byte offset,
with or without ``--skip-bad`` (which skips bad lines, not lost bytes). The summary lists, per file, the
lines and bytes read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from shardflow.convert import _cli
from shardflow.convert._compressed import compression_of, open_input
from shardflow.convert._plan import Segment, Unit, find_files
from shardflow.convert._run import Converter, Options, Plan, Summary, convert
from shardflow.convert.errors import InputError

__all__ = ["JSONLines", "jsonl_to_mds", "main", "SUFFIXES"]

logger = logging.getLogger(__name__)

SUFFIXES = tuple(f"{stem}{kind}" for kind in ("", ".gz", ".bz2", ".zst") for stem in (".jsonl", ".json"))
_COMPRESSED_WEIGHT = 4  # a compressed file weighs this many times its size in the split (a rough ratio)


@dataclass
class JSONLines(Converter):
    """Converts JSON-lines files; ``inputs`` are files or folders (searched for :data:`SUFFIXES`)."""

    inputs: list[str]
    columns: dict[str, str] = field(default_factory=dict)
    mapping: dict[str, str] = field(default_factory=dict)
    skip_bad: bool = False
    name = "jsonl"

    def __post_init__(self) -> None:
        self._line = 0  # where the line being read is: file line number of the segment's first line + read
        self._first_line = -1
        self._offset = 0
        self._path = ""
        self._bytes = 0  # bytes (decompressed) of the lines read in the segment

    def plan(self) -> Plan:
        files = find_files(self.inputs, "jsonl", "JSON-lines files", SUFFIXES)
        units = [
            Unit(path, os.path.getsize(path), True)
            if compression_of(path) is None
            else Unit(path, os.path.getsize(path) * _COMPRESSED_WEIGHT)
            for path in files
        ]
        columns = dict(self.columns) or self._infer(files)
        for name in self.mapping:
            if name not in columns:
                raise InputError(
                    f"jsonl: --map names column {name!r}, which is not among the columns {columns}"
                )
        return Plan(units, columns)

    def config(self) -> dict[str, Any]:
        return {
            "inputs": [os.path.abspath(p) for p in self.inputs],
            "--map": self.mapping,
            "--skip-bad": self.skip_bad,
        }

    def _infer(self, files: list[str]) -> dict[str, str]:
        """The columns of the first JSON object found in ``files``."""
        for path in files:
            with open_input(path, "jsonl") as file:
                for number, line in enumerate(file, 1):
                    if line.strip():
                        record = _parse(line, path, number)
                        renamed = {source: name for name, source in self.mapping.items()}
                        return {renamed.get(key, key): _encoding_of(value) for key, value in record.items()}
        raise InputError(f"jsonl: no JSON lines in {', '.join(files)}: nothing to convert")

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        path = self._path = segment.unit.name
        pairs = [(name, self.mapping.get(name, name)) for name in columns]
        with open_input(path, "jsonl") as file:
            position = _line_start(file, segment.start) if segment.start else 0
            self._offset, self._first_line, self._line = position, -1 if segment.start else 1, 0
            self._bytes = 0
            stop = segment.stop if segment.unit.splittable else None
            read = 0
            for line in file:
                if stop is not None:
                    if position >= stop:
                        break
                    position += len(line)
                self._line = read = read + 1
                self._bytes += len(line)
                try:
                    record = _decode(line.decode("utf-8"))
                    sample = {name: record[source] for name, source in pairs}
                except (ValueError, KeyError, TypeError) as err:
                    if not line.strip():
                        continue
                    if self.skip(self.where(segment, 0), _problem(err), skipped):
                        continue
                    raise InputError(
                        f"jsonl: {self.where(segment, 0)}: {_problem(err)}; fix it or pass --skip-bad"
                    ) from None
                yield sample

    def skip(self, location: str, problem: str, skipped: list[str]) -> bool:
        if self.skip_bad:
            logger.warning("jsonl: skipping %s: %s", location, problem)
            skipped.append(location)
        return self.skip_bad

    def where(self, segment: Segment, produced: int) -> str:
        """``file:line`` of the line being read (counting the lines before the segment when needed)."""
        if self._first_line < 0:
            with open(self._path, "rb") as file:
                self._first_line = 1 + _count_newlines(file, self._offset)
        return f"{self._path}:{self._first_line + self._line - 1}"

    def tally(self, segment: Segment, produced: int) -> tuple[str, dict[str, int]]:
        counts = {"lines": self._line, "bytes": self._bytes}
        if not segment.unit.splittable:  # compressed: read whole, to the last byte
            counts["compressed bytes"] = os.path.getsize(segment.unit.name)
        return segment.unit.name, counts


def _line_start(file: IO[bytes], start: int) -> int:
    """Move ``file`` to the first line that starts at or after byte ``start``; return its offset."""
    file.seek(start - 1)
    if file.read(1) == b"\n":
        return start
    return start + len(file.readline())


def _count_newlines(file: IO[bytes], end: int) -> int:
    count = 0
    while end > 0:
        chunk = file.read(min(end, 1 << 24))
        if not chunk:
            break
        count += chunk.count(b"\n")
        end -= len(chunk)
    return count


_decode = json.JSONDecoder().decode


def _parse(line: bytes, path: str, number: int) -> dict[str, Any]:
    try:
        record = _decode(line.decode("utf-8"))
    except ValueError as err:
        raise InputError(f"jsonl: {path}:{number}: {_problem(err)}") from None
    if not isinstance(record, dict):
        raise InputError(f"jsonl: {path}:{number}: a JSON {type(record).__name__}, not an object")
    return record


def _problem(err: Exception) -> str:
    """What is wrong with a line, from the error that reading it raised."""
    if isinstance(err, json.JSONDecodeError):
        return f"malformed JSON ({err.msg} at column {err.colno})"
    if isinstance(err, UnicodeDecodeError):
        return f"not UTF-8 ({err.reason} at byte {err.start})"
    if isinstance(err, KeyError):
        return f"no field {err.args[0]!r}"
    if isinstance(err, TypeError):
        return "not a JSON object"
    return str(err)


def _encoding_of(value: Any) -> str:
    if isinstance(value, str):
        return "str"
    if isinstance(value, int) and not isinstance(value, bool):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "json"


def jsonl_to_mds(
    inputs: list[str],
    options: Options,
    *,
    columns: dict[str, str] | None = None,
    mapping: dict[str, str] | None = None,
    skip_bad: bool = False,
) -> Summary:
    """Convert JSON-lines files or folders into an MDS dataset at ``options.out``."""
    return convert(JSONLines(inputs, columns or {}, mapping or {}, skip_bad), options)


def _parser() -> argparse.ArgumentParser:
    cli = _cli.parser("jsonl", __doc__ or "")
    cli.add_argument("inputs", nargs="+", help="JSON-lines files or folders, in the order to convert them")
    cli.add_argument("--columns", help="name:encoding,... (default: the first object's fields)")
    cli.add_argument("--map", help="column=field,...: fill a column from a differently named field")
    cli.add_argument(
        "--skip-bad", action="store_true", help="skip (and count) malformed lines instead of failing"
    )
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.jsonl FILE... --out OUT``."""

    def build(args: argparse.Namespace) -> JSONLines:
        return JSONLines(
            args.inputs, _cli.parse_columns(args.columns), _cli.parse_map(args.map), args.skip_bad
        )

    return _cli.main(_parser(), build, argv)


if __name__ == "__main__":
    raise SystemExit(main())
