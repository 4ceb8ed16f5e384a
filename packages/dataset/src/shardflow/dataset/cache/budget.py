"""The node cache: one byte budget for every process that uses the same cache folders, kept in the folders.

Nothing survives a process but files (:mod:`.layout`), which the next one checks again. The usage is the
folders' ``index.json`` bytes plus their entries' bytes, added up each time room is made, never
remembered. Only shards with an entry are ever evicted: files that were in the folder already, and
local-only streams, have none. Eviction takes a shard's download lock without waiting (a shard being
downloaded is never evicted), prefers shards whose use lock is free, and otherwise unlinks a shard that is
open: its readers keep a valid map of the unlinked file, whose blocks the kernel frees when the last
reader unmaps it. A shard that a process waits to open while another downloads it (:meth:`NodeCache.opening`)
is passed over: evicting it as it arrives would only make the waiting process download it again at once; the
cache goes over its limit for that moment instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from shardflow.dataset.cache.layout import (
    BUDGET_LOCK,
    Entry,
    entry_path,
    inside,
    limit_path,
    lock_path,
    read_entries,
    tombstone_path,
    write_json,
)
from shardflow.dataset.cache.locks import acquire, release, try_lock
from shardflow.format import ShardInfo

__all__ = ["NodeCache", "footprint"]

logger = logging.getLogger(__name__)


def footprint(shard: ShardInfo) -> int:
    """The most bytes a shard's files take while it arrives: compressed and raw side by side."""
    return sum(file.bytes for file in (*shard.raw_files, *shard.zip_files))


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
                write_json(limit_path(root), {"limit": self.limit, "pid": os.getpid()})

    # -- downloads -----------------------------------------------------------------------------------

    def reserve(
        self, root: Path, name: str, files: Sequence[str], nbytes: int, identity: dict[str, Any]
    ) -> None:
        """Record a download about to start (the caller holds the shard's download lock) and make room.

        Evicts least-recently-used shards until the entries fit the limit; if only downloads in flight
        remain, this one goes ahead (the overshoot the README states).
        """
        self.downloads += 1
        tombstone = tombstone_path(root, name)
        if tombstone.exists():
            tombstone.unlink(missing_ok=True)
            self.redownloads += 1
            logger.info("downloading %s again: it was evicted to keep within cache_limit", root / name)
        with self._budget():
            self.record(root, name, files, nbytes, identity)
            if self.limit is not None:
                self._make_room(exclude=(root, name))

    def landed(self, root: Path, name: str) -> None:
        """A download recorded (the caller still holds the shard's lock): make room again, evicting what
        became evictable while it arrived (shards opened or let go of since its reservation), so that the
        folder holds no more than the limit and what is still in flight."""
        if self.limit is not None:
            with self._budget():
                self._make_room(exclude=(root, name))

    @staticmethod
    def record(root: Path, name: str, files: Sequence[str], nbytes: int, identity: dict[str, Any]) -> None:
        """Write a shard's entry: the bytes its download may take (:meth:`reserve`), then what it keeps, and
        ``identity``, what the files were downloaded as (compared with the index before they are used)."""
        entry = {"name": name, "files": list(files), "bytes": nbytes, "identity": identity}
        write_json(entry_path(root, name), entry)

    @staticmethod
    def note_identity(root: Path, name: str, identity: dict[str, Any]) -> None:
        """Update a cached shard's identity (a new index version that still describes its files)."""
        path = entry_path(root, name)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        entry["identity"] = identity
        write_json(path, entry)

    def abandon(self, root: Path, name: str, files: Sequence[str]) -> None:
        """A download failed: remove what it left and its entry."""
        for file in files:
            if inside(root, (root / file).parent):
                (root / file).unlink(missing_ok=True)
        entry_path(root, name).unlink(missing_ok=True)

    def touch(self, root: Path, name: str) -> None:
        """Mark a shard as used now (least-recently-used order); shards without an entry are ignored."""
        try:
            os.utime(entry_path(root, name))
        except FileNotFoundError:
            pass

    # -- readers -------------------------------------------------------------------------------------

    def hold(self, root: Path, name: str, what: str) -> int | None:
        """Take the shard's use lock (shared) while it is open (see :meth:`let_go`); None without a limit or
        for a folder the cache does not download into."""
        if self.limit is None or root not in self.roots:
            return None
        return acquire(lock_path(root, name, "use"), self.timeout, what, shared=True)

    @contextmanager
    def opening(self, root: Path, name: str) -> Iterator[None]:
        """Mark shard ``name`` as awaited by this process for the block (its shared ``open`` lock), so that
        making room passes it over; nothing without a limit."""
        if self.limit is None or root not in self.roots:
            yield
            return
        fd = acquire(lock_path(root, name, "open"), self.timeout, f"opening {root / name}", shared=True)
        try:
            yield
        finally:
            release(fd)

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
                fd = acquire(lock_path(root, BUDGET_LOCK), self.timeout, f"the cache budget of {root}")
                stack.callback(release, fd)
            yield

    def entries(self) -> list[Entry]:
        """Every entry that sizes itself in the folders, least recently used first."""
        found = (entry for root in self.roots for entry in read_entries(root) if entry.bytes is not None)
        return sorted(found, key=lambda entry: entry.last_use)

    def _make_room(self, exclude: tuple[Path, str]) -> None:
        assert self.limit is not None
        entries = self.entries()
        usage = self.index_bytes + sum(entry.bytes or 0 for entry in entries)
        candidates = [entry for entry in entries if (entry.root, entry.name) != exclude]
        for readers_too in (False, True):
            kept = []
            for entry in candidates:
                if usage > self.limit and self._evict(entry, readers_too, spare_openers=True):
                    usage -= entry.bytes or 0
                else:
                    kept.append(entry)
            candidates = kept
        if usage > self.limit:
            logger.debug("cache over its limit by %d bytes of downloads in flight", usage - self.limit)

    def evict(self, entry: Entry) -> bool:
        """Delete a shard's files and entry now (its readers keep their maps), unless it is being
        downloaded; True when it was deleted."""
        return self._evict(entry, readers_too=True)

    def _evict(self, entry: Entry, readers_too: bool, spare_openers: bool = False) -> bool:
        """Delete a shard's files and entry, unless it is being downloaded (or read: ``readers_too``; or
        awaited by a process that waits for its download: ``spare_openers``)."""
        held = try_lock(lock_path(entry.root, entry.name))
        if held is None:
            return False
        opening = try_lock(lock_path(entry.root, entry.name, "open")) if spare_openers else None
        try:
            if spare_openers and opening is None:
                return False
            use = None if readers_too else try_lock(lock_path(entry.root, entry.name, "use"))
            if not readers_too and use is None:
                return False
            try:
                for file in entry.files:
                    path = entry.root / file
                    if inside(entry.root, path.parent):  # never delete through a symlinked folder
                        path.unlink(missing_ok=True)  # a symlink itself, not what it points to
                tombstone_path(entry.root, entry.name).touch()  # a later download counts as a re-download
                entry_path(entry.root, entry.name).unlink(missing_ok=True)
            finally:
                if use is not None:
                    release(use)
        finally:
            if opening is not None:
                release(opening)
            release(held)
        self.evictions += 1
        logger.debug(
            "evicted %s (%d bytes)%s", entry.root / entry.name, entry.bytes or 0, " while open" * readers_too
        )
        return True
