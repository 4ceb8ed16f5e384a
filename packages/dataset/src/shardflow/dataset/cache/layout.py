"""The on-disk contract of a cache folder: every name and path the cache writes, and readers of its files.

A cache folder is a stream's local folder once shardflow keeps bookkeeping in it:

- ``index.json``: the stream's index, downloaded from the remote.
- ``.shardflow-cache/<shard>.json``: an *entry* per shard that shardflow downloaded: its ``name``, its
  ``files`` (relative to the folder), its ``bytes`` (what its download may take, then what it keeps) and
  its ``identity`` (what it was downloaded as). The entry's modification time is the shard's last use.
- ``.shardflow-cache/<shard>.evicted``: a *tombstone* left by eviction, so that a later download of the
  shard counts as a re-download.
- ``.shardflow-cache/limit.json``: the last ``cache_limit`` a dataset set on the folder, and its pid.
- ``.shardflow-cache/remote.json``: the remote the folder caches, and the version of the index last
  downloaded from it.
- ``.shardflow-locks/<shard>.lock`` (download or eviction, exclusive; holds the holder's pid),
  ``<shard>.use.lock`` (held shared while a process has the shard open, under a limit),
  ``<shard>.open.lock`` (held shared while a process waits for another's download of the shard, under a
  limit) and ``cache-budget.lock`` (while a process adds up the entries and makes room).

A shard name with sub-folders (``a/b.mds``) is flattened with ``%`` in the bookkeeping's file names.
Temporary files follow :data:`shardflow.format.TEMP_NAME`: ``.<final>.<pid>-<8 hex>.tmp``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardflow.dataset.errors import DatasetConfigError
from shardflow.format import write_atomic
from shardflow.format.index import INDEX_BASENAME

__all__ = [
    "INDEX_BASENAME",
    "LOCK_FOLDER",
    "CACHE_FOLDER",
    "BOOKKEEPING",
    "LIMIT_FILE",
    "REMOTE_FILE",
    "BUDGET_LOCK",
    "Entry",
    "cache_home",
    "lock_path",
    "entry_path",
    "tombstone_path",
    "limit_path",
    "remote_path",
    "temp_pid",
    "temp_final",
    "inside",
    "is_regular_file",
    "write_json",
    "scan_entries",
    "read_entries",
    "read_identity",
    "read_limit",
    "read_remote",
    "claim_folder",
    "note_index_version",
    "read_index_version",
]

logger = logging.getLogger(__name__)

LOCK_FOLDER = ".shardflow-locks"
"""Sub-folder of a cache folder that holds its lock files (never shard data)."""
CACHE_FOLDER = ".shardflow-cache"
"""Sub-folder of a cache folder that holds the entries, tombstones and markers (never shard data)."""
BOOKKEEPING = (LOCK_FOLDER, CACHE_FOLDER)
LIMIT_FILE = "limit.json"
REMOTE_FILE = "remote.json"
BUDGET_LOCK = "cache-budget"
"""The name whose lock (``cache-budget.lock``) guards the folder's budget."""

_TEMP = re.compile(r"^\.(?P<final>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")  # format's TEMP_NAME, with groups


def cache_home() -> Path:
    """Where shardflow keeps what it caches by default: ``$SHARDFLOW_CACHE_DIR``, else ``~/.cache/shardflow``
    (``datasets/`` for ``local=None`` streams, ``epochs/`` for the epoch ledgers)."""
    return Path(
        os.environ.get("SHARDFLOW_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "shardflow")
    )


def _flat(name: str) -> str:
    return name.replace("/", "%")


def lock_path(root: Path, name: str, kind: str = "") -> Path:
    """The lock file guarding ``name`` (a path relative to ``root``, possibly with sub-folders).

    ``kind`` tells several locks of one name apart (``"use"``: held shared while a shard is open).
    """
    stem = _flat(name)
    return root / LOCK_FOLDER / (f"{stem}.{kind}.lock" if kind else f"{stem}.lock")


def entry_path(root: Path, name: str) -> Path:
    """The entry of shard ``name`` in cache folder ``root``."""
    return root / CACHE_FOLDER / (_flat(name) + ".json")


def tombstone_path(root: Path, name: str) -> Path:
    """The tombstone eviction leaves for shard ``name``."""
    return root / CACHE_FOLDER / (_flat(name) + ".evicted")


def limit_path(root: Path) -> Path:
    """The file holding the last ``cache_limit`` set on ``root``."""
    return root / CACHE_FOLDER / LIMIT_FILE


def remote_path(root: Path) -> Path:
    """The marker naming the remote ``root`` caches."""
    return root / CACHE_FOLDER / REMOTE_FILE


def temp_pid(name: str) -> int | None:
    """The pid of the process that made the temporary file ``name``; None when ``name`` is no such file."""
    found = _TEMP.match(name)
    return int(found.group("pid")) if found else None


def temp_final(name: str) -> str | None:
    """The final name inside the temporary name ``name`` (with a writer's ``.<tag>``, if any), or None."""
    found = _TEMP.match(name)
    return found.group("final") if found else None


def inside(root: Path, path: Path) -> bool:
    """Whether ``path`` stays inside ``root`` once every symlink on the way is followed."""
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def is_regular_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a symlink to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def write_json(path: Path, data: object) -> None:
    """Write ``data`` to ``path`` as JSON, atomically (format's temporary name and rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data).encode("utf-8"))


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in the regular file ``path``; None when absent, unreadable or not an object."""
    if not is_regular_file(path):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# -- entries ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A shard the cache downloaded, as its entry file ``path`` says: its files (relative to ``root``),
    its bytes (None when the entry does not say) and its last use."""

    root: Path
    path: Path
    name: str
    files: tuple[str, ...]
    bytes: int | None
    last_use: float


def _entry(root: Path, path: Path) -> Entry | None:
    try:
        last_use = os.lstat(path).st_mtime
        data = json.loads(path.read_text(encoding="utf-8"))
        name, files, size = data["name"], data["files"], data.get("bytes")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not (isinstance(name, str) and isinstance(files, list) and all(isinstance(f, str) for f in files)):
        return None
    size = size if isinstance(size, int) and not isinstance(size, bool) else None
    return Entry(root, path, name, tuple(files), size, last_use)


def scan_entries(root: Path) -> tuple[list[Entry], list[Path]]:
    """The entries of cache folder ``root`` (sorted by file name), and the entry files that could not be
    read as one (no ``name`` and ``files``: a hand-made or damaged file)."""
    try:
        with os.scandir(root / CACHE_FOLDER) as items:
            paths = sorted(
                Path(item.path)
                for item in items
                if item.name.endswith(".json")
                and item.name not in (LIMIT_FILE, REMOTE_FILE)
                and item.is_file(follow_symlinks=False)
            )
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    entries, bad = [], []
    for path in paths:
        entry = _entry(root, path)
        if entry is None:
            bad.append(path)
        else:
            entries.append(entry)
    return entries, bad


def read_entries(root: Path) -> Iterator[Entry]:
    """The readable entries of cache folder ``root``."""
    yield from scan_entries(root)[0]


def read_identity(root: Path, name: str) -> dict[str, Any] | None:
    """What a cached shard was downloaded as; None without a readable entry (files the cache did not
    download, or an entry of a release that recorded no identity)."""
    data = _read_json(entry_path(root, name))
    identity = data.get("identity") if data else None
    return identity if isinstance(identity, dict) else None


# -- markers ----------------------------------------------------------------------------------------


def read_limit(root: Path) -> tuple[int, int] | None:
    """The ``(limit, pid)`` a dataset last wrote into ``root``'s limit file; None if none did."""
    data = _read_json(limit_path(root)) or {}
    try:
        return int(data["limit"]), int(data["pid"])
    except (KeyError, TypeError, ValueError):
        return None


def read_remote(root: Path) -> str | None:
    """The remote cache folder ``root`` caches, as its ``remote.json`` names it; None if none does."""
    remote = (_read_json(remote_path(root)) or {}).get("remote")
    return remote if isinstance(remote, str) else None


def claim_folder(root: Path, remote: str) -> None:
    """Mark ``root`` as the cache of ``remote``, or refuse it when it caches another remote.

    Raises:
        DatasetConfigError: The folder holds another remote's dataset (the message names both).
    """
    marker = remote_path(root)
    try:
        cached = json.loads(marker.read_text(encoding="utf-8")).get("remote")
    except FileNotFoundError:
        write_json(marker, {"remote": remote})
        return
    except (OSError, ValueError, AttributeError):
        cached = None  # unreadable (a crash while writing it): claim it again
    if cached is None:
        write_json(marker, {"remote": remote})
    elif cached != remote:
        raise DatasetConfigError(
            f"local folder {root} caches {cached}, not remote {remote}: give this remote another local "
            f"folder (or local=None, one per remote), or empty it first with `shardflow cache clean --all "
            f"{root}`"
        )


def note_index_version(root: Path, remote: str, version: str) -> None:
    """Record in the folder's marker the version of the ``index.json`` just downloaded from ``remote``."""
    write_json(remote_path(root), {"remote": remote, "index_version": version})


def read_index_version(root: Path, remote: str) -> str | None:
    """The version :func:`note_index_version` recorded for ``remote``'s index in ``root``, or None."""
    try:
        data = json.loads(remote_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("remote") != remote:
        return None
    version = data.get("index_version")
    return version if isinstance(version, str) else None
