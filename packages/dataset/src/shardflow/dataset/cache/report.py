"""What a folder of caches holds (:func:`cache_status`), and removing what shardflow left there
(:func:`cache_clean`): the reports ``shardflow cache status`` and ``shardflow cache clean`` print.

A cache folder is a folder that holds shardflow's bookkeeping: a real (not symlinked) ``.shardflow-cache/``
folder. A folder with an ``index.json`` and no bookkeeping (a dataset a writer made, say) is not a cache.
What shardflow made, and so all that :func:`cache_clean` may remove:

- the files a cache entry lists (``remove_shards``), when each is a regular file inside its cache folder,
  reached through no symlink;
- an entry whose files are gone; with ``remove_shards``, ``remote.json`` and the ``.evicted`` tombstones
  once no entry is left;
- stale temporary files inside the bookkeeping folders, or named after a file that the cache folder's
  index or entries list (``index.json`` included), beside it;
- lock files in ``.shardflow-locks/`` that nobody holds.

The walk never enters a symlinked folder, and nothing is removed that is a symlink or whose real path is
outside the folder given.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from shardflow.dataset.cache.layout import (
    BOOKKEEPING,
    CACHE_FOLDER,
    INDEX_BASENAME,
    LOCK_FOLDER,
    Entry,
    inside,
    is_regular_file,
    lock_path,
    read_limit,
    read_remote,
    remote_path,
    scan_entries,
    temp_final,
    temp_pid,
)
from shardflow.dataset.cache.locks import pid_alive, probe, release, try_lock
from shardflow.dataset.errors import DatasetConfigError

__all__ = ["cache_status", "cache_clean", "limit_status"]

logger = logging.getLogger(__name__)


@dataclass
class _Folder:
    """A cache folder: its index's shards (when readable) and entries, and every name they list."""

    path: Path
    has_index: bool = False
    shards: tuple[Any, ...] = ()
    error: str | None = None
    entries: list[Entry] = field(default_factory=list)
    names: set[str] = field(default_factory=set)


@dataclass
class _Scan:
    """What the folder given holds: its cache folders, shardflow's temporary and lock files, every file."""

    root: Path
    caches: list[_Folder] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)  # an index.json without bookkeeping: not a cache
    temps: list[Path] = field(default_factory=list)
    locks: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        return os.path.relpath(path, self.root)


def _read_folder(path: Path) -> _Folder:
    from shardflow.format import FormatError, read_shards

    entries, bad = scan_entries(path)
    for entry_file in bad:
        logger.warning("%s is not a cache entry shardflow can read (name, files): left alone", entry_file)
    folder = _Folder(path, has_index=is_regular_file(path / INDEX_BASENAME), entries=entries)
    if folder.has_index:
        try:
            folder.shards = read_shards(path, allow_unsafe_types=True)  # nothing is decoded here
        except (ValueError, OSError, FormatError) as exc:
            folder.error = f"{path / INDEX_BASENAME} cannot be read: {exc}"
            logger.warning("%s", folder.error)
    elif os.path.lexists(path / INDEX_BASENAME):
        folder.error = f"{path / INDEX_BASENAME} is not a regular file (a symlink?): not read"
        logger.warning("%s", folder.error)
    folder.names = {INDEX_BASENAME}
    folder.names.update(file.basename for shard in folder.shards for file in shard.files)
    folder.names.update(PurePosixPath(name).as_posix() for entry in folder.entries for name in entry.files)
    return folder


def _named_after(folder: _Folder, here: Path, name: str) -> bool:
    """Whether the temporary file ``here/name`` is named after a file that ``folder`` lists."""
    final = temp_final(name)
    if final is None:
        return False
    candidates = (final, final.rpartition(".")[0])  # without, then with a writer's ".<tag>"
    return any(c and (here / c).relative_to(folder.path).as_posix() in folder.names for c in candidates)


def _scan(path: str | os.PathLike[str]) -> _Scan:
    root = Path(os.path.expanduser(path))
    if not root.exists():
        raise DatasetConfigError(f"{root} does not exist")
    if not root.is_dir():
        raise DatasetConfigError(f"{root} is not a folder: give a dataset's local cache folder")
    scan = _Scan(root)
    owners: dict[str, _Folder | None] = {}  # each folder walked: the cache folder it is in, if any
    for top, dirs, names in os.walk(root):  # followlinks=False: a symlinked folder is never entered
        dirs.sort()
        here = Path(top)
        books = here.name in BOOKKEEPING
        owner: _Folder | None = None
        if books:
            owners[top] = None  # nothing of a cache nests in its bookkeeping
        elif (here / CACHE_FOLDER).is_dir() and not (here / CACHE_FOLDER).is_symlink():
            owner = owners[top] = _read_folder(here)
            scan.caches.append(owner)
        else:
            owner = owners[top] = owners.get(os.path.dirname(top))
            if INDEX_BASENAME in names and owner is None:
                scan.others.append(here)
                logger.info("%s has an index but no %s: not a cache, left alone", here, CACHE_FOLDER)
        for name in sorted(names):
            file = here / name
            if not is_regular_file(file):
                continue  # a symlink (never followed, never removed) or not a file
            scan.files.append(file)
            if temp_final(name) is None:
                if books and here.name == LOCK_FOLDER and name.endswith(".lock"):
                    scan.locks.append(file)
            elif books or (owner is not None and _named_after(owner, here, name)):
                scan.temps.append(file)
    return scan


def _file_size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _temp_entry(scan: _Scan, path: Path) -> dict[str, Any]:
    pid = temp_pid(path.name)
    alive = pid_alive(pid)
    return {
        "path": scan.rel(path),
        "bytes": _file_size(path),
        "pid": pid,
        "pid_alive": alive,
        "stale": not alive,
    }


# -- status -----------------------------------------------------------------------------------------


def limit_status(root: Path) -> dict[str, Any] | None:
    """The ``cache_limit`` a dataset last set on cache folder ``root``: ``bytes``, the setter's ``pid`` and
    whether it is alive (``pid_alive``); None if none did."""
    found = read_limit(root)
    if found is None:
        return None
    limit, pid = found
    return {"bytes": limit, "pid": pid, "pid_alive": pid_alive(pid)}


def _lock_entry(scan: _Scan, path: Path) -> dict[str, Any]:
    state = probe(path)
    return {
        "path": scan.rel(path),
        "guards": path.name.removesuffix(".lock").replace("%", "/"),
        "held": state.held,
        "pid": state.pid,
        "pid_alive": pid_alive(state.pid),
    }


def _size_matches(path: Path, size: int) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == size


def _folder_status(scan: _Scan, folder: _Folder) -> dict[str, Any]:
    present = partial = zip_files = zip_bytes = listed_raw = present_raw = 0
    for shard in folder.shards:
        have = [_size_matches(folder.path / f.basename, f.bytes) for f in shard.raw_files]
        present += all(have)
        partial += any(have) and not all(have)
        listed_raw += sum(f.bytes for f in shard.raw_files)
        present_raw += sum(f.bytes for f, ok in zip(shard.raw_files, have, strict=True) if ok)
        for file in shard.zip_files:
            if is_regular_file(folder.path / file.basename):
                zip_files += 1
                zip_bytes += _file_size(folder.path / file.basename)
    return {
        "folder": scan.rel(folder.path),
        "error": folder.error,
        "has_index": folder.has_index,
        "remote": read_remote(folder.path),
        "limit": limit_status(folder.path),
        "shards_downloaded": len(folder.entries),
        "bytes_downloaded": sum(entry.bytes or 0 for entry in folder.entries),
        "shards_listed": len(folder.shards),
        "shards_present": present,
        "shards_partial": partial,
        "bytes_listed": listed_raw,
        "bytes_present": present_raw,
        "compressed_files_kept": zip_files,
        "compressed_bytes_kept": zip_bytes,
    }


def _flag_over_limit(indexes: list[dict[str, Any]]) -> None:
    """Set each index's ``over_limit_bytes``: how far the shards shardflow downloaded exceed its limit.

    A dataset's limit is one budget over the folders of all its streams, and it writes the same record
    (limit and pid) into each: folders with equal records are added up together. 0 when within the limit,
    None without one.
    """
    used: dict[tuple[int, int], int] = {}
    for index in indexes:
        if index["limit"]:
            key = (index["limit"]["bytes"], index["limit"]["pid"])
            used[key] = used.get(key, 0) + index["bytes_downloaded"]
    for index in indexes:
        limit = index["limit"]
        index["over_limit_bytes"] = (
            None if not limit else max(0, used[(limit["bytes"], limit["pid"])] - limit["bytes"])
        )


def cache_status(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe the folder ``path`` and the cache folders in it: the stable dict ``cache status --json``
    prints (``indexes`` holds one dict per cache folder; ``not_caches`` the folders that hold an index but
    no shardflow bookkeeping).

    Raises:
        DatasetConfigError: ``path`` is not a folder.
    """
    scan = _scan(path)
    size = disk = 0
    for file in scan.files:
        try:
            info = os.lstat(file)
        except FileNotFoundError:
            continue
        size += info.st_size
        disk += info.st_blocks * 512
    indexes = [_folder_status(scan, folder) for folder in scan.caches]
    _flag_over_limit(indexes)
    return {
        "path": str(scan.root),
        "files": len(scan.files),
        "bytes": size,
        "disk_bytes": disk,
        "indexes": indexes,
        "not_caches": [scan.rel(folder) for folder in scan.others],
        "temporary_files": [_temp_entry(scan, file) for file in scan.temps],
        "locks": [_lock_entry(scan, file) for file in scan.locks],
        "limit": min((index["limit"]["bytes"] for index in indexes if index.get("limit")), default=None),
        "over_limit": [index["folder"] for index in indexes if index["over_limit_bytes"]],
    }


# -- clean ------------------------------------------------------------------------------------------


@contextmanager
def _shard_lock(folder: Path, name: str) -> Iterator[bool]:
    """Hold the download lock of shard ``name`` (or of ``index.json``), when its lock file exists, for the
    ``with`` block: yields False (holding nothing) when another process holds it."""
    lock = lock_path(folder, name)
    if is_regular_file(lock):
        fd = try_lock(lock, create=False)
    else:
        fd = None if os.path.lexists(lock) else -1  # not a regular file: not ours to take, so not free
    try:
        yield fd is not None
    finally:
        if fd is not None and fd >= 0:
            release(fd)


def _listed_file(folder: Path, name: str) -> tuple[Path, str | None]:
    """The path of a file a cache entry lists, and why it is left alone (None: it may be removed)."""
    pure = PurePosixPath(name)
    path = folder / name
    if not pure.parts or pure.is_absolute() or ".." in pure.parts:
        return path, "its path leads out of the cache folder"
    if pure.parts[0] in BOOKKEEPING or pure.name == INDEX_BASENAME:
        return path, "it is the index or shardflow's bookkeeping, not a shard file"
    if os.path.islink(path):
        return path, "it is a symlink"
    if os.path.realpath(path) != os.path.join(os.path.realpath(folder), *pure.parts):
        return path, "a folder on its way is a symlink"
    if os.path.lexists(path) and not is_regular_file(path):
        return path, "it is not a regular file"
    return path, None


@dataclass
class _Cleaner:
    """The removals of one ``cache clean`` (only listed with ``dry_run``)."""

    scan: _Scan
    dry_run: bool
    removed: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    gone: set[Path] = field(default_factory=set)

    def remove(self, path: Path, kind: str) -> bool:
        """Unlink ``path`` (a regular file inside the folder given, or nothing) and note it."""
        if path in self.gone or not is_regular_file(path):
            return False
        if not inside(self.scan.root, path):
            self.keep(path, kind, f"its real path is outside {self.scan.root}")
            return False
        size = _file_size(path)
        if not self.dry_run:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            logger.debug("removed %s", path)
        self.removed.append({"path": self.scan.rel(path), "kind": kind, "bytes": size})
        self.gone.add(path)
        return True

    def keep(self, path: Path, kind: str, reason: str) -> None:
        self.kept.append({"path": self.scan.rel(path), "kind": kind, "reason": reason})

    def shard_files(self, folder: _Folder, entry: Entry) -> None:
        """Remove the files ``entry`` lists, unless its shard's lock is held; say why any is left alone."""
        files = []
        for name in entry.files:
            path, why = _listed_file(folder.path, name)
            if why:
                reason = f"{self.scan.rel(entry.path)} lists it, but {why}: left alone"
                logger.warning("%s: %s", path, reason)
                self.keep(path, "shard", reason)
            elif is_regular_file(path) and path not in self.gone:
                files.append(path)
        if not files:
            return
        with _shard_lock(folder.path, entry.name) as free:
            for file in files:
                if free:
                    self.remove(file, "shard")
                else:
                    self.keep(file, "shard", "its lock is held")

    def stale_entries(self, folder: _Folder) -> int:
        """Remove the entries none of whose files is left; returns how many entries are left."""
        for entry in folder.entries:
            listed = [_listed_file(folder.path, name) for name in entry.files]
            if any(why or (os.path.lexists(path) and path not in self.gone) for path, why in listed):
                continue
            with _shard_lock(folder.path, entry.name) as free:
                if free:
                    self.remove(entry.path, "entry")
                else:
                    self.keep(entry.path, "entry", "its shard is downloading")
        return sum(entry.path not in self.gone and os.path.lexists(entry.path) for entry in folder.entries)

    def markers(self, folder: _Folder, entries_left: int) -> None:
        """Remove ``remote.json`` and the ``.evicted`` tombstones once no entry is left, so that the folder
        may cache another remote; under ``index.json``'s lock (not while a dataset loads the index)."""
        marker = remote_path(folder.path)
        tombstones = sorted((folder.path / CACHE_FOLDER).glob("*.evicted"))
        files = [path for path in (marker, *tombstones) if is_regular_file(path)]
        if not files:
            return
        reason = (
            f"{entries_left} cache {'entry' if entries_left == 1 else 'entries'} left"
            if entries_left
            else None
        )
        with _shard_lock(folder.path, INDEX_BASENAME) as free:
            if not reason and not free:
                reason = "a dataset is loading the index (its lock is held)"
            for file in files:
                if reason is None:
                    self.remove(file, "marker")
                elif file == marker:
                    self.keep(file, "marker", reason)

    def lock(self, lock: Path) -> None:
        """Remove ``lock`` unless someone holds it: taken without waiting (and on the file the path still
        names) before it is unlinked."""
        try:
            fd = try_lock(lock, create=False)
        except OSError:  # gone, or replaced by a symlink since the scan
            return
        if fd is None:
            if is_regular_file(lock):
                self.keep(lock, "lock", "held")
            return
        try:
            self.remove(lock, "lock")
        finally:
            release(fd)


def cache_clean(
    path: str | os.PathLike[str], remove_shards: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """Remove what shardflow left in the cache folders under ``path``: stale temporary files, unheld lock
    files and the entries of shards no longer there; with ``remove_shards``, the shard files the cache
    downloaded, and the folder's remote marker once nothing is left.

    Only what shardflow made is removed (see the module's docstring): never ``index.json``, a file no cache
    entry lists, a folder without shardflow's bookkeeping, nor anything through a symlink. A lock is taken
    without waiting before its file is unlinked, so a live holder is never disturbed; a shard whose lock is
    held is kept. ``dry_run`` lists exactly what a run would remove.

    Returns:
        The stable dict ``cache clean --json`` prints: ``removed`` and ``kept`` (lists of ``path``, ``kind``
        and ``bytes`` or ``reason``), ``freed_bytes``, ``dry_run`` and ``errors``.

    Raises:
        DatasetConfigError: ``path`` is not a folder.
    """
    scan = _scan(path)
    clean = _Cleaner(scan, dry_run)
    # Without remove_shards a corrupt index changes nothing; with it, the temporary files of its shards stay.
    errors = [folder.error for folder in scan.caches if folder.error] if remove_shards else []
    for temp in scan.temps:
        found = _temp_entry(scan, temp)
        if found["stale"]:
            clean.remove(temp, "temporary")
        else:
            clean.keep(temp, "temporary", f"pid {found['pid']} is alive")
    for folder in scan.caches:
        if remove_shards:
            for entry in folder.entries:
                clean.shard_files(folder, entry)
        left = clean.stale_entries(folder)
        if remove_shards:
            clean.markers(folder, left)
    for lock in scan.locks:
        clean.lock(lock)
    return {
        "path": str(scan.root),
        "dry_run": dry_run,
        "removed": clean.removed,
        "kept": clean.kept,
        "freed_bytes": sum(item["bytes"] for item in clean.removed),
        "errors": errors,
    }
