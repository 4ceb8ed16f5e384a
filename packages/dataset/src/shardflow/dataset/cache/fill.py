"""Filling a cache folder with a shard: lock, stale temporary files, reserve, download, open, record.

Processes of a node that need the same shard take turns through its lock file: the first downloads, the
others find the files in place. Every file lands under a temporary name and is renamed; the temporary
files a killed process left for the shard are removed first. The node cache records the download and
makes room for it under its limit; eviction takes the same lock, so it cannot remove a shard between its
download and its opening, and passes over a shard that another process waits for (its ``open`` lock).
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardflow.dataset.cache.budget import NodeCache, footprint
from shardflow.dataset.cache.layout import INDEX_BASENAME, entry_path, inside, lock_path, read_identity
from shardflow.dataset.cache.locks import acquire, release
from shardflow.dataset.errors import ShardWaitTimeout
from shardflow.format import (
    TEMP_NAME,
    ShardFormatError,
    ShardHashError,
    ShardInfo,
    ShardMissingError,
    ShardReader,
    is_hash,
)
from shardflow.format.hashing import hash_file
from shardflow.storage import ObjectNotFoundError

__all__ = ["Origin", "is_local", "is_current", "identity", "open_cached", "remove_stale_temps"]

logger = logging.getLogger(__name__)

_FAST_HASHES = ("xxh3_64", "xxh64", "xxh128", "xxh32")
"""Digests checked first when a shard's files were in the folder before the cache downloaded them."""


@dataclass
class Origin:
    """A cache folder and the remote folder its shards come from.

    Args:
        root: The cache folder (a stream's local folder of its split).
        remote: The remote folder, for identities and messages (None: the folder is read in place).
        index_version: The version of the remote's ``index.json`` the shards are read under.
        download: Fetches a remote file (a name relative to ``remote``) into a local path; raises
            ``ObjectNotFoundError`` when the remote lacks it.
        validate_hash: A hash algorithm every shard file is checked with, or None.
        keep_zip: Keep the compressed files of a shard after decompressing them.
        wait_timeout: Seconds to wait for another process's download of a shard (its lock).
        verified: Shards whose files were in the folder before and whose digests this process checked.
    """

    root: Path
    remote: str | None
    index_version: str
    download: Callable[[str, Path], Any]
    validate_hash: str | None = None
    keep_zip: bool = False
    wait_timeout: float = 60.0
    verified: set[str] = field(default_factory=set)

    def describe(self, name: str) -> str:
        """``remote/name`` (or the local path), for messages."""
        return f"{(self.remote or str(self.root)).rstrip('/')}/{name}"


def is_local(root: Path, shard: ShardInfo) -> bool:
    """Whether the shard's raw files are all in ``root`` with the sizes the index says."""
    for file in shard.raw_files:
        try:
            if (root / file.basename).stat().st_size != file.bytes:
                return False
        except FileNotFoundError:
            return False
    return True


def identity(origin: Origin, shard: ShardInfo) -> dict[str, Any]:
    """What a download of ``shard`` now is: the remote, the index's version and the shard's record in it
    (every file's name, size and digests)."""
    record = [[file.basename, file.bytes, dict(sorted(file.hashes.items()))] for file in shard.files]
    return {"remote": origin.remote, "index": origin.index_version, "record": record}


def is_current(origin: Origin, shard: ShardInfo) -> bool:
    """Whether the shard's files in the cache folder are the ones the current index describes.

    Files the cache downloaded are compared with what they were downloaded as: the same remote and
    record, and either the same index version or digests in the record (which identify the content
    whatever the index's version). Files that were in the folder before (no entry) are checked against
    the index's digests once per process, or taken as they are when it records none. A file that is a
    symlink leading out of the folder is never current.
    """
    root = origin.root
    if not is_local(root, shard) or not all(inside(root, root / f.basename) for f in shard.raw_files):
        return False
    now = identity(origin, shard)
    cached = read_identity(root, shard.basename)
    if cached is None:
        return _placed_file_matches(origin, shard)
    if cached.get("remote") != now["remote"] or cached.get("record") != now["record"]:
        return False
    if cached.get("index") == now["index"]:
        return True
    if any(file.hashes for file in shard.files):
        NodeCache.note_identity(root, shard.basename, now)
        return True
    return False  # the index changed and has no digest to vouch for the files: download again


def _placed_file_matches(origin: Origin, shard: ShardInfo) -> bool:
    """Whether the raw files of a shard the cache did not download match the index's digests."""
    if shard.basename in origin.verified:
        return True
    for file in shard.raw_files:
        usable = [name for name in file.hashes if is_hash(name)]
        if usable:
            algorithm = min(usable, key=lambda name: name not in _FAST_HASHES)
            if hash_file(algorithm, origin.root / file.basename) != file.hashes[algorithm]:
                logger.info(
                    "%s differs from what %s records: downloading it again", origin.root / file.basename,
                    origin.describe(INDEX_BASENAME),
                )  # fmt: skip
                return False
    origin.verified.add(shard.basename)
    return True


def remove_stale_temps(root: Path, name: str, files: Sequence[str]) -> None:
    """Remove the temporary files a killed process left for shard ``name`` (the caller holds its lock)."""
    stems = [(root / file).parent / f".{Path(file).name}." for file in files]
    stems.append(entry_path(root, name).parent / f".{entry_path(root, name).name}.")
    for stem in stems:
        for path in stem.parent.glob(glob.escape(stem.name) + "*.tmp"):
            if TEMP_NAME.match(path.name):
                path.unlink(missing_ok=True)
                logger.info("removed %s, left by a download that did not finish", path)


def open_cached(origin: Origin, shard: ShardInfo, cache: NodeCache, populate: bool = False) -> ShardReader:
    """The shard opened (mapped, every page at once with ``populate``), downloaded first when its files
    in the cache folder are not the ones the index describes.

    A download fetches the compressed files when the shard is compressed, decompresses and checks them.
    A cached file that fails ``validate_hash`` is downloaded again; only a fresh download that fails is an
    error, naming the remote file.

    Raises:
        ShardMissingError: The remote lacks the shard's files, or they lie behind a symlink out of the folder.
        ShardWaitTimeout: Another process held the shard's lock for ``origin.wait_timeout`` seconds.
        ShardHashError / ShardFormatError: The remote's copy does not match the index.
    """
    root = origin.root
    reader = ShardReader(root, shard, origin.validate_hash, populate)
    damaged = False
    if is_current(origin, shard):
        try:
            return reader.open()
        except FileNotFoundError:
            pass  # evicted by another process since the check: download it again, under its lock
        except (ShardHashError, ShardFormatError) as exc:
            if not _remote_can_replace(origin, shard):
                raise
            logger.warning("%s: downloading it again from %s", exc, origin.describe(shard.basename))
            damaged = True
    with _turn(origin, shard, cache):
        if not damaged and is_current(origin, shard):
            return reader.open()
        files = [file.basename for file in (*shard.raw_files, *shard.zip_files)]
        for name in files:
            if not inside(root, (root / name).parent):
                raise ShardMissingError(
                    f"{root / name} lies in a folder that is a symlink leading out of the cache folder "
                    f"{root}: shardflow neither reads nor replaces files there; remove the symlink"
                )
        remove_stale_temps(root, shard.basename, files)
        stale = [name for name in files if (root / name).is_symlink() or (root / name).exists()]
        if stale:
            logger.info(
                "%s changed since it was cached in %s: downloading it again", origin.describe(shard.basename),
                root,
            )  # fmt: skip
            for name in stale:
                (root / name).unlink()
        now = identity(origin, shard)
        cache.reserve(root, shard.basename, files, footprint(shard), now)
        try:
            _download(origin, shard)
            reader.open()  # decompresses (and checks) a compressed shard
        except (ShardHashError, ShardFormatError) as exc:
            reader.close()
            cache.abandon(root, shard.basename, files)
            raise type(exc)(
                f"the remote copy of {origin.describe(shard.basename)} does not match "
                f"{origin.describe(INDEX_BASENAME)}: {exc}"
            ) from None
        except BaseException:
            reader.close()
            cache.abandon(root, shard.basename, files)
            raise
        if shard.zip_files and not origin.keep_zip:
            for file in shard.zip_files:
                (root / file.basename).unlink(missing_ok=True)
        kept = (*shard.raw_files, *(shard.zip_files if origin.keep_zip else ()))
        cache.record(root, shard.basename, files, sum(file.bytes for file in kept), now)
        cache.landed(root, shard.basename)
        return reader


@contextmanager
def _turn(origin: Origin, shard: ShardInfo, cache: NodeCache) -> Iterator[None]:
    """Hold the shard's download lock. While another process has it (downloading the shard), the shard is
    marked as being opened (:meth:`NodeCache.opening`), so that no process evicts it between its arrival
    and this one's turn, which would only make this one download it again."""
    path, what = lock_path(origin.root, shard.basename), origin.describe(shard.basename)
    try:
        fd = acquire(path, 0, what)
    except ShardWaitTimeout:
        with cache.opening(origin.root, shard.basename):
            fd = acquire(path, origin.wait_timeout, what)
    try:
        yield
    finally:
        release(fd)


def _remote_can_replace(origin: Origin, shard: ShardInfo) -> bool:
    """Whether a cached shard that failed its check may be downloaded again: not when the failure is
    ``validate_hash`` naming a digest the index does not record (no copy can pass)."""
    if origin.validate_hash is None:
        return True
    checked = shard.zip_files or shard.raw_files
    return all(origin.validate_hash in file.hashes for file in checked)


def _download(origin: Origin, shard: ShardInfo) -> None:
    """Download the shard's files: the compressed ones when it is compressed."""
    for file in shard.zip_files or shard.raw_files:
        try:
            origin.download(file.basename, origin.root / file.basename)
        except ObjectNotFoundError:
            raise ShardMissingError(
                f"{origin.describe(file.basename)} does not exist, though {origin.describe(INDEX_BASENAME)} "
                "lists it: the remote dataset is incomplete"
            ) from None
        logger.debug("downloaded %s", origin.describe(file.basename))
