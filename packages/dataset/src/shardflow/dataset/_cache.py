"""The node cache: one byte budget for every process that uses the same cache folders, kept in the folders.

Everything lives in files, so nothing survives a process but files that the next one checks again:

- ``<root>/.shardflow-cache/<shard>.json``: an entry per shard that a shardflow process downloaded, naming
  its files and bytes (the bytes it may take while downloading, then what it keeps) and what it was
  downloaded as (its ``identity``: the remote, the version of the index that listed it, and the shard's
  record in that index: file names, sizes and digests), so that a changed remote is never read from the
  cache. Only shards with an entry are ever evicted: files that were in the folder already, and local-only
  streams, have none. The entry's modification time is the shard's last use, for least-recently-used
  eviction. An evicted
  shard leaves ``<shard>.evicted`` behind, so that whoever downloads it again counts a re-download.
- ``<root>/.shardflow-locks/<shard>.lock``: held exclusively while the shard is downloaded or evicted.
- ``<root>/.shardflow-locks/<shard>.use.lock``: held shared by each process that has the shard open (with a
  limit only), so eviction prefers shards nobody reads.
- ``<root>/.shardflow-locks/cache-budget.lock``: held while a process adds up the entries and makes room.
- ``<root>/.shardflow-cache/limit.json``: the last limit a dataset set on the folder (for ``shardflow
  cache status``).
- ``<root>/.shardflow-cache/remote.json``: the remote the folder caches (another remote is refused) and the
  version of the ``index.json`` last downloaded into it (what a run that cannot reach the remote falls back
  to).

The usage is the folders' ``index.json`` bytes plus the entries', added up each time room is made, never
remembered. Eviction takes a
shard's download lock without waiting (a shard being downloaded is never evicted), prefers shards whose
use lock is free, and otherwise unlinks a shard that is open: its readers keep a valid map of the
unlinked file, whose blocks the kernel frees when the last reader unmaps it (at its next window, or when
the iteration ends).
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardflow.dataset._locks import acquire, lock_path, release, try_lock
from shardflow.dataset.errors import DatasetConfigError
from shardflow.format import TEMP_NAME, ShardInfo, write_atomic

__all__ = [
    "CACHE_FOLDER",
    "Entry",
    "NodeCache",
    "footprint",
    "read_entries",
    "read_identity",
    "claim_folder",
    "note_index_version",
    "read_index_version",
    "inside",
    "remove_stale_temps",
]

logger = logging.getLogger(__name__)

CACHE_FOLDER = ".shardflow-cache"
"""Sub-folder of a stream's local folder that holds the cache's entries (never shard data)."""

_BUDGET = "cache-budget"
_LIMIT_FILE = "limit.json"
_REMOTE_FILE = "remote.json"


@dataclass(frozen=True)
class Entry:
    """A shard the cache downloaded: where, its files (relative to ``root``), its bytes, its last use."""

    root: Path
    name: str
    files: tuple[str, ...]
    bytes: int
    last_use: float


def footprint(shard: ShardInfo) -> int:
    """The most bytes a shard's files take while it arrives: compressed and raw side by side."""
    return sum(file.bytes for file in (*shard.raw_files, *shard.zip_files))


def _entry_path(root: Path, name: str) -> Path:
    return root / CACHE_FOLDER / (name.replace("/", "%") + ".json")


def _write_json(path: Path, data: object) -> None:
    """Write ``data`` to ``path`` as JSON, atomically (format's temporary name and rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data).encode("utf-8"))


def inside(root: Path, path: Path) -> bool:
    """Whether ``path`` stays inside ``root`` once every symlink on the way is followed."""
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def claim_folder(root: Path, remote: str) -> None:
    """Mark ``root`` as the cache of ``remote``, or refuse it when it caches another remote.

    Raises:
        DatasetConfigError: The folder holds another remote's dataset (the message names both).
    """
    marker = root / CACHE_FOLDER / _REMOTE_FILE
    try:
        cached = json.loads(marker.read_text(encoding="utf-8")).get("remote")
    except FileNotFoundError:
        _write_json(marker, {"remote": remote})
        return
    except (OSError, ValueError, AttributeError):
        cached = None  # unreadable (a crash while writing it): claim it again
    if cached is None:
        _write_json(marker, {"remote": remote})
    elif cached != remote:
        raise DatasetConfigError(
            f"local folder {root} caches {cached}, not remote {remote}: give this remote another local "
            f"folder (or local=None, one per remote), or empty it first with `shardflow cache clean --all "
            f"{root}`"
        )


def note_index_version(root: Path, remote: str, version: str) -> None:
    """Record in the folder's marker the version of the ``index.json`` just downloaded from ``remote``."""
    _write_json(root / CACHE_FOLDER / _REMOTE_FILE, {"remote": remote, "index_version": version})


def read_index_version(root: Path, remote: str) -> str | None:
    """The version :func:`note_index_version` recorded for ``remote``'s index in ``root``, or None."""
    try:
        data = json.loads((root / CACHE_FOLDER / _REMOTE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("remote") != remote:
        return None
    version = data.get("index_version")
    return version if isinstance(version, str) else None


def read_identity(root: Path, name: str) -> dict[str, Any] | None:
    """What a cached shard was downloaded as (see :meth:`NodeCache.record`); None without a readable entry
    (files the cache did not download, or an entry of a release that recorded no identity)."""
    try:
        data = json.loads(_entry_path(root, name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    identity = data.get("identity") if isinstance(data, dict) else None
    return identity if isinstance(identity, dict) else None


def remove_stale_temps(root: Path, name: str, files: Sequence[str]) -> None:
    """Remove the temporary files a killed process left for shard ``name`` (the caller holds its lock)."""
    stems = [(root / file).parent / f".{Path(file).name}." for file in files]
    stems.append(_entry_path(root, name).parent / f".{_entry_path(root, name).name}.")
    for stem in stems:
        for path in stem.parent.glob(glob.escape(stem.name) + "*.tmp"):
            if TEMP_NAME.match(path.name):
                path.unlink(missing_ok=True)
                logger.info("removed %s, left by a download that did not finish", path)


def read_entries(root: Path) -> Iterator[Entry]:
    """The entries of one cache folder (unreadable ones, from a crash, are skipped)."""
    try:
        found = list(os.scandir(root / CACHE_FOLDER))
    except FileNotFoundError:
        return
    for item in found:
        if not item.name.endswith(".json") or item.name in (_LIMIT_FILE, _REMOTE_FILE):
            continue
        try:
            last_use = item.stat().st_mtime
            data = json.loads(Path(item.path).read_text(encoding="utf-8"))
            yield Entry(root, data["name"], tuple(data["files"]), int(data["bytes"]), last_use)
        except (OSError, ValueError, KeyError, TypeError):
            continue


class NodeCache:
    """The cache folders of one dataset's streams, under one byte budget shared with every other user.

    Without a limit it only records what it downloads (so that a later run with a limit may evict it).

    Args:
        roots: The local folders of the streams that have a remote.
        limit: The budget in bytes over all ``roots``, or None.
        timeout: Seconds to wait for the budget lock and a shard's use lock.
        index_bytes: Bytes of the ``index.json`` files in ``roots``: part of the usage, never evicted (as
            the reference counts them).
    """

    def __init__(
        self, roots: Sequence[Path], limit: int | None, timeout: float, index_bytes: int = 0
    ) -> None:
        self.roots = sorted(set(roots))
        self.limit = limit
        self.timeout = timeout
        self.index_bytes = index_bytes
        self.downloads = 0
        self.redownloads = 0
        self.evictions = 0

    def announce(self) -> None:
        """Write the limit into every folder, for ``shardflow cache status``."""
        if self.limit is not None:
            for root in self.roots:
                _write_json(root / CACHE_FOLDER / _LIMIT_FILE, {"limit": self.limit, "pid": os.getpid()})

    # -- downloads -----------------------------------------------------------------------------------

    def reserve(
        self, root: Path, name: str, files: Sequence[str], nbytes: int, identity: dict[str, Any]
    ) -> None:
        """Record a download about to start (the caller holds the shard's download lock) and make room.

        Evicts least-recently-used shards until the entries fit the limit; if only downloads in flight
        remain, this one goes ahead (the overshoot the README states).
        """
        key = (root, name)
        self.downloads += 1
        tombstone = _entry_path(root, name).with_suffix(".evicted")
        if tombstone.exists():
            tombstone.unlink(missing_ok=True)
            self.redownloads += 1
            logger.info("downloading %s again: it was evicted to keep within cache_limit", root / name)
        with self._budget():
            self.record(root, name, files, nbytes, identity)
            if self.limit is not None:
                self._make_room(exclude=key)

    @staticmethod
    def record(root: Path, name: str, files: Sequence[str], nbytes: int, identity: dict[str, Any]) -> None:
        """Write a shard's entry: the bytes its download may take (:meth:`reserve`), then what it keeps, and
        ``identity``, what the files were downloaded as (compared with the index before they are used)."""
        entry = {"name": name, "files": list(files), "bytes": nbytes, "identity": identity}
        _write_json(_entry_path(root, name), entry)

    @staticmethod
    def note_identity(root: Path, name: str, identity: dict[str, Any]) -> None:
        """Update a cached shard's identity (a new index version that still describes its files)."""
        path = _entry_path(root, name)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        entry["identity"] = identity
        _write_json(path, entry)

    def abandon(self, root: Path, name: str, files: Sequence[str]) -> None:
        """A download failed: remove what it left and its entry."""
        for file in files:
            if inside(root, (root / file).parent):
                (root / file).unlink(missing_ok=True)
        _entry_path(root, name).unlink(missing_ok=True)

    def touch(self, root: Path, name: str) -> None:
        """Mark a shard as used now (least-recently-used order); shards without an entry are ignored."""
        try:
            os.utime(_entry_path(root, name))
        except FileNotFoundError:
            pass

    # -- readers -------------------------------------------------------------------------------------

    def hold(self, root: Path, name: str, what: str) -> int | None:
        """Take the shard's use lock (shared) while it is open (see :meth:`let_go`); None without a limit or
        for a folder the cache does not download into."""
        if self.limit is None or root not in self.roots:
            return None
        return acquire(lock_path(root, name, "use"), self.timeout, what, shared=True)

    @staticmethod
    def let_go(fd: int | None) -> None:
        """Drop a use lock taken by :meth:`hold`."""
        if fd is not None:
            release(fd)

    # -- eviction ------------------------------------------------------------------------------------

    @contextmanager
    def _budget(self) -> Iterator[None]:
        with ExitStack() as stack:
            for root in self.roots:  # sorted: two processes always take them in the same order
                fd = acquire(lock_path(root, _BUDGET), self.timeout, f"the cache budget of {root}")
                stack.callback(release, fd)
            yield

    def _make_room(self, exclude: tuple[Path, str]) -> None:
        assert self.limit is not None
        entries = sorted(
            (entry for root in self.roots for entry in read_entries(root)), key=lambda e: e.last_use
        )
        usage = self.index_bytes + sum(entry.bytes for entry in entries)
        candidates = [entry for entry in entries if (entry.root, entry.name) != exclude]
        for readers_too in (False, True):
            kept = []
            for entry in candidates:
                if usage > self.limit and self._evict(entry, readers_too):
                    usage -= entry.bytes
                else:
                    kept.append(entry)
            candidates = kept
        if usage > self.limit:
            logger.debug("cache over its limit by %d bytes of downloads in flight", usage - self.limit)

    def evict(self, entry: Entry) -> bool:
        """Delete a shard's files and entry now (its readers keep their maps), unless it is being
        downloaded; True when it was deleted."""
        return self._evict(entry, readers_too=True)

    def _evict(self, entry: Entry, readers_too: bool) -> bool:
        """Delete a shard's files and entry, unless it is being downloaded (or read: ``readers_too``)."""
        held = try_lock(lock_path(entry.root, entry.name))
        if held is None:
            return False
        try:
            use = None if readers_too else try_lock(lock_path(entry.root, entry.name, "use"))
            if not readers_too and use is None:
                return False
            try:
                for file in entry.files:
                    path = entry.root / file
                    if inside(entry.root, path.parent):  # never delete through a symlinked folder
                        path.unlink(missing_ok=True)  # a symlink itself, not what it points to
                path = _entry_path(entry.root, entry.name)
                path.with_suffix(".evicted").touch()  # so that a later download counts as a re-download
                path.unlink(missing_ok=True)
            finally:
                if use is not None:
                    release(use)
        finally:
            release(held)
        self.evictions += 1
        logger.debug(
            "evicted %s (%d bytes)%s", entry.root / entry.name, entry.bytes, " while open" * readers_too
        )
        return True
