"""Stream: one dataset folder (remote and/or local) of a StreamingDataset, and how its shards get local."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

import shardflow.dataset.sources as sources
from shardflow.dataset.cache import fill
from shardflow.dataset.cache.budget import NodeCache
from shardflow.dataset.cache.layout import (
    INDEX_BASENAME,
    cache_home,
    claim_folder,
    lock_path,
    note_index_version,
    read_index_version,
)
from shardflow.dataset.cache.locks import file_lock, release, try_lock
from shardflow.dataset.errors import DatasetConfigError, IndexNotFoundError, NoShardsError
from shardflow.format import ShardInfo, ShardReader, read_shards
from shardflow.format.index import is_mds_index
from shardflow.shuffle import ShuffleError, StreamWeights, resolve_stream_weights
from shardflow.storage import ObjectNotFoundError, Store, TransientStorageError, from_url, is_url

__all__ = ["Stream", "default_cache_folder"]

logger = logging.getLogger(__name__)

_INHERITED = ("download_retry", "download_timeout", "validate_hash", "keep_zip")


def default_cache_folder(remote: str) -> Path:
    """The local folder a remote is cached in when ``local`` is None: one per remote, reused by later runs.

    ``$SHARDFLOW_CACHE_DIR`` if set, else ``~/.cache/shardflow``, then ``datasets/<digest of the remote>``.
    """
    digest = hashlib.sha256(remote.rstrip("/").encode("utf-8")).hexdigest()[:20]
    return cache_home() / "datasets" / digest


def _digest(path: Path) -> str:
    """The content digest of a local ``index.json``, the first part of its recorded version."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


@dataclass
class Stream:
    """One dataset folder, read as part of a :class:`~shardflow.dataset.StreamingDataset`.

    Arguments and defaults follow mosaicml-streaming's ``Stream``. ``download_retry``, ``download_timeout``,
    ``validate_hash`` and ``keep_zip`` left as None take the dataset's values. At most one of
    ``proportion``, ``repeat`` and ``choose`` may be given per stream.

    Args:
        remote: Where the shards live: any storage URL (``s3://``, ``gs://``, ``azure://``, ``oci://``, ...)
            or a local folder. None reads ``local`` in place.
        local: The local cache folder. None with a remote picks one per remote (see
            :func:`default_cache_folder`), which a later run reuses.
        split: A sub-folder of both holding the split to read.
        proportion: This stream's share of each epoch, relative to the other streams'.
        repeat: How many times each of its samples is drawn per epoch (may be fractional).
        choose: How many of its samples are drawn per epoch.
        download_retry: Re-attempts of a failed download (each attempt also retries failed requests with
            backoff for as long as ``download_timeout`` leaves room: see the storage README).
        download_timeout: Seconds one download attempt may take.
        validate_hash: A hash algorithm to check every shard file with, or None.
        keep_zip: Keep the compressed form of a shard after decompressing it.
        format: What the folder holds: ``"mds"`` (an ``index.json``), the name of a source
            (``"parquet"``, ``"files"``, ...: see :mod:`shardflow.dataset.sources`) or a configured
            :class:`~shardflow.dataset.sources.Source`. None reads the ``index.json`` when the folder has
            an MDS one, else detects the source from the folder's files.
    """

    remote: str | None = None
    local: str | None = None
    split: str | None = None
    proportion: float | None = None
    repeat: float | None = None
    choose: int | None = None
    download_retry: int | None = None
    download_timeout: float | None = None
    validate_hash: str | None = None
    keep_zip: bool | None = None
    format: str | sources.Source | None = None

    def __post_init__(self) -> None:
        if self.remote is None and self.local is None:
            raise DatasetConfigError("a stream needs remote, local or both; both are None")
        for name in ("remote", "local", "split"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise DatasetConfigError(f"{name}={value!r} must be a string or path")
        given = [name for name in ("proportion", "repeat", "choose") if getattr(self, name) is not None]
        if len(given) > 1:
            raise DatasetConfigError(
                f"a stream takes one of proportion, repeat and choose; this one has {' and '.join(given)}"
            )
        if self.proportion is not None and not self.proportion >= 0:
            raise DatasetConfigError(f"proportion={self.proportion!r} must be 0 or more")
        if self.repeat is not None and not self.repeat >= 0:
            raise DatasetConfigError(f"repeat={self.repeat!r} must be 0 or more")
        if self.choose is not None and (int(self.choose) != self.choose or self.choose < 0):
            raise DatasetConfigError(f"choose={self.choose!r} must be a whole number, 0 or more")
        if self.download_retry is not None and self.download_retry < 0:
            raise DatasetConfigError(f"download_retry={self.download_retry!r} must be 0 or more")
        if self.download_timeout is not None and not self.download_timeout > 0:
            raise DatasetConfigError(
                f"download_timeout={self.download_timeout!r} must be a positive number of seconds"
            )
        self._given = (self.proportion, self.repeat, self.choose)  # before apply_weights writes them back
        self._store: Store | None = None
        self._index_version = ""  # the remote index's content digest and store version (load_shards)
        self._checked: set[str] = set()  # shards found in the folder whose digests this process checked
        self._source: sources.Source | None = None  # what the folder holds when it is no MDS dataset
        self._source_entries: dict[str, dict[str, Any]] = {}  # a source's shard entries, by file name
        self._detected_in: sources.SourceFolder | None = None  # where a source was found, and its listing
        if self.format is not None and self.format != "mds":
            sources.get_source(self.format)  # an unknown name fails here, naming the known ones

    def with_defaults(self, **defaults: Any) -> Stream:
        """A copy, with the weights it was given (not those a dataset wrote back), whose unset options take
        ``defaults`` (the dataset's: see :meth:`apply_default`)."""
        proportion, repeat, choose = self._given
        copy = replace(self, proportion=proportion, repeat=repeat, choose=choose)
        copy.apply_default(defaults)
        return copy

    def apply_default(self, default: Mapping[str, Any]) -> None:
        """Give this stream's unset ``split``, ``download_retry``, ``download_timeout``, ``validate_hash``
        and ``keep_zip`` the values of ``default`` (a dataset's arguments; missing keys are skipped), in
        place, as mosaicml-streaming's ``Stream.apply_default``."""
        if not self.split and default.get("split"):
            self.split = default["split"]
        for name in _INHERITED:
            if getattr(self, name) is None and default.get(name) is not None:
                setattr(self, name, default[name])

    @property
    def safe_keep_zip(self) -> bool:
        """Whether the compressed form of a shard stays beside its decompressed form: with ``keep_zip``, or
        when the stream is read in place (its folder is the dataset itself, never pruned)."""
        return bool(self.keep_zip) or self.remote_root is None

    # -- weights -------------------------------------------------------------------------------------

    @classmethod
    def validate_weights(cls, streams: Sequence[Stream]) -> tuple[bool, bool]:
        """Check the weights the streams were given: ``(relative, unspecified)``, whether they are weighted
        by ``proportion``, and whether none has a weight.

        Raises:
            ShuffleError: No stream, or a stream has a proportion and another has none (as
                :func:`~shardflow.shuffle.resolve_stream_weights` raises).
        """
        given = [stream._given for stream in streams]
        if not given:
            raise ShuffleError("validate_weights needs at least one stream; got none")
        relative = given[0][0] is not None
        for k, (proportion, _, _) in enumerate(given):
            if (proportion is not None) != relative:
                raise ShuffleError(
                    f"stream {k} {'sets' if proportion is not None else 'lacks'} a proportion and stream 0 "
                    f"does not: relative (proportion) and absolute (repeat, choose, none) weights cannot be "
                    f"mixed; give every stream a proportion or none"
                )
        return relative, all(value is None for weights in given for value in weights)

    @classmethod
    def apply_weights(
        cls,
        streams: Sequence[Stream],
        samples_per_stream: ArrayLike,
        choose_per_epoch: int | None,
        seed: int,
    ) -> int:
        """Resolve every stream's ``proportion``, ``repeat`` and ``choose`` from those given and write them
        onto the streams (numpy scalars, as mosaicml-streaming does); returns the samples per epoch.

        Args:
            streams: Every stream of the dataset.
            samples_per_stream: Samples each stream holds.
            choose_per_epoch: The dataset's ``epoch_size``, or None.
            seed: The ``shuffle_seed`` (it rounds proportions to whole samples).
        """
        return cls._resolve_weights(streams, samples_per_stream, choose_per_epoch, seed).epoch_size

    @classmethod
    def _resolve_weights(
        cls, streams: Sequence[Stream], samples_per_stream: ArrayLike, epoch_size: int | None, seed: int
    ) -> StreamWeights:
        """:meth:`apply_weights`, returning every stream's resolved weights."""
        cls.validate_weights(streams)
        weights = resolve_stream_weights(
            samples_per_stream,
            proportion=[stream._given[0] for stream in streams],
            repeat=[stream._given[1] for stream in streams],
            choose=[stream._given[2] for stream in streams],
            epoch_size=epoch_size or None,
            seed=seed,
        )
        for k, stream in enumerate(streams):
            stream.proportion = weights.proportion[k]
            stream.repeat = weights.repeat[k]
            stream.choose = weights.choose[k]
        return weights

    # -- where things are ---------------------------------------------------------------------------

    @property
    def remote_root(self) -> str | None:
        """The remote folder of the split, or None when the stream is read in place."""
        if self.remote is None:
            return None
        remote = os.fspath(self.remote)
        if not is_url(remote):
            remote = os.path.abspath(os.path.expanduser(remote))
            if self.local is not None and Path(remote) == Path(
                os.path.abspath(os.path.expanduser(self.local))
            ):
                return None  # remote and local are one folder: read it in place
        if not self.split:
            return remote.rstrip("/") if is_url(remote) else remote
        return remote.rstrip("/") + "/" + self.split if is_url(remote) else os.path.join(remote, self.split)

    @property
    def cache_folder(self) -> Path:
        """The local folder: ``local`` as given, or (``local=None``, which stays None) the one
        :func:`default_cache_folder` picks for the remote. The split lies below it (:attr:`local_root`)."""
        if self.local is not None:
            return Path(os.path.expanduser(os.fspath(self.local)))
        assert self.remote is not None
        return default_cache_folder(os.fspath(self.remote))

    @property
    def local_root(self) -> Path:
        """The local folder of the split."""
        base = self.cache_folder
        return base / self.split if self.split else base

    @property
    def wait_timeout(self) -> float:
        """Seconds to wait for another process's download of a shard (its lock): every attempt of its
        files, plus slack for decompressing and checking it."""
        attempts = (self.download_retry or 0) + 1
        return attempts * float(self.download_timeout or 60) * 2 + 10

    def describe(self, name: str = "") -> str:
        """``remote/name`` (or the local path) for messages."""
        root = self.remote_root or str(self.local_root)
        return f"{root.rstrip('/')}/{name}" if name else root

    def _storage(self) -> Store:
        if self._store is None:
            assert self.remote_root is not None
            retry, timeout = self.download_retry, self.download_timeout  # None: a stream used on its own
            self._store = from_url(
                self.remote_root,
                download_retry=2 if retry is None else retry,
                download_timeout=60 if timeout is None else timeout,
            )
        return self._store

    # -- index and shards ---------------------------------------------------------------------------

    def load_shards(self, allow_unsafe_types: bool) -> tuple[ShardInfo, ...]:
        """Fetch the index (from the remote, when there is one) and read it.

        With a remote, the local folder is claimed for it first (a folder caching another remote is
        refused), and the index's version is noted: what its cached shards are compared with.

        Raises:
            DatasetConfigError: The remote has no index, a local-only folder has none, or the local folder
                caches another remote.
            IndexFormatError: The index is corrupt; UnsafeEncodingError for ``pkl`` columns without
                ``allow_unsafe_types``.
        """
        root = self.local_root
        if self.format is not None and self.format != "mds":
            return self._load_source(sources.get_source(self.format), allow_unsafe_types)
        if self.remote_root is not None:
            with file_lock(lock_path(root, INDEX_BASENAME), self.wait_timeout, self.describe(INDEX_BASENAME)):
                claim_folder(root, self.remote_root)  # under the lock `cache clean --all` takes to unclaim it
                fill.remove_stale_temps(root, INDEX_BASENAME, [INDEX_BASENAME])
                missing: ObjectNotFoundError | None = None  # no index.json: maybe another source
                try:
                    self._storage().download(INDEX_BASENAME, root / INDEX_BASENAME)
                    # After the download, so that a missing bucket or index gets the GET's own error; the
                    # content digest beside it tells a rewrite in between apart.
                    version = self._storage().stat(INDEX_BASENAME).version
                except ObjectNotFoundError as exc:
                    missing = exc
                except TransientStorageError as exc:  # unreachable after the store's own retries
                    self._index_version = self._fall_back_to_local_index(exc)
                else:
                    if missing is None:
                        digest = _digest(root / INDEX_BASENAME)
                        self._index_version = f"{digest} {version or ''}".strip()
                        note_index_version(root, self.remote_root, self._index_version)
            if missing is not None or not is_mds_index(root / INDEX_BASENAME):
                source = self._detect_source() if self.format is None else None
                if source is None:
                    raise IndexNotFoundError(
                        f"{self.describe(INDEX_BASENAME)} "
                        f"{'does not exist' if missing else 'is no MDS index'} and no other source "
                        f"(known: {', '.join(sources.known_sources())}) recognises the folder: check remote="
                        f"{self.remote!r} and split={self.split!r}, or pass format="
                        + (f" (the store said: {missing})" if missing else "")
                    ) from None
                return self._load_source(source, allow_unsafe_types)
        elif not (root / INDEX_BASENAME).is_file() or not is_mds_index(root / INDEX_BASENAME):
            source = self._detect_source() if self.format is None and root.is_dir() else None
            if source is None:
                raise NoShardsError(
                    f"{root / INDEX_BASENAME} does not exist (or is no MDS index), no other source (known: "
                    f"{', '.join(sources.known_sources())}) recognises the folder, and the stream has no "
                    f"remote: check local={self.local!r} and split={self.split!r}, or give remote or format="
                )
            return self._load_source(source, allow_unsafe_types)
        return self._checked_shards(read_shards(root, allow_unsafe_types=allow_unsafe_types))

    def _checked_shards(self, shards: tuple[ShardInfo, ...]) -> tuple[ShardInfo, ...]:
        if not shards:
            raise NoShardsError(f"{self.describe(INDEX_BASENAME)} lists no shards")
        if not any(shard.samples for shard in shards):
            raise NoShardsError(f"{self.describe(INDEX_BASENAME)} lists {len(shards)} shard(s), all empty")
        return shards

    def _source_folder(self) -> sources.SourceFolder:
        """The folder as a source sees it: the remote, or the local folder read in place."""
        return sources.SourceFolder(self._storage() if self.remote_root is not None else from_url(
            str(self.local_root)))  # fmt: skip

    def _detect_source(self) -> sources.Source | None:
        """The source that recognises the stream's folder; None also when the folder (or its bucket) does
        not exist, so that the error names the missing ``index.json``."""
        folder = self._source_folder()
        try:
            found = sources.detect_source(folder)
        except ObjectNotFoundError:
            found = None
        self._detected_in = folder if found is not None else None  # its listing serves _load_source too
        return found

    def _load_source(self, source: sources.Source, allow_unsafe_types: bool) -> tuple[ShardInfo, ...]:
        """The shards of the index ``source`` builds for the folder (or reuses: see
        :func:`shardflow.dataset.sources.load_built_index`)."""
        root, in_place = self.local_root, self.remote_root is None
        if not in_place:
            assert self.remote_root is not None
            with file_lock(lock_path(root, INDEX_BASENAME), self.wait_timeout, self.describe(INDEX_BASENAME)):
                claim_folder(root, self.remote_root)
        path = sources.built_index_path(root, in_place)
        folder, self._detected_in = self._detected_in or self._source_folder(), None
        path, self._index_version = sources.load_built_index(source, folder, path, self.wait_timeout)
        shards = self._checked_shards(read_shards(path, allow_unsafe_types=allow_unsafe_types))
        self._source = source
        self._source_entries = {file.basename: shard.entry for shard in shards for file in shard.files}
        return shards

    def _download(self, name: str, path: Path) -> None:
        """Fetch the remote file ``name`` of a shard into ``path``: whole, or as its source makes it."""
        if self._source is None:
            self._storage().download(name, path)
        else:
            self._source.fetch(self._source_folder(), self._source_entries[name], name, path)

    def _fall_back_to_local_index(self, exc: TransientStorageError) -> str:
        """The recorded version of the local ``index.json`` from an earlier download, with a UserWarning,
        when the remote cannot be reached; ``exc`` again when there is no such copy (or it was changed)."""
        assert self.remote_root is not None
        path = self.local_root / INDEX_BASENAME
        recorded = read_index_version(self.local_root, self.remote_root)
        if recorded is None or not path.is_file() or recorded.split(" ")[0] != _digest(path):
            raise exc
        warnings.warn(
            f"{self.describe(INDEX_BASENAME)} cannot be reached ({type(exc).__name__}: {exc}): using the "
            f"copy in {path} downloaded by an earlier run (index version {recorded}); its cached shards are "
            f"checked against it as usual",
            UserWarning,
            stacklevel=4,
        )
        return recorded

    def get_shards(self, world: object = None, allow_unsafe_types: bool = False) -> list[ShardInfo]:
        """:meth:`load_shards` as a list, under mosaicml-streaming's name. ``world`` is accepted and unused:
        every process fetches the index itself, under a lock shared with the node's other processes."""
        return list(self.load_shards(allow_unsafe_types))

    def get_index_size(self) -> int:
        """Bytes of the local copy of ``index.json``, or of the index built for a source (raises
        FileNotFoundError before :meth:`get_shards`)."""
        built = self.built_index_path()
        return (built if built is not None else self.local_root / INDEX_BASENAME).stat().st_size

    def built_index_path(self) -> Path | None:
        """Where the index built for the stream's source is kept (after :meth:`load_shards`); None when
        the stream reads an MDS dataset, whose ``index.json`` is its index."""
        if self._source is None:
            return None
        return sources.built_index_path(self.local_root, self.remote_root is None)

    def publish_built_index(self) -> str:
        """Upload the index built for the stream's source (after :meth:`load_shards`) into its remote
        folder, where any node's stream of the same source and files takes it instead of indexing the
        files again (see :data:`shardflow.dataset.sources.PUBLISHED_INDEX`); returns its URL.

        Raises:
            DatasetConfigError: The stream reads an MDS dataset, or a local folder in place (shardflow
                never writes into it).
        """
        built = self.built_index_path()
        if built is None or self.remote_root is None:
            what = "an MDS dataset (its index.json is the index)" if built is None else "a folder in place"
            raise DatasetConfigError(f"{self.describe('')} is {what}: there is no built index to publish")
        return sources.publish_built_index(self._source_folder(), built)

    def local_bytes(self, shard: ShardInfo) -> int:
        """Bytes of the shard's files (raw and compressed) in the local folder, as the index sizes them."""
        root = self.local_root
        return sum(
            file.bytes for file in (*shard.raw_files, *shard.zip_files) if (root / file.basename).is_file()
        )

    def set_up_local(self, shards: Sequence[ShardInfo], cache_usage_per_shard: NDArray[np.int64]) -> None:
        """Fill ``cache_usage_per_shard`` with the bytes each shard has in the local folder now. Nothing is
        removed: whether cached files may be used is decided when a shard is opened (:meth:`is_current`)."""
        for k, shard in enumerate(shards):
            cache_usage_per_shard[k] = self.local_bytes(shard)

    def prepare_shard(self, shard: ShardInfo, cache: NodeCache | None = None, blocking: bool = True) -> int:
        """Make the shard local (downloaded, decompressed and checked when its files are not current) and
        return the change in the bytes it has in the local folder. ``cache``: the dataset's, which records
        the download and keeps to its limit (None: the download is recorded without a limit). Without
        ``blocking``, a shard another process is downloading is left to it (0 is returned at once)."""
        root = self.local_root
        if not blocking and self.remote_root is not None:
            held = try_lock(lock_path(root, shard.basename))
            if held is None:
                return 0
            release(held)
        before = self.local_bytes(shard)
        if cache is None:
            cache = NodeCache([root] if self.remote_root is not None else [], None, self.wait_timeout)
        self.open_shard(shard, cache).close()
        return self.local_bytes(shard) - before

    def fetch_file(self, name: str) -> Path | None:
        """A file beside the index (e.g. ``classes.json``), fetched from the remote if any; None if absent."""
        path = self.local_root / name
        if self.remote_root is not None:
            try:
                self._storage().download(name, path)
            except ObjectNotFoundError:
                return None
        return path if path.is_file() else None

    def _origin(self) -> fill.Origin:
        """This stream's cache folder and remote, as the cache's filling code takes them."""
        return fill.Origin(
            root=self.local_root,
            remote=self.remote_root,
            index_version=self._index_version,
            download=self._download,
            validate_hash=self.validate_hash,
            keep_zip=bool(self.keep_zip),
            wait_timeout=self.wait_timeout,
            verified=self._checked,
        )

    def is_local(self, shard: ShardInfo) -> bool:
        """Whether the shard's raw files are all present with the sizes the index says (not whether they
        are the files it describes: see :meth:`is_current`)."""
        return fill.is_local(self.local_root, shard)

    def identity(self, shard: ShardInfo) -> dict[str, Any]:
        """What a download of ``shard`` now is: the remote, the index's version and the shard's record in
        it (every file's name, size and digests)."""
        return fill.identity(self._origin(), shard)

    def is_current(self, shard: ShardInfo) -> bool:
        """Whether the shard's local files are the ones the current index describes (a remote stream; see
        :func:`shardflow.dataset.cache.fill.is_current`)."""
        return fill.is_current(self._origin(), shard)

    def open_shard(self, shard: ShardInfo, cache: NodeCache, populate: bool = False) -> ShardReader:
        """The shard opened (mapped, every page at once with ``populate``), downloaded first when its local
        files are not the ones the index describes (see :func:`shardflow.dataset.cache.open_cached`:
        ``cache`` records the download and makes room for it under its limit).

        Raises:
            ShardMissingError: A local-only stream lacks the shard's files, or the remote lacks them.
            ShardWaitTimeout: Another process held the shard's lock for :attr:`wait_timeout` seconds.
            ShardHashError / ShardFormatError: The files do not match the index (a remote stream's: the
                remote's copy does not).
        """
        if self.remote_root is None:  # decompresses in place; ShardMissingError names what is missing
            return ShardReader(self.local_root, shard, self.validate_hash, populate).open()
        return fill.open_cached(self._origin(), shard, cache, populate)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_store"] = None
        state["_detected_in"] = None
        return state
