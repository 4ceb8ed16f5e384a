"""WebDataset ``.tar`` shards: members grouped into samples as the webdataset library groups them, found by
walking the tar's headers only (locally from the map, remotely through ranged reads), read at random.

A member's key is its path up to the first dot of its file name and its field is the rest, lowercased
(``a/b/0001.seg.png``: key ``a/b/0001``, field ``seg.png``). Consecutive members with one key make one
sample ``{"__key__": key, field: bytes, ...}`` (plus ``"__url__"`` when the index entry names the tar's
URL). Only regular files count; names without a dot in the file name and ``__...__`` metadata members are
skipped; a field twice in one sample is an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shardflow.format._read_files import map_file, prepare_file
from shardflow.format.errors import ShardFormatError
from shardflow.format.formats import ShardFormat
from shardflow.format.index import INDEX_VERSION

if TYPE_CHECKING:
    from shardflow.format.index import IndexChecker

__all__ = ["WEBDATASET_FORMAT", "RangeRead", "TarMembers", "WebDatasetFormat", "scan_tar", "tar_entry"]

logger = logging.getLogger(__name__)

RangeRead = Callable[[int, int], bytes]
"""Reads bytes ``[start, end)`` of one file (a local map or a ranged GET); may return fewer at its end."""

_Read = Callable[[int, int], bytes]  # (offset, count): what the walk reads through
_BLOCK = 512
_WINDOW = 1 << 18  # bytes fetched per remote read: the next headers usually lie in the same window
_REGULAR = frozenset(b"0\x007")  # regular file, old-style regular file, contiguous file
_SKIP_META = re.compile(r"__[^/]*__($|/)")
_KEY_FIELD = re.compile(r"((?:.*/)?[^.]+)\.([^/]*)")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class TarMembers:
    """The samples of one tar: each sample's key and its members' fields, data offsets and sizes.

    Attributes:
        keys: The key of each sample.
        first: Index of each sample's first member, plus the member count at the end (``samples + 1``).
        fields: The field (extension) of each member.
        starts: Where each member's data starts in the tar (int64).
        sizes: Each member's size (int64).
    """

    keys: list[str]
    first: np.ndarray
    fields: list[str]
    starts: np.ndarray
    sizes: np.ndarray

    @property
    def columns(self) -> list[str]:
        """Every field, in the order they first appear."""
        return list(dict.fromkeys(self.fields))


class _Window:
    """Reads of one file through ``read``, served from the last window fetched when they fall inside it."""

    def __init__(self, read: RangeRead, size: int, window: int) -> None:
        self.read, self.size, self.window = read, size, window
        self.start, self.data = 0, b""

    def __call__(self, offset: int, n: int) -> bytes:
        end = offset + n
        if not (self.start <= offset and end <= self.start + len(self.data)):
            self.start = offset
            self.data = self.read(offset, min(self.size, offset + max(n, self.window)))
        return self.data[offset - self.start : end - self.start]


def _octal(field: bytes, name: str, offset: int) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for big numbers
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ShardFormatError(
            f"{name}: the tar header at byte {offset} is corrupt (a number field reads {text!r}); copy it "
            "again"
        ) from None


def _pax_records(data: bytes, name: str, offset: int) -> dict[str, str]:
    """The ``length key=value\\n`` records of a PAX header's data."""
    records, pos = {}, 0
    while pos < len(data) and data[pos : pos + 1] not in (b"", b"\0"):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
            key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        except ValueError:
            raise ShardFormatError(
                f"{name}: the PAX header at byte {offset} is corrupt; copy the tar again"
            ) from None
        if length <= 0:
            raise ShardFormatError(f"{name}: the PAX header at byte {offset} is corrupt; copy the tar again")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class _Checksums:
    """The headers a walk passed, their checksums checked a batch at a time with numpy (a header's bytes
    summed with its checksum field as spaces, as unsigned or, as some old tars wrote it, signed chars)."""

    BATCH = 4096

    def __init__(self, name: str) -> None:
        self.name = name
        self.headers: list[bytes] = []
        self.offsets: list[int] = []

    def add(self, offset: int, header: bytes) -> None:
        self.headers.append(header)
        self.offsets.append(offset)
        if len(self.headers) >= self.BATCH:
            self.check()

    def check(self) -> None:
        """Raise for the first header passed whose checksum does not match; forget those checked."""
        if not self.headers:
            return
        headers, offsets = self.headers, self.offsets
        self.headers, self.offsets = [], []
        block = np.frombuffer(b"".join(headers), np.uint8).reshape(len(headers), _BLOCK)
        field = block[:, 148:156]
        unsigned = block.sum(1, dtype=np.int64) - field.sum(1, dtype=np.int64) + 256
        signed = block.view(np.int8).sum(1, dtype=np.int64) - field.view(np.int8).sum(1, dtype=np.int64) + 256
        stored = _stored_checksums(field)
        for row in np.flatnonzero(stored < 0).tolist():  # other layouts than tar's usual "%06o\\0 "
            stored[row] = _octal(headers[row][148:156], self.name, offsets[row])
        bad = np.flatnonzero((stored != unsigned) & (stored != signed))
        if bad.size:
            raise ShardFormatError(
                f"{self.name}: no valid tar header at byte {offsets[int(bad[0])]} (checksum mismatch): the "
                "file is not a tar, or it is corrupt; copy it again"
            )


def _stored_checksums(fields: np.ndarray) -> np.ndarray:
    """The checksum fields (rows of 8 bytes) written as six octal digits then a NUL or a space, as numbers;
    -1 for the rows written otherwise."""
    digits = fields[:, :6].astype(np.int64) - ord("0")
    usual = ((digits >= 0) & (digits < 8)).all(1) & ((fields[:, 6] == 0) | (fields[:, 6] == 32))
    values = digits @ (8 ** np.arange(5, -1, -1, dtype=np.int64))
    return np.where(usual, values, -1)


def _walk(read: _Read, size: int, name: str) -> list[tuple[str, int, int]]:
    """Every regular member of the tar as ``(path, data offset, size)``, from its headers only.

    Checksums are checked in batches (see :class:`_Checksums`), and before any other error is raised: a
    header that does not check out is reported as such rather than by what its garbage led to."""
    checksums = _Checksums(name)
    try:
        members, cut = _walk_headers(read, size, name, checksums)
    except ShardFormatError:
        checksums.check()
        raise
    checksums.check()
    if cut is None:
        return members
    raise ShardFormatError(
        f"{name} is truncated: it ends inside the member whose header is at byte {cut}, before its "
        "end-of-archive marker; copy it again"
    )


def _walk_headers(
    read: _Read, size: int, name: str, checksums: _Checksums
) -> tuple[list[tuple[str, int, int]], int | None]:
    """The members :func:`_walk` finds, and where the header of the member the tar ends inside is (None
    when it is whole); each header goes to ``checksums``."""
    members: list[tuple[str, int, int]] = []
    global_pax: dict[str, str] = {}
    pending: dict[str, str] = {}  # the next member's overrides: a PAX 'x' header or a GNU long name
    add = checksums.add
    offset = at = 0
    while offset + _BLOCK <= size:
        at = offset
        header = read(offset, _BLOCK)
        if len(header) < _BLOCK:
            return members, at
        if header[0] == 0 and header.count(0) == _BLOCK:  # end-of-archive marker
            return members, None
        add(offset, header)
        kind = header[156]
        field = header[124:135]
        if field.isdigit() and header[135] in (0, 32):  # the usual 11 octal digits: parsed at once
            try:
                length = int(field, 8)
            except ValueError:
                length = _octal(header[124:136], name, offset)
        else:
            length = _octal(header[124:136], name, offset)
        data_at = offset + _BLOCK
        offset = data_at + -(-length // _BLOCK) * _BLOCK
        if kind in b"xgLK":
            data = read(data_at, length)
            if len(data) < length:
                return members, at
            if kind == 120:  # 'x'
                if b"path=" in data or b"size=" in data:  # else only times and owners: nothing to read
                    pending.update(_pax_records(data, name, data_at - _BLOCK))
            elif kind == 103:  # 'g'
                global_pax.update(_pax_records(data, name, data_at - _BLOCK))
            elif kind == 76:  # 'L'
                pending["path"] = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        path = None
        if pending or global_pax:
            overrides = {**global_pax, **pending}
            pending = {}
            if "size" in overrides:
                try:
                    length = int(overrides["size"])
                except ValueError:
                    raise ShardFormatError(
                        f"{name}: the PAX header before byte {data_at} gives size {overrides['size']!r}; "
                        "copy the tar again"
                    ) from None
                offset = data_at + -(-length // _BLOCK) * _BLOCK
            path = overrides.get("path")
        if kind not in _REGULAR:
            continue
        if path is None:
            path = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if header[345] != 0 and header[257:262] == b"ustar":
                prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                path = f"{prefix}/{path}"
        if data_at + length > size:
            return members, at
        members.append((path, data_at, length))
    # No end-of-archive marker: whole when the last member ends the file (tar accepts that too).
    return members, None if offset == size else at


def scan_tar(read: RangeRead, size: int, name: str, window: int = _WINDOW) -> TarMembers:
    """The samples of a tar of ``size`` bytes, reading its headers through ``read`` (see :data:`RangeRead`).

    Each request fetches ``window`` bytes (256 KiB) from a header on, so the next headers of small members
    come with it; a local map passes a window of one header.

    Raises:
        ShardFormatError: The file is gzip-compressed, is not a tar, is truncated, or holds a field twice
            in one sample; the message names ``name``.
    """
    if size >= 2 and read(0, 2) == _GZIP_MAGIC:
        raise _gzipped(name)
    if window <= _BLOCK:
        members = _walk(lambda offset, n: read(offset, offset + n), size, name)
    else:
        members = _walk(_Window(read, size, window), size, name)
    keys: list[str] = []
    first: list[int] = []
    fields: list[str] = []
    starts: list[int] = []
    sizes: list[int] = []
    seen: set[str] = set()
    for path, start, length in members:
        base = path.rpartition("/")[2]
        if "/" not in path and base.startswith("__") and base.endswith("__") or _SKIP_META.match(path):
            continue
        match = _KEY_FIELD.fullmatch(path)
        if match is None:
            continue
        key, field = match.group(1), match.group(2).lower()
        if not keys or key != keys[-1]:
            keys.append(key)
            first.append(len(fields))
            seen = set()
        elif field in seen:
            raise ShardFormatError(
                f"{name}: member {path!r} repeats field {field!r} of sample {key!r}; a sample holds each "
                "field once (the webdataset library refuses it too)"
            )
        seen.add(field)
        fields.append(field)
        starts.append(start)
        sizes.append(length)
    first.append(len(fields))
    return TarMembers(
        keys, np.array(first, np.int64), fields, np.array(starts, np.int64), np.array(sizes, np.int64)
    )


def _gzipped(name: str) -> ShardFormatError:
    return ShardFormatError(
        f"{name} is gzip-compressed: a compressed tar cannot be read at random, so it is refused. Decompress "
        "it into a plain .tar (gunzip keeps the WebDataset layout) or convert it to MDS with "
        "'shardflow-convert webdataset'"
    )


def tar_entry(
    basename: str, size: int, read: RangeRead, url: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """The ``index.json`` entry of a WebDataset tar, built from its headers (read through ``read``).

    Args:
        basename: The tar, relative to the dataset folder.
        size: Its size in bytes.
        read: Reads bytes of the tar: ranged GETs of a remote, or slices of a local file.
        url: What samples give as ``__url__`` (as the webdataset library does); None leaves it out.
        name: How messages name the tar (default: ``basename``).

    Raises:
        ShardFormatError: A ``.tar.gz``/``.tgz`` (refused: it cannot be read at random), a file that is
            not a tar, a truncated one, or a sample with a field twice.
    """
    label = name or basename
    if basename.endswith((".tar.gz", ".tgz", ".gz")):
        raise _gzipped(label)
    members = scan_tar(read, size, label)
    columns = {"__key__": "str", **({"__url__": "str"} if url is not None else {})}
    columns.update(dict.fromkeys(members.columns, "bytes"))
    entry: dict[str, Any] = {
        "version": INDEX_VERSION,
        "format": WEBDATASET_FORMAT.name,
        "samples": len(members.keys),
        "members": len(members.fields),
        "columns": columns,
        "raw_data": {"basename": basename, "bytes": size, "hashes": {}},
        "compression": None,
        "hashes": [],
        "size_limit": None,
    }
    if url is not None:
        entry["url"] = url
    return entry


class TarShard:
    """One open tar: its map and the member table walked from it; ``get(i)`` cuts sample ``i`` out."""

    def __init__(self, path: Path, data: Any, members: TarMembers, url: str | None) -> None:
        self.path = path
        self._data = data
        self._keys = members.keys
        self._first = members.first.tolist()
        self._fields = members.fields
        self._starts = members.starts.tolist()
        self._ends = (members.starts + members.sizes).tolist()
        self._url = url

    def get(self, i: int) -> dict[str, Any]:
        """Sample ``i``: ``__key__`` (and ``__url__``), then each member's bytes under its field."""
        sample: dict[str, Any] = {"__key__": self._keys[i]}
        if self._url is not None:
            sample["__url__"] = self._url
        data, fields, starts, ends = self._data, self._fields, self._starts, self._ends
        for m in range(self._first[i], self._first[i + 1]):
            sample[fields[m]] = data[starts[m] : ends[m]]
        return sample

    def close(self) -> None:
        """Unmap the tar."""
        if hasattr(self._data, "close"):
            self._data.close()


class TarPlan:
    """How to open one tar: its entry's columns, and the counts its walk must find again."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.columns: dict[str, str] = dict(entry["columns"])
        self.unsafe_columns: list[str] = []

    def open(self, root: Path, validate_hash: str | None, populate: bool = False) -> TarShard:
        """Map the tar under ``root`` and walk its headers (a pass over the map, no data read)."""
        info = self.entry["raw_data"]
        path = prepare_file(root, info, None, None, validate_hash)
        data = map_file(path, info, populate)
        members = scan_tar(lambda start, end: data[start:end], len(data), str(path), window=_BLOCK)
        if len(members.keys) != self.entry["samples"] or len(members.fields) != self.entry["members"]:
            if hasattr(data, "close"):
                data.close()
            raise ShardFormatError(
                f"{path} does not match its index: it holds {len(members.keys)} samples in "
                f"{len(members.fields)} members, the index says {self.entry['samples']} in "
                f"{self.entry['members']}; rebuild the index (the tar changed) or copy the tar again"
            )
        return TarShard(path, data, members, self.entry.get("url"))


class WebDatasetFormat(ShardFormat):
    """WebDataset tars, one shard per tar (see the module's docstring for how members make samples).

    An entry has ``columns`` (``__key__`` and maybe ``__url__`` as ``str``, every field as ``bytes``:
    the union over the tar's samples, each of which may hold fewer), ``members`` (the member count) and
    optionally ``url``. Tars are never compressed: a ``.tar.gz`` cannot be read at random.
    """

    name = "webdataset"
    file_keys = ("raw_data",)

    @property
    def label(self) -> str:
        return "a WebDataset tar"

    def check_entry(self, entry: dict[str, Any], check: IndexChecker, where: str) -> None:
        columns = check.field(entry, "columns", where, (dict,))
        for column, encoding in columns.items():
            if encoding not in ("str", "bytes"):
                raise check.fail(where, f"column {column!r} has encoding {encoding!r}; valid: 'bytes', 'str'")
        if check.field(entry, "members", where, (int,)) < entry["samples"]:
            raise check.fail(
                where, f"members is {entry['members']}, fewer than its {entry['samples']} samples"
            )
        if entry.get("compression") is not None:
            raise check.fail(
                where, "compression is set, but a tar is read at random and cannot be compressed"
            )
        if entry.get("url") is not None:
            check.field(entry, "url", where, (str,))

    def plan(self, entry: dict[str, Any], index_path: Path) -> TarPlan:
        return TarPlan(entry)


WEBDATASET_FORMAT = WebDatasetFormat()
