"""Plain files as samples (format ``files``): each file of a folder is one sample ``{"path", "bytes"}``,
plus ``"label"`` (an ``int``) and ``"label_name"`` when labels come from the parent folders.

A shard is a pack of consecutive files (by name): its ``parts`` name them whole, and its local file is
them joined, as the dataset's cache fetches it; a folder read in place is read file by file. The entry
lists the files' names and sizes (and labels); :func:`files_entries` builds the entries from a listing.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shardflow.format._parts import check_parts
from shardflow.format.errors import ShardMissingError
from shardflow.format.formats import Capability, ShardFormat

if TYPE_CHECKING:
    from shardflow.format.index import IndexChecker
    from shardflow.format.shards import ShardInfo

__all__ = ["FILES_FORMAT", "FilesFormat", "files_entries", "PACK_BYTES", "PACK_FILES"]

PACK_BYTES = 16 << 20
"""A pack closes once it holds this many bytes ..."""
PACK_FILES = 1024
"""... or this many files."""


def files_entries(
    files: Sequence[tuple[str, int]],
    labels: bool = False,
    pack_bytes: int = PACK_BYTES,
    pack_files: int = PACK_FILES,
) -> list[dict[str, Any]]:
    """The ``index.json`` shard entries of the files ``(name, size)`` (names relative to the dataset
    folder, '/'-separated), packed in the order given. With ``labels``, a file's label is the position of
    its parent folder among the sorted parent folders of all of them (``label_name``: that folder's name)."""
    classes = sorted({_parent(name) for name, _ in files}) if labels else []
    number = {name: k for k, name in enumerate(classes)}
    packs: list[list[tuple[str, int]]] = []
    held = 0
    for name, size in files:
        if not packs or held >= pack_bytes or len(packs[-1]) >= pack_files:
            packs.append([])
            held = 0
        packs[-1].append((name, size))
        held += size
    names = ["path", "bytes", *(["label", "label_name"] if labels else [])]
    encodings = ["str", "bytes", *(["int", "str"] if labels else [])]
    entries = []
    for pack in packs:
        entry: dict[str, Any] = {
            "version": 2,
            "format": "files",
            "samples": len(pack),
            "compression": None,
            "hashes": [],
            "size_limit": None,
            "column_names": names,
            "column_encodings": encodings,
            "raw_data": {
                "basename": f"{pack[0][0]}.pack",
                "bytes": sum(size for _, size in pack),
                "hashes": {},
            },
            "parts": [[name, 0, size] for name, size in pack],
        }
        if labels:
            entry["labels"] = [number[_parent(name)] for name, _ in pack]
        entries.append(entry)
    return entries


def _parent(name: str) -> str:
    return name.rpartition("/")[0].rpartition("/")[2]


class FilesPlan:
    """How to read one pack of files, from its validated entry."""

    def __init__(self, entry: dict[str, Any], index_path: Path) -> None:
        self.entry = entry
        self.index_path = index_path
        self.columns = dict(zip(entry["column_names"], entry["column_encodings"], strict=True))
        self.unsafe_columns: list[str] = []
        self.names = [name for name, _, _ in entry["parts"]]
        sizes = np.array([end for _, _, end in entry["parts"]], np.int64)
        self.ends = np.cumsum(sizes)
        self.starts = self.ends - sizes
        self.labels = entry.get("labels")

    def open(self, root: Path, validate_hash: str | None, populate: bool = False) -> FilesShard:
        """Open the pack under ``root``: its fetched file, or (a folder read in place) the files."""
        local = root / self.entry["raw_data"]["basename"]
        try:
            if local.stat().st_size == self.entry["raw_data"]["bytes"]:
                return FilesShard(local, self, root)
        except OSError:
            pass
        first = root / self.names[0]
        if not first.is_file():
            raise ShardMissingError(f"neither {local} nor {first} exists: fetch the shard first")
        return FilesShard(root, self, root, in_place=True)


class FilesShard:
    """One open pack of files."""

    def __init__(self, path: Path, plan: FilesPlan, root: Path, in_place: bool = False) -> None:
        self.path = path
        self._plan = plan
        self._root = root
        self._map: mmap.mmap | None = None
        if not in_place and plan.entry["raw_data"]["bytes"]:
            with open(path, "rb") as file:
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        self._in_place = in_place

    def _bytes(self, i: int) -> bytes:
        plan = self._plan
        if self._in_place:
            return (self._root / plan.names[i]).read_bytes()
        if self._map is None:
            return b""
        return self._map[plan.starts[i] : plan.ends[i]]

    def get(self, i: int) -> dict[str, Any]:
        """File ``i`` of the pack as a sample."""
        plan = self._plan
        sample = {"path": plan.names[i], "bytes": self._bytes(i)}
        if plan.labels is not None:
            sample["label"] = plan.labels[i]
            sample["label_name"] = _parent(plan.names[i])
        return sample

    def read(
        self, ids: np.ndarray, arrays: Sequence[str], values: Sequence[str], spans: Sequence[str] = ()
    ) -> tuple[dict[str, np.ndarray], dict[str, list[Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Columns of files ``ids``: ``label`` as an int64 array, the others as lists."""
        plan, listed = self._plan, ids.tolist()
        got = {name: np.asarray(plan.labels, np.int64)[ids] for name in arrays}
        found: dict[str, list[Any]] = {}
        for name in values:
            if name == "bytes":
                found[name] = [self._bytes(i) for i in listed]
            elif name == "path":
                found[name] = [plan.names[i] for i in listed]
            elif name == "label":
                found[name] = [(plan.labels or [])[i] for i in listed]
            else:
                found[name] = [_parent(plan.names[i]) for i in listed]
        return got, found, {}

    def close(self) -> None:
        """Unmap the pack."""
        if self._map is not None:
            self._map.close()
            self._map = None


class FilesFormat(ShardFormat):
    """Packs of plain files, one sample per file (see the module's docstring)."""

    name = "files"
    capabilities = frozenset({Capability.COLUMNS, Capability.ARRAYS})
    file_keys = ("raw_data",)

    @property
    def label(self) -> str:
        return "a pack of plain files"

    def check_entry(self, entry: dict[str, Any], check: IndexChecker, where: str) -> None:
        names, _ = check.column_lists(entry, where)
        parts = check_parts(entry, check, where)
        if len(parts) != entry["samples"] or any(start != 0 for _, start, _ in parts):
            raise check.fail(where, f"parts must name {entry['samples']} whole files, one per sample")
        labels = entry.get("labels")
        if ("label" in names) != (labels is not None):
            raise check.fail(where, "a 'label' column and a 'labels' list go together")
        if labels is not None and (
            not isinstance(labels, list)
            or len(labels) != len(parts)
            or not all(type(x) is int for x in labels)
        ):
            raise check.fail(where, f"labels must be {len(parts)} ints")

    def plan(self, entry: dict[str, Any], index_path: Path) -> FilesPlan:
        return FilesPlan(entry, index_path)

    def array_columns(self, shard: ShardInfo) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        return {"label": (np.dtype(np.int64), ())} if "label" in shard.columns else {}


FILES_FORMAT = FilesFormat()
