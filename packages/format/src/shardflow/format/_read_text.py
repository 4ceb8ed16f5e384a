"""The JSONL, CSV, TSV and XSV formats: their index entries checked, and random access to the lines of
one shard (a data file plus a ``.meta`` table)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardflow.format._layout import COUNT, header_size, offsets_array, read_count
from shardflow.format._read_files import (
    check_header,
    check_offsets,
    map_file,
    prepare_file,
    read_file,
    uint32_table,
)
from shardflow.format._text_encodings import TEXT_ENCODINGS, get_text_type
from shardflow.format.errors import IndexFormatError, ShardFormatError
from shardflow.format.formats import ShardFormat
from shardflow.format.index import FILE_KEYS

if TYPE_CHECKING:
    from shardflow.format.index import IndexChecker

__all__ = ["JSON_FORMAT", "CSV_FORMAT", "TSV_FORMAT", "XSV_FORMAT", "TextFormat", "TextPlan", "TextShard"]

_SEPARATORS = {"csv": ",", "tsv": "\t"}


class TextPlan:
    """How to decode the lines of one text shard, worked out once from its (validated) index entry.

    Args:
        entry: The shard's entry (format ``json``, ``csv``, ``tsv`` or ``xsv``), as
            :func:`shardflow.format.index.read_index` returns it.
        index_path: The index file, for error messages.

    Raises:
        IndexFormatError: An ``xsv`` shard with an empty separator.
    """

    def __init__(self, entry: dict[str, Any], index_path: Path) -> None:
        self.entry = entry
        self.unsafe_columns: list[str] = []  # text shards hold only str, int and float
        fmt = entry["format"]
        if fmt == "json":
            self.columns: dict[str, str] = dict(entry["columns"])
            self.header: dict[str, Any] = {"columns": self.columns}
            self.decode_line: Callable[[bytes], dict[str, Any]] = _decode_json
            return
        names: list[str] = entry["column_names"]
        encodings: list[str] = entry["column_encodings"]
        separator: str = _SEPARATORS.get(fmt) or entry["separator"]
        if not separator:
            raise IndexFormatError(
                f"{index_path}: shard {entry['raw_data']['basename']}: the separator is empty; "
                "rewrite the index"
            )
        converters = [get_text_type(encoding, name) for name, encoding in zip(names, encodings, strict=True)]
        self.columns = dict(zip(names, encodings, strict=True))
        self.header = {"column_names": names, "column_encodings": encodings}
        self.decode_line = _XSVLine(names, converters, separator, entry["newline"])

    def open(self, root: Path, validate_hash: str | None, populate: bool = False) -> TextShard:
        """Open the shard under ``root``, decompressing and validating both of its files as needed."""
        entry = self.entry
        compression = entry.get("compression")
        data_path = prepare_file(root, entry["raw_data"], entry.get("zip_data"), compression, validate_hash)
        meta_path = prepare_file(root, entry["raw_meta"], entry.get("zip_meta"), compression, validate_hash)
        data = map_file(data_path, entry["raw_data"], populate)
        meta = read_file(meta_path)
        return TextShard(data_path, data, meta_path, meta, self, entry["samples"])


def _decode_json(line: bytes) -> dict[str, Any]:
    sample = json.loads(line)
    if type(sample) is not dict:
        raise ValueError(f"the line holds a {type(sample).__name__}, not an object")
    return sample


class _XSVLine:
    """Decodes one line of separated values into a sample."""

    def __init__(
        self, names: list[str], converters: Sequence[Callable[[str], Any]], separator: str, newline: str
    ) -> None:
        self.steps = tuple(zip(names, converters, strict=True))
        self.separator = separator
        self.newline = newline

    def __call__(self, line: bytes) -> dict[str, Any]:
        text = line.decode("utf-8")
        if not text.endswith(self.newline):
            raise ValueError("the line does not end with the index's newline")
        parts = text[: len(text) - len(self.newline)].split(self.separator)
        if len(parts) != len(self.steps):
            raise ValueError(f"the line has {len(parts)} fields, not {len(self.steps)}")
        sample = {}
        for (name, convert), part in zip(self.steps, parts, strict=True):  # a loop: no frame per call
            sample[name] = convert(part)
        return sample


class TextShard:
    """The samples of one open text shard.

    The ``.meta`` file is ``uint32 samples``, ``uint32 offsets[samples + 1]`` into the data file (one
    line per sample), then the shard's JSON config.
    Both files are validated when opening; ``get(i)`` expects ``0 <= i < samples``.
    """

    def __init__(
        self, path: Path, data: Any, meta_path: Path, meta: bytes, plan: TextPlan, samples: int
    ) -> None:
        self.path = path
        table_end = header_size(samples)
        if len(meta) < table_end or read_count(meta) != samples:
            raise ShardFormatError(
                f"{meta_path} is corrupt or truncated: it does not start with a count of {samples} samples "
                f"and their {samples + 1} offsets, as its index says; copy it again"
            )
        check_header(meta_path, meta[table_end:], plan.header)
        check_offsets(path, offsets_array(meta, samples), 0, len(data))
        self._offsets = uint32_table(meta, COUNT.size, samples + 1)
        self._data = data
        self._decode = plan.decode_line

    def get(self, i: int) -> dict[str, Any]:
        """Decode sample ``i`` of this shard."""
        line = self._data[self._offsets[i] : self._offsets[i + 1]]
        try:
            return self._decode(line)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ShardFormatError(
                f"{self.path}: line of sample {i} cannot be decoded ({exc}): the file is corrupt; "
                "copy it again"
            ) from exc

    def close(self) -> None:
        """Unmap the data file."""
        if hasattr(self._data, "close"):
            self._data.close()


class TextFormat(ShardFormat):
    """Text shards, one sample per line: ``json`` (JSON objects), ``csv``, ``tsv`` and ``xsv`` (values
    split by a separator the entry names). No capabilities: samples are parsed line by line.

    Args:
        name: One of ``json``, ``csv``, ``tsv``, ``xsv``.
    """

    file_keys = FILE_KEYS

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def label(self) -> str:
        return f"a {self.name} shard (a text shard, one sample per line)"

    def check_entry(self, entry: dict[str, Any], check: IndexChecker, where: str) -> None:
        if self.name == "json":
            columns = check.field(entry, "columns", where, (dict,))
            pairs = list(columns.items())
        else:
            pairs = list(zip(*check.column_lists(entry, where), strict=True))
        for name, encoding in pairs:
            if not isinstance(encoding, str) or encoding not in TEXT_ENCODINGS:
                raise check.fail(
                    where, f"column {name!r} has encoding {encoding!r}; valid: {sorted(TEXT_ENCODINGS)}"
                )
        check.field(entry, "newline", where, (str,))
        if self.name == "xsv":
            check.field(entry, "separator", where, (str,))

    def plan(self, entry: dict[str, Any], index_path: Path) -> TextPlan:
        return TextPlan(entry, index_path)


JSON_FORMAT = TextFormat("json")
CSV_FORMAT = TextFormat("csv")
TSV_FORMAT = TextFormat("tsv")
XSV_FORMAT = TextFormat("xsv")
