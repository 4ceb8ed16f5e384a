"""The ``shardflow`` command: ``inspect`` a dataset, ``cache status`` / ``cache clean`` a local cache folder,
``plan`` an epoch (``shardflow.plan``'s command, handed every argument after ``plan``).

Run as ``shardflow ...`` (the meta-package's console script) or ``python -m shardflow ...``. The packages
each command needs are imported inside it, so ``import shardflow`` stays free of them. The command's own
output goes to stdout (``--json`` for scripts: a stable dict); diagnostics go to logging on stderr
(``-v``); an error prints one line naming the path or URL at fault and exits 1.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import logging
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["main", "inspect_dataset", "cache_status", "cache_clean", "CliError"]

logger = logging.getLogger("shardflow.cli")

INDEX_BASENAME = "index.json"
# The dataset's lock and entry folders (shardflow.dataset._locks.LOCK_FOLDER, ._cache.CACHE_FOLDER) and the
# file where a dataset states its cache_limit: named here so that the cache commands do not import torch;
# tests/cli/test_cli.py keeps them equal.
LOCK_FOLDER = ".shardflow-locks"
CACHE_FOLDER = ".shardflow-cache"
LIMIT_FILE = "limit.json"
# The pid inside a temporary name ".<final>.<pid>-<8 hex>.tmp" (the TEMP_NAME of format and storage).
_TEMP_PID = re.compile(r"\.(\d+)-[0-9a-f]{8}\.tmp$")


class CliError(Exception):
    """A failure the command reports in one line (naming the path or URL) before exiting 1."""


def _is_url(text: str) -> bool:
    head, sep, _ = text.partition("://")
    return bool(sep) and len(head) > 1


def _plural(count: int, word: str) -> str:
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word[:-1]}ies" if word.endswith("y") else f"{count} {word}s"


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit} ({count} B)"
        value /= 1024
    raise AssertionError("unreachable")


# -- inspect ---------------------------------------------------------------------------------------


def inspect_dataset(source: str, split: str | None = None) -> dict[str, Any]:
    """Describe the dataset at ``source`` (a storage URL, a local folder or its ``index.json``).

    Returns:
        The stable dict ``--json`` prints: ``source``, ``index``, ``version``, ``streams``, ``shards``,
        ``samples``, ``formats``, ``compression``, ``hashes``, ``columns``, ``bytes`` (``raw``,
        ``compressed``) and ``shard_list`` (one dict per shard).

    Raises:
        CliError: There is no readable index there.
    """
    if _is_url(source):
        from shardflow.storage import ObjectNotFoundError, StorageError, from_url

        root = source.rstrip("/") + ("/" + split.strip("/") if split else "")
        where = f"{root}/{INDEX_BASENAME}"
        with tempfile.TemporaryDirectory(prefix="shardflow-inspect-") as scratch:
            try:
                from_url(root).download(INDEX_BASENAME, Path(scratch) / INDEX_BASENAME)
            except ObjectNotFoundError:
                raise CliError(f"{where} does not exist: check the URL and --split") from None
            except (StorageError, ImportError) as exc:
                raise CliError(f"cannot read {where}: {exc}") from None
            logger.debug("downloaded %s to %s", where, scratch)
            return _describe(source, where, Path(scratch) / INDEX_BASENAME)
    path = Path(os.path.expanduser(source))
    if path.is_file():
        if split:
            raise CliError(f"--split {split} needs the dataset folder, not the index file {path}")
        index = path
    else:
        if not path.exists():
            raise CliError(f"{path} does not exist")
        index = (path / split if split else path) / INDEX_BASENAME
        if not index.is_file():
            raise CliError(f"{index} does not exist: is {path} a dataset folder (check --split)?")
    return _describe(source, str(index), index)


def _describe(source: str, where: str, index: Path) -> dict[str, Any]:
    from shardflow.format import FormatError, read_shards

    try:
        document = json.loads(index.read_bytes())
        shards = read_shards(index, allow_unsafe_types=True)  # nothing is decoded here
    except (ValueError, FormatError) as exc:
        raise CliError(f"{where} is not a valid shardflow/MDS index: {exc}") from None
    columns: dict[str, str] = {}
    formats: set[str] = set()
    compressions: set[str] = set()
    hashes: set[str] = set()
    raw = compressed = 0
    shard_list = []
    for shard in shards:
        formats.add(shard.format)
        if shard.compression:
            compressions.add(shard.compression)
        for name, encoding in shard.columns.items():
            if columns.setdefault(name, encoding) != encoding and encoding not in columns[name].split(" | "):
                columns[name] += f" | {encoding}"
        shard_raw = sum(file.bytes for file in shard.raw_files)
        shard_zip = sum(file.bytes for file in shard.zip_files) if shard.zip_files else None
        for file in shard.files:
            hashes.update(file.hashes)
        raw += shard_raw
        compressed += shard_zip or 0
        shard_list.append(
            {
                "basename": shard.basename,
                "format": shard.format,
                "samples": shard.samples,
                "compression": shard.compression,
                "raw_bytes": shard_raw,
                "compressed_bytes": shard_zip,
                "files": [file.basename for file in shard.files],
            }
        )
    return {
        "source": source,
        "index": where,
        "version": document.get("version") if isinstance(document, dict) else None,
        "streams": 1,
        "shards": len(shards),
        "samples": sum(shard.samples for shard in shards),
        "formats": sorted(formats),
        "compression": sorted(compressions),
        "hashes": sorted(hashes),
        "columns": columns,
        "bytes": {"raw": raw, "compressed": compressed if compressions else None},
        "shard_list": shard_list,
    }


def _print_inspect(report: dict[str, Any]) -> None:
    out = [
        f"dataset     {report['source']}",
        f"index       {report['index']} (version {report['version']})",
        f"streams     {report['streams']}",
        f"shards      {report['shards']}",
        f"samples     {report['samples']}",
        f"format      {', '.join(report['formats']) or '-'}",
        f"compression {', '.join(report['compression']) or 'none'}",
        f"hashes      {', '.join(report['hashes']) or 'none'}",
        f"bytes       raw {_size(report['bytes']['raw'])}, compressed {_size(report['bytes']['compressed'])}",
        "columns",
    ]
    width = max((len(name) for name in report["columns"]), default=0)
    out += [f"  {name:<{width}}  {encoding}" for name, encoding in report["columns"].items()]
    print("\n".join(out))


# -- the cache folder ------------------------------------------------------------------------------
#
# A cache folder is a folder that holds shardflow's bookkeeping: a real (not symlinked) .shardflow-cache/
# folder. A folder with an index.json and no bookkeeping (a dataset a writer made, say) is not a cache.
# What shardflow made, and so all that `cache clean` may remove:
# - the files a cache entry (.shardflow-cache/<shard>.json) lists (--all), when each is a regular file
#   inside its cache folder, reached through no symlink;
# - an entry whose files are gone; with --all, remote.json and the .evicted tombstones once no entry is left;
# - stale temporary files inside .shardflow-cache/ or .shardflow-locks/, or named after a file that the
#   cache folder's index or entries list (index.json included), beside it;
# - lock files (*.lock) in .shardflow-locks/ that nobody holds.
# The walk never enters a symlinked folder, and nothing is removed that is a symlink or whose real path is
# outside the folder given.

BOOKKEEPING = (LOCK_FOLDER, CACHE_FOLDER)
REMOTE_FILE = "remote.json"
# The final name inside a temporary name ".<final>.<pid>-<8 hex>.tmp" (a writer may add ".<tag>" to it).
_TEMP_FINAL = re.compile(r"^\.(.+)\.\d+-[0-9a-f]{8}\.tmp$")


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a symlink to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _inside(real_root: str, path: Path) -> bool:
    """Whether ``path`` stays inside the folder whose real path is ``real_root``, every symlink followed."""
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _open_lock(path: Path, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW)  # a lock file that is a symlink is not ours: ELOOP


def _lock_held(path: Path) -> bool | None:
    """Whether someone holds an flock on ``path`` now (an exclusive one, tried and dropped, tells); None if
    gone."""
    try:
        fd = _open_lock(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _lock_pid(path: Path) -> int | None:
    try:
        text = path.read_bytes()[:32].decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class _Entry:
    """A cache entry: the shard shardflow downloaded (``name``) and its ``files``, relative to the folder."""

    path: Path
    name: str
    files: tuple[str, ...]
    bytes: int | None


@dataclass
class _Folder:
    """A cache folder: its index's shards (when readable) and entries, and every name they list."""

    path: Path
    has_index: bool = False
    shards: tuple[Any, ...] = ()
    error: str | None = None
    entries: list[_Entry] = field(default_factory=list)
    names: set[str] = field(default_factory=set)


@dataclass
class _Scan:
    """What the folder given holds: its cache folders, shardflow's temporary and lock files, every file."""

    root: Path
    real: str
    caches: list[_Folder] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)  # an index.json without bookkeeping: not a cache
    temps: list[Path] = field(default_factory=list)
    locks: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _read_entries(folder: Path) -> list[_Entry]:
    """The readable entries in ``folder``'s bookkeeping (only ``name`` and ``files`` are needed)."""
    found = []
    with os.scandir(folder / CACHE_FOLDER) as items:
        paths = sorted(
            Path(item.path)
            for item in items
            if item.name.endswith(".json")
            and item.name not in (LIMIT_FILE, REMOTE_FILE)
            and item.is_file(follow_symlinks=False)
        )
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            name, files, size = data["name"], data["files"], data.get("bytes")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            name = files = size = None
        if not (isinstance(name, str) and isinstance(files, list) and all(isinstance(f, str) for f in files)):
            logger.warning("%s is not a cache entry shardflow can read (name, files): left alone", path)
            continue
        found.append(_Entry(path, name, tuple(files), size if isinstance(size, int) else None))
    return found


def _read_folder(path: Path) -> _Folder:
    from shardflow.format import FormatError, read_shards

    folder = _Folder(path, has_index=_is_file(path / INDEX_BASENAME), entries=_read_entries(path))
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
    found = _TEMP_FINAL.match(name)
    if not found:
        return False
    final = found.group(1)
    candidates = (final, final.rpartition(".")[0])  # without, then with a writer's ".<tag>"
    return any(c and (here / c).relative_to(folder.path).as_posix() in folder.names for c in candidates)


def _scan(path: str) -> _Scan:
    from shardflow.format import TEMP_NAME

    root = Path(os.path.expanduser(path))
    if not root.exists():
        raise CliError(f"{root} does not exist")
    if not root.is_dir():
        raise CliError(f"{root} is not a folder: give a dataset's local cache folder")
    scan = _Scan(root, os.path.realpath(root))
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
            if not _is_file(file):
                continue  # a symlink (never followed, never removed) or not a file
            scan.files.append(file)
            if not TEMP_NAME.match(name):
                if books and here.name == LOCK_FOLDER and name.endswith(".lock"):
                    scan.locks.append(file)
            elif books or (owner is not None and _named_after(owner, here, name)):
                scan.temps.append(file)
    return scan


def _rel(scan: _Scan, path: Path) -> str:
    return os.path.relpath(path, scan.root)


def _temp_entry(scan: _Scan, path: Path) -> dict[str, Any]:
    found = _TEMP_PID.search(path.name)
    pid = int(found.group(1)) if found else None
    alive = pid is not None and _pid_alive(pid)
    try:
        size = os.lstat(path).st_size
    except FileNotFoundError:
        size = 0
    return {"path": _rel(scan, path), "bytes": size, "pid": pid, "pid_alive": alive, "stale": not alive}


def _lock_entry(scan: _Scan, path: Path) -> dict[str, Any]:
    pid = _lock_pid(path)
    held = _lock_held(path)
    return {
        "path": _rel(scan, path),
        "guards": path.name.removesuffix(".lock").replace("%", "/"),
        "held": bool(held),
        "pid": pid,
        "pid_alive": pid is not None and _pid_alive(pid),
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    if not _is_file(path):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _limit(folder: Path) -> dict[str, Any] | None:
    """The cache_limit a dataset last set on ``folder``, with the setter's pid; None if none did."""
    data = _read_json(folder / CACHE_FOLDER / LIMIT_FILE) or {}
    try:
        limit, pid = int(data["limit"]), int(data["pid"])
    except (KeyError, TypeError, ValueError):
        return None
    return {"bytes": limit, "pid": pid, "pid_alive": _pid_alive(pid)}


def _remote(folder: Path) -> str | None:
    """The remote the cache folder caches, as its ``remote.json`` names it; None if none does."""
    remote = (_read_json(folder / CACHE_FOLDER / REMOTE_FILE) or {}).get("remote")
    return remote if isinstance(remote, str) else None


def _size_matches(path: Path, size: int) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == size


def _file_size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def _folder_status(scan: _Scan, folder: _Folder) -> dict[str, Any]:
    present = partial = zip_files = zip_bytes = listed_raw = present_raw = 0
    for shard in folder.shards:
        have = [_size_matches(folder.path / f.basename, f.bytes) for f in shard.raw_files]
        present += all(have)
        partial += any(have) and not all(have)
        listed_raw += sum(f.bytes for f in shard.raw_files)
        present_raw += sum(f.bytes for f, ok in zip(shard.raw_files, have, strict=True) if ok)
        for file in shard.zip_files:
            if _is_file(folder.path / file.basename):
                zip_files += 1
                zip_bytes += _file_size(folder.path / file.basename)
    return {
        "folder": _rel(scan, folder.path),
        "error": folder.error,
        "has_index": folder.has_index,
        "remote": _remote(folder.path),
        "limit": _limit(folder.path),
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


def cache_status(path: str) -> dict[str, Any]:
    """Describe the folder ``path`` and the cache folders in it: the stable dict ``cache status --json``
    prints (``indexes`` holds one dict per cache folder; ``not_caches`` the folders that hold an index but
    no shardflow bookkeeping).

    Raises:
        CliError: ``path`` is not a folder.
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
        "not_caches": [_rel(scan, folder) for folder in scan.others],
        "temporary_files": [_temp_entry(scan, file) for file in scan.temps],
        "locks": [_lock_entry(scan, file) for file in scan.locks],
        "limit": min((index["limit"]["bytes"] for index in indexes if index.get("limit")), default=None),
        "over_limit": [index["folder"] for index in indexes if index["over_limit_bytes"]],
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


def _print_status(report: dict[str, Any]) -> None:
    out = [
        f"cache       {report['path']}",
        f"size        {_size(report['bytes'])} in {_plural(report['files'], 'file')}, "
        f"{_size(report['disk_bytes'])} on disk",
        "limit in force: "
        + (
            _size(report["limit"])
            if report["limit"] is not None
            else "none (no dataset set cache_limit here)"
        ),
    ]
    if report["over_limit"]:
        out.append(
            f"OVER LIMIT  {_plural(len(report['over_limit']), 'cache folder')} above their cache_limit: "
            "downloads in flight overshoot briefly; else a run without that limit filled them, and the next "
            "run with it evicts down to it (or: shardflow cache clean --all)"
        )
    if not report["indexes"]:
        out.append(f"indexes     none found (no folder with {CACHE_FOLDER}/ here)")
    for index in report["indexes"]:
        where = os.path.join(index["folder"], INDEX_BASENAME)
        out.append(f"index       {where}" + ("" if index["has_index"] else " (missing)"))
        if index["remote"]:
            out.append(f"  caches    {index['remote']}")
        if index["error"]:
            out.append(f"  error: {index['error']}")
            continue
        out.append(
            f"  shards    {index['shards_present']} of {index['shards_listed']} present"
            + (f" ({index['shards_partial']} partial)" if index["shards_partial"] else "")
            + f", {_size(index['bytes_present'])} of {_size(index['bytes_listed'])}"
        )
        out.append(
            f"  compressed files kept: {index['compressed_files_kept']}, "
            f"{_size(index['compressed_bytes_kept'])}"
        )
        out.append(
            f"  downloaded by shardflow (evictable): {index['shards_downloaded']} shards, "
            f"{_size(index['bytes_downloaded'])}"
        )
        if index["limit"]:
            limit = index["limit"]
            state = "alive" if limit["pid_alive"] else "gone"
            out.append(f"  cache_limit {_size(limit['bytes'])}, set by pid {limit['pid']} ({state})")
            if index["over_limit_bytes"]:
                out.append(f"  OVER its cache_limit by {_size(index['over_limit_bytes'])}")
    for folder in report["not_caches"]:
        out.append(f"not a cache {os.path.join(folder, INDEX_BASENAME)} (no {CACHE_FOLDER}/: left alone)")
    temps = report["temporary_files"]
    stale = [t for t in temps if t["stale"]]
    out.append(f"temporary   {_plural(len(temps), 'file')}, {len(stale)} stale")
    for temp in temps:
        state = "stale" if temp["stale"] else f"in use (pid {temp['pid']} alive)"
        out.append(f"  {temp['path']}  {_size(temp['bytes'])}  {state}")
    locks = report["locks"]
    out.append(f"locks       {_plural(len(locks), 'lock file')}, {sum(lk['held'] for lk in locks)} held")
    for lock in locks:
        pid = (
            "no pid"
            if lock["pid"] is None
            else f"pid {lock['pid']} {'alive' if lock['pid_alive'] else 'dead'}"
        )
        out.append(f"  {lock['path']}  {'held' if lock['held'] else 'free'}  ({pid})")
    print("\n".join(out))


def _try_lock(path: Path) -> int | None:
    """An fd holding ``path``'s exclusive lock, taken without waiting; None when someone holds it."""
    fd = _open_lock(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


@contextmanager
def _shard_lock(folder: Path, shard: str) -> Iterator[bool]:
    """Hold the download lock of ``shard`` (or of ``index.json``), when its lock file exists, for the
    ``with`` block: yields False (holding nothing) when another process holds it."""
    lock = folder / LOCK_FOLDER / (shard.replace("/", "%") + ".lock")
    if _is_file(lock):
        fd = _try_lock(lock)
    else:
        fd = None if os.path.lexists(lock) else -1  # not a regular file: not ours to take, so not free
    try:
        yield fd is not None
    finally:
        if fd is not None and fd >= 0:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (info.st_dev, info.st_ino)


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
    if os.path.lexists(path) and not _is_file(path):
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
        if path in self.gone or not _is_file(path):
            return False
        if not _inside(self.scan.real, path):
            self.keep(path, kind, f"its real path is outside {self.scan.root}")
            return False
        size = _file_size(path)
        if not self.dry_run:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            logger.debug("removed %s", path)
        self.removed.append({"path": _rel(self.scan, path), "kind": kind, "bytes": size})
        self.gone.add(path)
        return True

    def keep(self, path: Path, kind: str, reason: str) -> None:
        self.kept.append({"path": _rel(self.scan, path), "kind": kind, "reason": reason})

    def shard_files(self, folder: _Folder, entry: _Entry) -> None:
        """Remove the files ``entry`` lists, unless its shard's lock is held; say why any is left alone."""
        files = []
        for name in entry.files:
            path, why = _listed_file(folder.path, name)
            if why:
                reason = f"{_rel(self.scan, entry.path)} lists it, but {why}: left alone"
                logger.warning("%s: %s", path, reason)
                self.keep(path, "shard", reason)
            elif _is_file(path) and path not in self.gone:
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
        books = folder.path / CACHE_FOLDER
        marker = books / REMOTE_FILE
        files = [path for path in (marker, *sorted(books.glob("*.evicted"))) if _is_file(path)]
        if not files:
            return
        reason = f"{_plural(entries_left, 'cache entry')} left" if entries_left else None
        with _shard_lock(folder.path, INDEX_BASENAME) as free:
            if not reason and not free:
                reason = "a dataset is loading the index (its lock is held)"
            for file in files:
                if reason is None:
                    self.remove(file, "marker")
                elif file == marker:
                    self.keep(file, "marker", reason)

    def lock(self, lock: Path) -> None:
        """Remove ``lock`` unless someone holds it: taken without waiting before it is unlinked."""
        try:
            fd = _try_lock(lock)
        except OSError:  # gone, or replaced by a symlink since the scan
            return
        if fd is None:
            self.keep(lock, "lock", "held")
            return
        try:
            if _same_file(fd, lock):  # a holder may have replaced it since it was listed
                self.remove(lock, "lock")
        finally:
            os.close(fd)


def cache_clean(path: str, remove_shards: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """Remove what shardflow left in the cache folders under ``path``: stale temporary files, unheld lock
    files and the entries of shards no longer there; with ``remove_shards``, the shard files the cache
    downloaded, and the folder's remote marker once nothing is left.

    Only what shardflow made is removed (see the comment above ``BOOKKEEPING``): never ``index.json``, a
    file no cache entry lists, a folder without shardflow's bookkeeping, nor anything through a symlink. A
    lock is taken without waiting before its file is unlinked, so a live holder is never disturbed; a
    shard whose lock is held is kept. ``dry_run`` lists exactly what a run would remove.

    Returns:
        The stable dict ``cache clean --json`` prints: ``removed`` and ``kept`` (lists of ``path``, ``kind``
        and ``bytes`` or ``reason``), ``freed_bytes``, ``dry_run`` and ``errors``.

    Raises:
        CliError: ``path`` is not a folder.
    """
    scan = _scan(path)
    clean = _Cleaner(scan, dry_run)
    # Without --all a corrupt index changes nothing; with it, the temporary files of its shards stay.
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


def _print_clean(report: dict[str, Any]) -> None:
    verb = "would remove" if report["dry_run"] else "removed"
    counts = {
        kind: sum(item["kind"] == kind for item in report["removed"])
        for kind in ("temporary", "lock", "shard", "entry", "marker")
    }
    out = [
        f"cache       {report['path']}",
        f"{verb}  {_plural(counts['temporary'], 'temporary file')}, {_plural(counts['lock'], 'lock file')}, "
        f"{_plural(counts['shard'], 'shard file')}, {_plural(counts['entry'], 'cache entry')}, "
        f"{_plural(counts['marker'], 'marker')}: {_size(report['freed_bytes'])}",
    ]
    out += [f"  {item['kind']:<9}  {item['path']}" for item in report["removed"]]
    if report["kept"]:
        out.append(f"kept        {_plural(len(report['kept']), 'file')}")
        out += [f"  {item['kind']:<9}  {item['path']}  ({item['reason']})" for item in report["kept"]]
    out += [f"error       {error}" for error in report["errors"]]
    print("\n".join(out))


# -- the command line ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """The ``shardflow`` argument parser."""
    from shardflow._version import __version__

    cli = argparse.ArgumentParser(prog="shardflow", description="Inspect shardflow/MDS datasets and caches.")
    cli.add_argument("--version", action="version", version=f"shardflow {__version__}")
    cli.add_argument("-v", "--verbose", action="store_true", help="log diagnostics on stderr")
    commands = cli.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser("inspect", help="describe a dataset from its index.json")
    inspect.add_argument(
        "source", metavar="URL_OR_PATH", help="a storage URL (s3://..., file://...) or folder"
    )
    inspect.add_argument("--split", default=None, help="a sub-folder holding the split")
    inspect.add_argument("--json", action="store_true", help="print a JSON object")

    cache = commands.add_parser("cache", help="a local cache folder: status, clean")
    actions = cache.add_subparsers(dest="action", required=True, metavar="ACTION")
    where = "a dataset's local folder, or a folder holding such folders"
    status = actions.add_parser("status", help="what the cache folder holds")
    status.add_argument("path", metavar="PATH", help=where)
    status.add_argument("--json", action="store_true", help="print a JSON object")
    clean = actions.add_parser("clean", help="remove stale temporary files and unheld lock files")
    clean.add_argument("path", metavar="PATH", help=where)
    clean.add_argument(
        "--all",
        action="store_true",
        help="also remove the shard files shardflow downloaded (never index.json)",
    )
    clean.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    clean.add_argument("--json", action="store_true", help="print a JSON object")

    # shardflow.plan parses its own arguments (`shardflow plan --help`); it is imported only when run.
    plan = commands.add_parser(
        "plan",
        help="simulate an epoch: downloads, cache use, stalls, smallest cache_limit (plan --help)",
        add_help=False,
        prefix_chars="\0",
    )
    plan.add_argument("arguments", nargs=argparse.REMAINDER)
    return cli


def _emit(report: dict[str, Any], as_json: bool, human: Any) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        human(report)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 an error, 2 a usage error)."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="shardflow: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "plan":
        from shardflow.plan.cli import main as plan_main

        return plan_main([*(["-v"] if args.verbose else []), *args.arguments], prog="shardflow plan")
    try:
        if args.command == "inspect":
            _emit(inspect_dataset(args.source, args.split), args.json, _print_inspect)
            return 0
        if args.action == "status":
            _emit(cache_status(args.path), args.json, _print_status)
            return 0
        report = cache_clean(args.path, remove_shards=args.all, dry_run=args.dry_run)
        _emit(report, args.json, _print_clean)
        return 1 if report["errors"] else 0
    except BrokenPipeError:  # stdout closed early (| head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CliError as exc:
        print(f"shardflow: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"shardflow: error: {exc}", file=sys.stderr)
        return 1
