"""webdataset: WebDataset ``.tar`` shards into MDS, one sample per key.

Members are grouped by key: a member's path up to the first dot of its file name (``a/b/0001.seg.png``
has key ``a/b/0001`` and column ``seg.png``); members of one sample follow each other in the tar. Each
extension is a column: ``.txt``, ``.json`` and ``.cls`` as ``str`` (UTF-8), anything else as ``bytes``,
stored as they are. ``--columns name:encoding,...`` overrides them with ``str``, ``bytes``, ``int``
(parsed from text, e.g. ``cls:int``) or ``json`` (parsed). The columns are those of the first sample; a
sample with other members is an error naming the tar and the key. Tars go whole to one partition.
A tar that ends before its end-of-archive marker (truncated), or a ``.tar.gz`` whose gzip data is
truncated or corrupt, is an error naming the tar and the byte offset. The summary lists, per tar, the
samples and bytes read.
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from shardflow.convert import _cli
from shardflow.convert._compressed import open_input
from shardflow.convert._plan import Segment, Unit, find_files
from shardflow.convert._run import Converter, Options, Plan, Summary, convert
from shardflow.convert.errors import InputError

__all__ = ["WebDataset", "webdataset_to_mds", "main", "split_name"]

SUFFIXES = (".tar", ".tar.gz", ".tgz")
_TEXT = ("txt", "json", "cls")
_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "bytes": bytes,
    "str": lambda data: data.decode("utf-8"),
    "int": lambda data: int(data.decode("utf-8").strip()),
    "json": json.loads,
}


def split_name(name: str) -> tuple[str, str]:
    """``'a/b/0001.seg.png'`` -> ``('a/b/0001', 'seg.png')``: the key, and the extension (the column)."""
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


class _Cut(Exception):
    """The tar ends (or breaks) where a header should be, before its end-of-archive marker."""


class _Strict(tarfile.TarInfo):
    """A member header reader for which only the end-of-archive marker (a zero block) ends a tar.

    tarfile itself ends the iteration quietly at a missing, short or malformed header: a truncated tar.
    """

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        try:
            return super().fromtarfile(archive)
        except tarfile.HeaderError as err:
            if type(err).__name__ == "EOFHeaderError":  # a zero block: the end marker
                raise
            raise _Cut(
                f"at byte {archive.offset} of the tar, where a member header or the end marker should be: "
                f"{err or 'end of file'}"
            ) from None


def _groups(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The ``(key, {extension: bytes})`` samples of one tar, in order; read to the end of the file."""
    stream = open_input(path, "webdataset")
    try:
        archive = tarfile.open(fileobj=stream, mode="r|", tarinfo=_Strict)
    except (OSError, tarfile.TarError, _Cut) as err:
        stream.close()
        raise InputError(f"webdataset: {path} is not a readable tar ({err})") from None
    with stream, archive:
        key: str | None = None
        members: dict[str, bytes] = {}
        try:
            for member in archive:
                if not member.isfile() or split_name(member.name)[0].rpartition("/")[2].startswith("."):
                    continue
                name_key, extension = split_name(member.name)
                if name_key != key and members:
                    yield key or "", members
                    members = {}
                key = name_key
                if extension in members:
                    raise InputError(f"webdataset: {path}: key {key!r} has two {extension!r} members")
                file = archive.extractfile(member)
                members[extension] = file.read() if file is not None else b""
        except (tarfile.TarError, _Cut) as err:
            raise InputError(
                f"webdataset: {path} is truncated or corrupt after key {key!r} ({err}): replace it with a "
                "whole copy"
            ) from None
        while stream.read(1 << 20):  # the rest (padding): a truncated compressed stream raises here
            pass
        if members:
            yield key or "", members


@dataclass
class WebDataset(Converter):
    """Converts WebDataset tars; ``inputs`` are ``.tar`` files or folders of them."""

    inputs: list[str]
    columns: dict[str, str] = field(default_factory=dict)
    name = "webdataset"

    def __post_init__(self) -> None:
        self._key = ""

    def plan(self) -> Plan:
        files = find_files(self.inputs, "webdataset", ".tar files", SUFFIXES, ())
        bad = {name: encoding for name, encoding in self.columns.items() if encoding not in _DECODERS}
        if bad:
            raise InputError(f"webdataset: --columns {bad}: a member can be stored as {sorted(_DECODERS)}")
        first = next(_groups(files[0]), None)
        if first is None:
            raise InputError(f"webdataset: {files[0]} holds no files")
        key, members = first
        unknown = sorted(set(self.columns) - set(members))
        if unknown:
            raise InputError(
                f"webdataset: --columns names {unknown}; the first sample ({key!r}) has {sorted(members)}"
            )
        columns = {
            name: self.columns.get(name) or ("str" if name.endswith(_TEXT) else "bytes")
            for name in sorted(members)
        }
        return Plan([Unit(path, os.path.getsize(path)) for path in files], columns)

    def config(self) -> dict[str, Any]:
        return {"inputs": [os.path.abspath(p) for p in self.inputs], "--columns": self.columns}

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        path = segment.unit.name
        decoders = [(name, _DECODERS[encoding]) for name, encoding in columns.items()]
        for key, members in _groups(path):
            self._key = key
            if len(members) != len(decoders) or any(name not in members for name, _ in decoders):
                raise InputError(
                    f"webdataset: {path}: sample {key!r} has members {sorted(members)}, but the columns "
                    f"(from the first sample) are {sorted(columns)}"
                )
            try:
                yield {name: decode(members[name]) for name, decode in decoders}
            except ValueError as err:  # UnicodeDecodeError, JSONDecodeError, int() included
                raise InputError(f"webdataset: {path}: sample {key!r}: cannot decode ({err})") from None

    def where(self, segment: Segment, produced: int) -> str:
        return f"{segment.unit.name} (sample {self._key!r})"

    def tally(self, segment: Segment, produced: int) -> tuple[str, dict[str, int]]:
        return segment.unit.name, {"samples": produced, "bytes": segment.unit.size}


def webdataset_to_mds(
    inputs: list[str], options: Options, *, columns: dict[str, str] | None = None
) -> Summary:
    """Convert WebDataset tars (files or folders) into an MDS dataset at ``options.out``."""
    return convert(WebDataset(inputs, columns or {}), options)


def _parser() -> argparse.ArgumentParser:
    cli = _cli.parser("webdataset", __doc__ or "")
    cli.add_argument("inputs", nargs="+", help=".tar files or folders, in the order to convert them")
    cli.add_argument("--columns", help="extension:encoding,... with encodings str, bytes, int or json")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.webdataset TAR... --out OUT``."""
    return _cli.main(_parser(), lambda args: WebDataset(args.inputs, _parse(args.columns)), argv)


def _parse(text: str | None) -> dict[str, str]:
    """``--columns`` without the MDS encoding check: ``int`` and ``json`` here name how to parse text."""
    pairs = [piece.split(":", 1) for piece in (text or "").split(",") if piece.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise InputError(f"--columns {text!r}: give extension:encoding,... (e.g. cls:int,json:json)")
    return {name.strip(): encoding.strip() for name, encoding in pairs}


if __name__ == "__main__":
    raise SystemExit(main())
