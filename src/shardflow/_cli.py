"""The ``shardflow`` command: ``inspect`` a dataset, ``cache status`` / ``cache clean`` a local cache folder.

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
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
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
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


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


def _lock_held(path: Path) -> bool | None:
    """Whether someone holds an flock on ``path`` now (an exclusive one, tried and dropped, tells); None if
    gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
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


@dataclass
class _Index:
    folder: Path
    shards: tuple[Any, ...] = ()
    error: str | None = None


@dataclass
class _Cache:
    root: Path
    indexes: list[_Index] = field(default_factory=list)
    temps: list[Path] = field(default_factory=list)
    locks: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def _scan(path: str) -> _Cache:
    from shardflow.format import TEMP_NAME, FormatError, read_shards

    root = Path(os.path.expanduser(path))
    if not root.exists():
        raise CliError(f"{root} does not exist")
    if not root.is_dir():
        raise CliError(f"{root} is not a folder: give a dataset's local cache folder")
    cache = _Cache(root)
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        here = Path(folder)
        for name in sorted(names):
            file = here / name
            cache.files.append(file)
            if TEMP_NAME.match(name):
                cache.temps.append(file)
            elif here.name == LOCK_FOLDER and name.endswith(".lock"):
                cache.locks.append(file)
        if INDEX_BASENAME in names and here.name not in (LOCK_FOLDER, CACHE_FOLDER):
            index = _Index(here)
            try:
                index.shards = read_shards(here, allow_unsafe_types=True)
            except (ValueError, OSError, FormatError) as exc:
                index.error = f"{here / INDEX_BASENAME} cannot be read: {exc}"
                logger.warning("%s", index.error)
            cache.indexes.append(index)
    return cache


def _rel(cache: _Cache, path: Path) -> str:
    return os.path.relpath(path, cache.root)


def _temp_entry(cache: _Cache, path: Path) -> dict[str, Any]:
    found = _TEMP_PID.search(path.name)
    pid = int(found.group(1)) if found else None
    alive = pid is not None and _pid_alive(pid)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    return {"path": _rel(cache, path), "bytes": size, "pid": pid, "pid_alive": alive, "stale": not alive}


def _lock_entry(cache: _Cache, path: Path) -> dict[str, Any]:
    pid = _lock_pid(path)
    held = _lock_held(path)
    return {
        "path": _rel(cache, path),
        "guards": path.name.removesuffix(".lock").replace("%", "/"),
        "held": bool(held),
        "pid": pid,
        "pid_alive": pid is not None and _pid_alive(pid),
    }


def _limit(folder: Path) -> dict[str, Any] | None:
    """The cache_limit a dataset last set on ``folder``, with the setter's pid; None if none did."""
    try:
        data = json.loads((folder / CACHE_FOLDER / LIMIT_FILE).read_text(encoding="utf-8"))
        limit, pid = int(data["limit"]), int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {"bytes": limit, "pid": pid, "pid_alive": _pid_alive(pid)}


def _entries(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The cache's entries in ``folder``: the shards shardflow downloaded (and may evict), readable ones."""
    found = []
    for path in sorted((folder / CACHE_FOLDER).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            found.append(
                (path, {"name": str(data["name"]), "files": list(data["files"]), "bytes": int(data["bytes"])})
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def cache_status(path: str) -> dict[str, Any]:
    """Describe the cache folder ``path``: the stable dict ``cache status --json`` prints.

    Raises:
        CliError: ``path`` is not a folder.
    """
    cache = _scan(path)
    size = disk = 0
    for file in cache.files:
        try:
            stat = file.stat()
        except FileNotFoundError:
            continue
        size += stat.st_size
        disk += stat.st_blocks * 512
    indexes = []
    for index in cache.indexes:
        entry: dict[str, Any] = {"folder": _rel(cache, index.folder), "error": index.error}
        present = partial = zip_files = zip_bytes = listed_raw = present_raw = 0
        for shard in index.shards:
            have = [_size_matches(index.folder / f.basename, f.bytes) for f in shard.raw_files]
            present += all(have)
            partial += any(have) and not all(have)
            listed_raw += sum(f.bytes for f in shard.raw_files)
            present_raw += sum(f.bytes for f, ok in zip(shard.raw_files, have, strict=True) if ok)
            for file in shard.zip_files:
                if (index.folder / file.basename).is_file():
                    zip_files += 1
                    zip_bytes += (index.folder / file.basename).stat().st_size
        entries = _entries(index.folder)
        entry.update(
            limit=_limit(index.folder),
            shards_downloaded=len(entries),
            bytes_downloaded=sum(data["bytes"] for _, data in entries),
            shards_listed=len(index.shards),
            shards_present=present,
            shards_partial=partial,
            bytes_listed=listed_raw,
            bytes_present=present_raw,
            compressed_files_kept=zip_files,
            compressed_bytes_kept=zip_bytes,
        )
        indexes.append(entry)
    return {
        "path": str(cache.root),
        "files": len(cache.files),
        "bytes": size,
        "disk_bytes": disk,
        "indexes": indexes,
        "temporary_files": [_temp_entry(cache, file) for file in cache.temps],
        "locks": [_lock_entry(cache, file) for file in cache.locks],
        "limit": min((index["limit"]["bytes"] for index in indexes if index.get("limit")), default=None),
    }


def _size_matches(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


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
    if not report["indexes"]:
        out.append("indexes     none found")
    for index in report["indexes"]:
        out.append(f"index       {os.path.join(index['folder'], INDEX_BASENAME)}")
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
    fd = os.open(path, os.O_RDWR)
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
    """Hold shard ``shard``'s download lock, when its lock file exists, for the ``with`` block: yields
    False (holding nothing) when another process holds it."""
    lock = folder / LOCK_FOLDER / (shard.replace("/", "%") + ".lock")
    fd = _try_lock(lock) if lock.is_file() else -1
    try:
        yield fd is not None
    finally:
        if fd is not None and fd >= 0:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (stat.st_dev, stat.st_ino)


def _unlink(path: Path, dry_run: bool) -> bool:
    if dry_run:
        return path.exists()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    logger.debug("removed %s", path)
    return True


def cache_clean(path: str, remove_shards: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """Remove stale temporary files, unheld lock files and the cache entries of shards no longer there
    (and, with ``remove_shards``, indexed shards).

    A lock is taken without waiting before its file is unlinked, so a live holder is never disturbed; a
    shard whose lock is held is kept. Never removes ``index.json`` nor files no index names.

    Returns:
        The stable dict ``cache clean --json`` prints: ``removed`` and ``kept`` (lists of ``path``, ``kind``
        and ``bytes`` or ``reason``), ``freed_bytes``, ``dry_run`` and ``errors``.

    Raises:
        CliError: ``path`` is not a folder.
    """
    cache = _scan(path)
    removed: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    # Without --all a corrupt index changes nothing; with it, that index's shards cannot be found.
    errors = [index.error for index in cache.indexes if index.error] if remove_shards else []

    def note_removed(file: Path, kind: str, size: int) -> None:
        removed.append({"path": _rel(cache, file), "kind": kind, "bytes": size})

    for temp in cache.temps:
        entry = _temp_entry(cache, temp)
        if not entry["stale"]:
            kept.append(
                {"path": entry["path"], "kind": "temporary", "reason": f"pid {entry['pid']} is alive"}
            )
        elif _unlink(temp, dry_run):
            note_removed(temp, "temporary", entry["bytes"])

    if remove_shards:
        seen: set[Path] = set()
        for index in cache.indexes:
            for shard in index.shards:
                files = [index.folder / file.basename for file in shard.files]
                files = [file for file in files if file not in seen and file.is_file()]
                seen.update(files)
                if not files:
                    continue
                with _shard_lock(index.folder, shard.basename) as free:
                    if not free:
                        kept += [
                            {"path": _rel(cache, f), "kind": "shard", "reason": "its lock is held"}
                            for f in files
                        ]
                        continue
                    for file in files:
                        size = file.stat().st_size
                        if file.name != INDEX_BASENAME and _unlink(file, dry_run):
                            note_removed(file, "shard", size)

    gone = {cache.root / item["path"] for item in removed}
    for index in cache.indexes:  # an entry whose shard has no file left is stale
        for path, data in _entries(index.folder):
            if any(
                (index.folder / name).is_file() and index.folder / name not in gone for name in data["files"]
            ):
                continue
            with _shard_lock(index.folder, data["name"]) as free:
                if not free:
                    kept.append(
                        {"path": _rel(cache, path), "kind": "entry", "reason": "its shard is downloading"}
                    )
                elif _unlink(path, dry_run):
                    note_removed(path, "entry", 0)

    for lock in cache.locks:
        try:
            fd = _try_lock(lock)
        except FileNotFoundError:
            continue
        if fd is None:
            kept.append({"path": _rel(cache, lock), "kind": "lock", "reason": "held"})
            continue
        try:
            # Unlink only the file we locked: a holder may have replaced it since we listed it.
            if _same_file(fd, lock) and _unlink(lock, dry_run):
                note_removed(lock, "lock", 0)
        finally:
            os.close(fd)
        if not dry_run:
            try:
                lock.parent.rmdir()  # only when it is empty now
            except OSError:
                pass
    return {
        "path": str(cache.root),
        "dry_run": dry_run,
        "removed": removed,
        "kept": kept,
        "freed_bytes": sum(item["bytes"] for item in removed),
        "errors": errors,
    }


def _print_clean(report: dict[str, Any]) -> None:
    verb = "would remove" if report["dry_run"] else "removed"
    counts = {
        kind: sum(item["kind"] == kind for item in report["removed"])
        for kind in ("temporary", "lock", "shard", "entry")
    }
    out = [
        f"cache       {report['path']}",
        f"{verb}  {_plural(counts['temporary'], 'temporary file')}, {_plural(counts['lock'], 'lock file')}, "
        f"{_plural(counts['shard'], 'shard file')}, {_plural(counts['entry'], 'cache entry')}: "
        f"{_size(report['freed_bytes'])}",
    ]
    out += [f"  {item['kind']:<9}  {item['path']}" for item in report["removed"]]
    if report["kept"]:
        out.append(f"kept        {_plural(len(report['kept']), 'file')} in use")
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
    status = actions.add_parser("status", help="what the cache folder holds")
    status.add_argument("path", metavar="PATH", help="a dataset's local folder")
    status.add_argument("--json", action="store_true", help="print a JSON object")
    clean = actions.add_parser("clean", help="remove stale temporary files and unheld lock files")
    clean.add_argument("path", metavar="PATH", help="a dataset's local folder")
    clean.add_argument(
        "--all", action="store_true", help="also remove the shard files the indexes list (never index.json)"
    )
    clean.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    clean.add_argument("--json", action="store_true", help="print a JSON object")
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
