"""merge_index: one ``index.json`` over the indexes of several dataset partitions, local or remote."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Union, overload

from shardflow.format.errors import IndexFormatError
from shardflow.format.index import INDEX_BASENAME, _load_index, shard_file_keys, write_index
from shardflow.format.upload import Out, get_uploader, remote_uploader, split_out

__all__ = ["IndexURL", "merge_index"]

logger = logging.getLogger(__name__)

IndexURL = Union[str, "os.PathLike[str]", tuple[str, str]]
"""A partition's ``index.json`` (or its folder): a local path, a remote URL, or a ``(local, remote)`` pair."""


@overload
def merge_index(
    index_file_urls: Sequence[IndexURL],
    out: Out,
    keep_local: bool = True,
    download_timeout: float = 60,
) -> None: ...


@overload
def merge_index(out: Out, keep_local: bool = True, download_timeout: float = 60) -> None: ...


def merge_index(*args: Any, **kwargs: Any) -> None:
    """Merge the indexes of several dataset partitions into one ``index.json``.

    Two call forms, as in mosaicml-streaming:

    - ``merge_index(index_file_urls, out, keep_local=True, download_timeout=60)``: ``index_file_urls``
      lists the partitions' ``index.json`` files (or their folders): local paths, remote URLs, or
      ``(local, remote)`` pairs (the remote file is used when the local one does not exist). The merged
      index is written to ``out``.
    - ``merge_index(out, keep_local=True, download_timeout=60)``: merge every ``<out>/<part>/index.json``.
      When ``out`` has a remote part, the partitions are those found under the remote root (each one's
      local copy is used where it exists).

    ``out`` is a local folder, a remote URL, or a ``(local, remote)`` pair. Each shard file of partition
    folder ``part`` is named ``part/<basename>`` in the merged index. Remote indexes are downloaded to a
    temporary folder through the uploaders of :mod:`shardflow.format.upload` (install shardflow-storage),
    each within ``download_timeout`` seconds. When ``out`` has a remote part the merged index is uploaded
    there, and ``keep_local=False`` removes its local copy.

    Raises:
        TypeError: The arguments match neither form.
        FileNotFoundError: A listed index exists neither locally nor remotely.
        IndexFormatError: A partition's index is invalid, or two partitions name the same file.
        MissingDependencyError: A remote location is given and shardflow-storage is not installed.
    """
    first = args[0] if args else kwargs.get("index_file_urls", kwargs.get("out"))
    if isinstance(first, (str, os.PathLike, tuple)):
        _merge_from_root(*args, **kwargs)
    elif isinstance(first, Sequence):
        _merge_from_list(*args, **kwargs)
    else:
        raise TypeError(
            "merge_index(index_file_urls: list, out, keep_local=True, download_timeout=60) or "
            f"merge_index(out, keep_local=True, download_timeout=60); got args={args!r}, kwargs={kwargs!r}"
        )


def _merge_from_list(
    index_file_urls: Sequence[IndexURL],
    out: Out,
    keep_local: bool = True,
    download_timeout: float = 60,
) -> None:
    if not index_file_urls or not out:
        logger.warning("merge_index: nothing to merge (index_file_urls=%r, out=%r)", index_file_urls, out)
        return
    local, _ = split_out(out)
    uploader = get_uploader(out)  # Before reading anything: a remote out may lack an uploader.
    urls = list(dict.fromkeys(index_file_urls))
    with tempfile.TemporaryDirectory(prefix="shardflow-merge-") as temp:
        partitions = [_fetch_index(url, Path(temp, str(n)), download_timeout) for n, url in enumerate(urls)]
        shards = _merged_shards(partitions)
        folder = Path(local) if local is not None else Path(temp)
        index_path = write_index(folder, shards, merged=True)
        logger.info("merge_index: wrote %s (%d shards from %d indexes)", index_path, len(shards), len(urls))
        if uploader is None:
            return
        uploader.wait()  # index.json goes last: after every upload handed over before it (none here)
        uploader.upload(index_path, INDEX_BASENAME)
        uploader.finish()
        if local is not None and not keep_local:
            index_path.unlink()


def _merge_from_root(out: Out, keep_local: bool = True, download_timeout: float = 60) -> None:
    if not out:
        logger.warning("merge_index: no dataset folder given (out=%r); nothing merged", out)
        return
    local, remote = split_out(out)
    found: list[IndexURL]
    if remote is None:
        assert local is not None  # split_out gives a local folder whenever there is no remote one
        found = [*sorted(str(path) for path in Path(local).glob(f"*/{INDEX_BASENAME}"))]
    else:
        lister = remote_uploader(remote, download_timeout=download_timeout)
        names = [name for name in lister.list_objects() if _is_partition_index(name)]
        lister.finish()
        base = remote.rstrip("/")
        found = [
            (str(Path(local, name)), f"{base}/{name}") if local is not None else f"{base}/{name}"
            for name in names
        ]
    _merge_from_list(found, out, keep_local=keep_local, download_timeout=download_timeout)


def _fetch_index(url: IndexURL, folder: Path, download_timeout: float) -> tuple[str, Path]:
    """Where one ``index_file_urls`` entry comes from, and its local file (downloaded into ``folder``)."""
    local, remote = split_out(url if isinstance(url, tuple) else os.fspath(url).strip().rstrip("/"))
    if local is not None and os.path.exists(local):
        path = Path(local)
        path = path / INDEX_BASENAME if path.is_dir() else path
        return str(path), path
    if remote is None:
        raise FileNotFoundError(
            f"merge_index: index {url!r} does not exist; list the partitions' index.json files as local "
            "paths, remote URLs or (local, remote) pairs"
        )
    remote = remote.rstrip("/")
    root = remote.removesuffix(f"/{INDEX_BASENAME}")
    part = PurePosixPath(urllib.parse.urlparse(root).path).name
    if not part:
        raise ValueError(f"merge_index: {remote} is not in a partition folder; list each partition's index")
    uploader = remote_uploader(root, download_timeout=download_timeout)
    path = uploader.download(INDEX_BASENAME, folder / part / INDEX_BASENAME)
    uploader.finish()
    return f"{root}/{INDEX_BASENAME}", path


def _merged_shards(partitions: Sequence[tuple[str, Path]]) -> list[dict[str, Any]]:
    """The shard entries of every partition ``(source, local index file)``, renamed into its folder."""
    shards: list[dict[str, Any]] = []
    owners: dict[str, str] = {}
    for source, path in partitions:
        part = path.parent.name
        for shard in _load_index(path, source)["shards"]:
            for key in shard_file_keys(shard):
                if shard.get(key):
                    if "/" in shard[key]["basename"]:
                        raise IndexFormatError(
                            f"merge_index: {source} is itself a merged index (it names "
                            f"{shard[key]['basename']!r}); merge the partitions it lists instead"
                        )
                    name = f"{part}/{shard[key]['basename']}"
                    if name in owners:
                        raise IndexFormatError(f"merge_index: {source} and {owners[name]} both name {name!r}")
                    owners[name] = source
                    shard[key]["basename"] = name
            shards.append(json.loads(json.dumps(shard, sort_keys=True)))
    return shards


def _is_partition_index(name: str) -> bool:
    """Whether the relative name ``name`` is the index of a partition folder, like ``part0/index.json``."""
    part, _, basename = name.partition("/")
    return basename == INDEX_BASENAME and bool(part)
