"""The ``shardflow`` command: ``inspect`` a dataset (MDS, or data a source reads: Parquet, WebDataset tars,
LitData folders, plain files), ``index`` such data ahead of training, ``cache status`` / ``cache clean`` a
local cache folder, ``plan`` an epoch (``shardflow.plan``'s command, handed every argument after ``plan``).

Run as ``shardflow ...`` (the meta-package's console script) or ``python -m shardflow ...``. The packages
each command needs are imported inside it, so ``import shardflow`` stays free of them. The command's own
output goes to stdout (``--json`` for scripts: a stable dict); diagnostics go to logging on stderr
(``-v``); an error prints one line naming the path or URL at fault and exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "inspect_dataset", "index_source", "CliError"]

logger = logging.getLogger("shardflow.cli")


class CliError(Exception):
    """A failure the command reports in one line (naming the path or URL) before exiting 1."""


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


def inspect_dataset(source: str, split: str | None = None, format: str | None = None) -> dict[str, Any]:
    """Describe the dataset at ``source`` (a storage URL, a local folder or its ``index.json``).

    A folder without an MDS ``index.json`` (or with ``format`` naming a source: ``parquet``, ``webdataset``,
    ``litdata``, ``files``) is described from the index that source builds for it (nothing is cached).

    Returns:
        The stable dict ``--json`` prints: ``source``, ``index``, ``version``, ``streams``, ``shards``,
        ``samples``, ``formats``, ``compression``, ``hashes``, ``columns``, ``bytes`` (``raw``,
        ``compressed``) and ``shard_list`` (one dict per shard).

    Raises:
        CliError: There is no readable index there.
    """
    from shardflow.format.index import INDEX_BASENAME, is_mds_index
    from shardflow.storage import is_url

    if format not in (None, "mds"):
        return _describe_source(source, split, format)
    if is_url(source):
        from shardflow.storage import ObjectNotFoundError, StorageError, from_url

        root = source.rstrip("/") + ("/" + split.strip("/") if split else "")
        where = f"{root}/{INDEX_BASENAME}"
        with tempfile.TemporaryDirectory(prefix="shardflow-inspect-") as scratch:
            try:
                from_url(root).download(INDEX_BASENAME, Path(scratch) / INDEX_BASENAME)
            except ObjectNotFoundError:
                return _describe_source(source, split, None, f"{where} does not exist")
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
            return _describe_source(source, split, None, f"{index} does not exist")
        if not is_mds_index(index):  # another tool's index.json (LitData's)
            return _describe_source(source, split, None, f"{index} is no MDS index")
    return _describe(source, str(index), index)


def _describe_source(
    location: str, split: str | None, format: str | None, no_index: str | None = None
) -> dict[str, Any]:
    """``_describe`` of the index a source (``format``, else detected) builds for the folder; ``no_index``
    says why the folder is no MDS dataset, for the error when no source recognises it either."""
    from shardflow.dataset.errors import DatasetError
    from shardflow.dataset.sources import SourceFolder, detect_source, get_source, known_sources
    from shardflow.format.index import INDEX_VERSION
    from shardflow.storage import StorageError, from_url, is_url

    root = location.rstrip("/") + ("/" + split.strip("/") if split else "")
    if not is_url(root) and not Path(os.path.expanduser(root)).is_dir():
        raise CliError(f"{root} does not exist: check the path and --split")
    try:
        folder = SourceFolder(from_url(root if is_url(root) else os.path.expanduser(root)))
        found = get_source(format) if format else detect_source(folder)
        if found is None:
            raise CliError(
                f"{no_index or root + ' has no MDS index.json'} and no source recognises {root} (known: "
                f"{', '.join(known_sources())}): check the path or URL and --split, or pass --format"
            )
        entries = found.build(folder)
    except (DatasetError, StorageError, ImportError) as exc:
        raise CliError(f"cannot index {root}: {exc}") from None
    if not entries:
        raise CliError(f"{root}: the {found.name} source finds nothing to read there (check --format)")
    with tempfile.TemporaryDirectory(prefix="shardflow-inspect-") as scratch:
        index = Path(scratch) / "index.json"
        index.write_text(json.dumps({"version": INDEX_VERSION, "shards": entries}))
        report = _describe(location, f"{root} ({found.name}, indexed now)", index)
    report["source_kind"] = found.name
    return report


def index_source(
    location: str,
    local: str | None = None,
    split: str | None = None,
    format: str | None = None,
    publish: bool = False,
) -> dict[str, Any]:
    """Build (or reuse) the index a ``Stream(remote=location, local=local, split=split, format=format)``
    reads, where training will find it, and describe it. A local folder is indexed in place (the index
    goes to the cache home, as a stream reading it in place keeps it). With ``publish``, the index is also
    uploaded beside the data (a remote only), where every node's stream takes it instead of indexing the
    files again; the report's ``published`` is its URL."""
    from shardflow.dataset.errors import DatasetError
    from shardflow.dataset.stream import Stream
    from shardflow.storage import StorageError, is_url

    remote = location if is_url(location) else None
    if publish and remote is None:  # before any indexing
        raise CliError(f"--publish needs a storage URL: {location} is a local folder, indexed in place")
    where = local if remote is not None else os.path.expanduser(location)
    try:
        stream = Stream(remote=remote, local=where, split=split, format=format)
        shards = stream.load_shards(allow_unsafe_types=True)
    except (DatasetError, StorageError, ImportError) as exc:
        raise CliError(f"cannot index {location}: {exc}") from None
    built = stream.built_index_path()
    if built is None:
        raise CliError(
            f"{location} is an MDS dataset: its index.json is the index (shardflow inspect shows it)"
        )
    report = _describe(location, str(built), built)
    report["shards"] = len(shards)
    if publish:
        try:
            report["published"] = stream.publish_built_index()
        except (DatasetError, StorageError) as exc:
            raise CliError(f"cannot publish the index of {location}: {exc}") from None
    return report


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
        *([f"published   {report['published']}"] if "published" in report else []),
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


# -- the cache folder: the reports are shardflow.dataset.cache's (which never imports torch) -----------


def _print_status(report: dict[str, Any]) -> None:
    from shardflow.dataset.cache import CACHE_FOLDER, INDEX_BASENAME

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


_FORMAT_HELP = "the source's kind (parquet, webdataset, litdata, files; default: detected)"


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
    inspect.add_argument("--format", default=None, help=_FORMAT_HELP)
    inspect.add_argument("--json", action="store_true", help="print a JSON object")

    index = commands.add_parser(
        "index", help="build the index of Parquet/tar/LitData/plain-file data ahead of training"
    )
    index.add_argument("source", metavar="URL_OR_PATH", help="a storage URL (s3://...) or a local folder")
    index.add_argument(
        "--local", default=None, help="the cache folder training will use (default: the stream's default)"
    )
    index.add_argument("--split", default=None, help="a sub-folder holding the split")
    index.add_argument("--format", default=None, help=_FORMAT_HELP)
    index.add_argument(
        "--publish",
        action="store_true",
        help="also upload the index beside the data (_shardflow-index.json), for every node to take",
    )
    index.add_argument("--json", action="store_true", help="print a JSON object")

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


def _cache(args: argparse.Namespace) -> int:
    """``cache status`` / ``cache clean``: the reports of :mod:`shardflow.dataset.cache`, printed."""
    from shardflow.dataset.cache import cache_clean, cache_status
    from shardflow.dataset.errors import DatasetError

    try:
        if args.action == "status":
            _emit(cache_status(args.path), args.json, _print_status)
            return 0
        report = cache_clean(args.path, remove_shards=args.all, dry_run=args.dry_run)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
    _emit(report, args.json, _print_clean)
    return 1 if report["errors"] else 0


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
            _emit(inspect_dataset(args.source, args.split, args.format), args.json, _print_inspect)
            return 0
        if args.command == "index":
            report = index_source(args.source, args.local, args.split, args.format, args.publish)
            _emit(report, args.json, _print_inspect)
            return 0
        return _cache(args)
    except BrokenPipeError:  # stdout closed early (| head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CliError as exc:
        print(f"shardflow: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"shardflow: error: {exc}", file=sys.stderr)
        return 1
