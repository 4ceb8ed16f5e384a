"""Sources: data a :class:`~shardflow.dataset.Stream` reads that is not an MDS dataset (Parquet files, plain
files, WebDataset tars, LitData folders), through an index built for it.

A :class:`Source` recognises its kind of folder (:meth:`Source.detect`) and builds the shard entries of an
``index.json`` (:meth:`Source.build`) whose formats (:mod:`shardflow.format.formats`) read them. A stream
whose folder has no MDS ``index.json`` (or that names a source with ``format=``) builds that index once,
caches it as :data:`BUILT_INDEX` in its cache folder, and reuses it while the source is unchanged: the
same source and options, and the same files with the same sizes and versions (the store's version tokens:
a file rewritten since is a change). Any change rebuilds the index, and a rebuilt index is a new index
version: the shards cached under the old one are downloaded again, as for a rewritten MDS ``index.json``.
An index published beside the data (:data:`PUBLISHED_INDEX`, by ``shardflow index URL --publish``) is
taken instead of building one when it was built from the same source, options and files, so a node
with an empty cache reads one file rather than every file's footer.

A shard entry may name the byte ranges its local file is made of, as ``"parts": [[file, start, end],
...]`` (``file`` relative to the stream's folder): :func:`fetch_parts` joins them into the cached file
(Parquet row groups and their footer, packs of small files). Entries without ``parts`` name files of the
folder, downloaded whole.

A new source is a :class:`Source` subclass registered with :func:`register_source`; ``Stream(...,
format="name")`` asks for it by name (or gets an instance, which carries options).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shardflow.dataset.cache.layout import cache_home, lock_path
from shardflow.dataset.cache.locks import file_lock
from shardflow.dataset.errors import DatasetConfigError
from shardflow.format import write_atomic
from shardflow.format.index import INDEX_VERSION
from shardflow.storage import Store

__all__ = [
    "BUILT_INDEX",
    "PUBLISHED_INDEX",
    "publish_built_index",
    "Source",
    "SourceFile",
    "SourceFolder",
    "register_source",
    "get_source",
    "known_sources",
    "detect_source",
    "load_built_index",
    "fetch_parts",
    "ParquetSource",  # noqa: F822  (module __getattr__)
    "PlainFiles",  # noqa: F822
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

BUILT_INDEX = "shardflow-index.json"
"""The file name of a built index, in the stream's cache folder (for a stream read in place, in
``<cache home>/sources/<digest of the folder>/``)."""

PUBLISHED_INDEX = "_shardflow-index.json"
"""The file name of a built index published in the source's own folder (a name starting with ``_``, so no
source takes it for data)."""

_FETCH_CHUNK = 16 << 20  # bytes of one ranged read while joining parts


@dataclass(frozen=True)
class SourceFile:
    """One file of a source's folder: its name relative to the folder ('/'-separated), size and version
    token (None when the store gives none)."""

    name: str
    size: int
    version: str | None


class SourceFolder:
    """What a :class:`Source` sees of a stream's folder: its files, listed once, and ranged reads.

    Args:
        store: The folder's store (the stream's remote, or its local folder read in place).
        threads: Requests run at once by :meth:`map`.
    """

    def __init__(self, store: Store, threads: int = 32) -> None:
        self.store = store
        self.threads = threads
        self._files: list[SourceFile] | None = None
        self._hidden_names: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SourceFolder({self.store.root!r})"

    def describe(self, name: str = "") -> str:
        """``root/name``, for messages."""
        return f"{self.store.root.rstrip('/')}/{name}" if name else self.store.root

    def files(self) -> list[SourceFile]:
        """Every file below the folder, sorted by name, with its size and version: from the listing where
        the store's listing tells them (S3), else stat'ed in parallel. Names with a part starting with
        ``.`` or ``_`` (``_SUCCESS``, ``.gitattributes``, shardflow's own bookkeeping) are left out."""
        with self._lock:
            if self._files is None:
                listing = self.store.list_stats("")
                self._hidden_names = {name for name, _ in listing if _hidden(name)}
                listed = [(name, stat) for name, stat in listing if not _hidden(name)]
                unknown = [name for name, stat in listed if stat is None]
                stated = dict(zip(unknown, self.map(self.store.stat, unknown), strict=True))
                stats = [stat or stated[name] for name, stat in listed]
                self._files = [
                    SourceFile(n, s.size, s.version) for (n, _), s in zip(listed, stats, strict=True)
                ]
                logger.debug("listed %s: %d files", self.describe(), len(self._files))
            return list(self._files)

    def holds_hidden(self, name: str) -> bool:
        """Whether the listing holds ``name``, one of the names :meth:`files` leaves out."""
        self.files()
        return name in self._hidden_names

    def read(self, name: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of file ``name``."""
        return self.store.get_bytes(name, start, end)

    def reader(self, name: str) -> Callable[[int, int], bytes]:
        """``read`` bound to one file: what the format package's index builders take."""
        return lambda start, end: self.read(name, start, end)

    def download(self, name: str, path: Path) -> None:
        """File ``name`` downloaded whole to ``path`` (atomically)."""
        self.store.download(name, path)

    def map(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[work(item) for item in items]``, up to :attr:`threads` at once; the first error is raised."""
        items = list(items)
        if len(items) <= 1:
            return [work(item) for item in items]
        with ThreadPoolExecutor(min(self.threads, len(items)), thread_name_prefix="shardflow-source") as pool:
            return list(pool.map(work, items))


def _hidden(name: str) -> bool:
    return any(part.startswith((".", "_")) for part in name.split("/"))


class Source:
    """One kind of folder a stream reads without an MDS ``index.json``. Subclass it, set :attr:`name`,
    implement :meth:`detect` (or leave it False: the source is then only used when asked for) and
    :meth:`build`, and register an instance (:func:`register_source`).

    An instance pickles (streams go to DataLoader workers); options are its attributes, and
    :meth:`options` names those the built index depends on.
    """

    name: str = ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options() or ''})"

    def options(self) -> dict[str, Any]:
        """What besides the files the built index depends on (JSON values): a change rebuilds it."""
        return {}

    def detect(self, folder: SourceFolder) -> bool:
        """Whether ``folder`` holds this source (look at ``folder.files()``; read a file if needed)."""
        return False

    def build(self, folder: SourceFolder) -> list[dict[str, Any]]:
        """The ``index.json`` shard entries for the folder's files (``folder.files()``), in order."""
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

    def fetch(self, folder: SourceFolder, entry: dict[str, Any], name: str, path: Path) -> None:
        """Make ``path`` the local file ``name`` of shard ``entry``: its ``parts`` joined (see
        :func:`fetch_parts`), else the folder's file of that name downloaded whole."""
        if entry.get("parts") and name == entry["raw_data"]["basename"]:
            fetch_parts(folder, entry["parts"], path)
        else:
            folder.download(name, path)


# -- registry ------------------------------------------------------------------------------------------

# Built-in sources, imported on first use; detection tries them in this order.
_BUILTIN = {
    "parquet": "shardflow.dataset._source_parquet:ParquetSource",
    "files": "shardflow.dataset._source_plain:PlainFiles",
    "webdataset": "shardflow.dataset._source_tar:WebDatasetSource",
    "litdata": "shardflow.dataset._source_litdata:LitDataSource",
}
_registered: dict[str, Source] = {}
_loaded: dict[str, Source] = {}
_registry_lock = threading.Lock()


_CLASSES = {"ParquetSource": "parquet", "PlainFiles": "files"}


def __getattr__(name: str) -> Any:
    """The built-in sources' classes (``ParquetSource``, ``PlainFiles``), imported on first use."""
    if name in _CLASSES:
        module, _, attribute = _BUILTIN[_CLASSES[name]].partition(":")
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_source(source: Source) -> None:
    """Make ``source`` known by its name in this process (taking precedence over a built-in one).

    Raises:
        TypeError: ``source`` is not a :class:`Source`; ValueError: it has no name.
    """
    if not isinstance(source, Source):
        raise TypeError(f"register_source expects a Source, got {type(source).__name__}")
    if not source.name or source.name == "mds":
        raise ValueError(f"{source!r} needs a name other than '' and 'mds'")
    with _registry_lock:
        _registered[source.name] = source


def known_sources() -> list[str]:
    """The names of every known source, in detection order (built-in first)."""
    return list(_BUILTIN) + [name for name in _registered if name not in _BUILTIN]


def get_source(name: str | Source) -> Source:
    """The source named ``name`` (an instance is returned as it is).

    Raises:
        DatasetConfigError: No source has that name; the message lists them.
    """
    if isinstance(name, Source):
        return name
    found = _registered.get(name) or _loaded.get(name)
    if found is not None:
        return found
    target = _BUILTIN.get(name)
    if target is None:
        raise DatasetConfigError(
            f"format={name!r} names no source; known: 'mds', {', '.join(map(repr, known_sources()))} "
            "(shardflow.dataset.sources.register_source adds one)"
        )
    module, _, attribute = target.partition(":")
    cls = getattr(importlib.import_module(module), attribute)
    with _registry_lock:
        return _loaded.setdefault(name, cls())


def detect_source(folder: SourceFolder) -> Source | None:
    """The one source that recognises ``folder``; None when none does.

    Raises:
        DatasetConfigError: Several do (the message names them: pick one with ``format=``).
    """
    found = [source for name in known_sources() if (source := get_source(name)).detect(folder)]
    if len(found) > 1:
        raise DatasetConfigError(
            f"{folder.describe()} holds data of several kinds ({', '.join(s.name for s in found)}): pass "
            "format= to the Stream to say which to read"
        )
    return found[0] if found else None


# -- the built index -----------------------------------------------------------------------------------


def built_index_path(local_root: Path, in_place: bool) -> Path:
    """Where a stream's built index lives: its cache folder, or for a folder read in place (which shardflow
    never writes into) ``<cache home>/sources/<digest of the folder>/``."""
    if not in_place:
        return local_root / BUILT_INDEX
    digest = hashlib.sha256(os.path.abspath(local_root).encode("utf-8")).hexdigest()[:20]
    return cache_home() / "sources" / digest / BUILT_INDEX


def load_built_index(
    source: Source, folder: SourceFolder, path: Path, wait_timeout: float
) -> tuple[Path, str]:
    """The index of ``folder`` as ``source`` builds it, reused from ``path`` when built there for the same
    source, options and files (names, sizes, versions), else built and written there; returns the path and
    the index's version (its content digest).

    A file without a version token cannot be told unchanged: such folders are indexed again each time.
    Processes of a node build one at a time (a lock beside ``path``); the others reuse the result.
    """
    files = folder.files()
    stamp = {
        "source": source.name,
        "options": source.options(),
        "root": folder.store.root,
        "files": [[f.name, f.size, f.version] for f in files],
    }
    with file_lock(
        lock_path(path.parent, path.name), wait_timeout, folder.describe(f"({source.name} index)")
    ):
        stable = all(f.version is not None for f in files)
        if stable and _recorded_stamp(path) == stamp:
            logger.debug("reusing the %s index of %s in %s", source.name, folder.describe(), path)
        elif stable and _adopt_published(folder, path, stamp):
            logger.info("using the %s index published in %s", source.name, folder.describe(PUBLISHED_INDEX))
        else:
            entries = source.build(folder)
            data = json.dumps({"version": INDEX_VERSION, "shards": entries, "source": stamp}).encode("utf-8")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data)
            logger.info("built the %s index of %s: %d shards, in %s", source.name, folder.describe(),
                        len(entries), path)  # fmt: skip
        version = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    return path, f"{source.name}:{version}"


def _adopt_published(folder: SourceFolder, path: Path, stamp: dict[str, Any]) -> bool:
    """Make the folder's published index the one at ``path`` when it was built for ``stamp``; False when
    there is none, or it was built for other files or options (with a warning: the caller builds the index
    over it; meanwhile its stamp keeps it from being reused)."""
    if not folder.holds_hidden(PUBLISHED_INDEX):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    folder.download(PUBLISHED_INDEX, path)  # atomic
    if _recorded_stamp(path) == stamp:
        return True
    logger.warning(
        "%s was built for other files or options than the folder holds now (changed since it was "
        "published): indexing the folder again; run shardflow index --publish to refresh it",
        folder.describe(PUBLISHED_INDEX),
    )
    return False


def publish_built_index(folder: SourceFolder, path: Path) -> str:
    """Upload the built index at ``path`` into the source's folder as :data:`PUBLISHED_INDEX`; its URL."""
    folder.store.put_bytes(PUBLISHED_INDEX, path.read_bytes())
    return folder.describe(PUBLISHED_INDEX)


def _recorded_stamp(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def fetch_parts(folder: SourceFolder, parts: Sequence[Sequence[Any]], path: Path) -> None:
    """Write to ``path`` (atomically) the byte ranges ``parts`` (``[file, start, end]`` each) of the
    folder's files, joined in order; ranges are read in parallel, in pieces of at most 16 MiB."""
    pieces = [
        (str(name), at, min(at + _FETCH_CHUNK, int(end)))
        for name, start, end in parts
        for at in range(int(start), int(end), _FETCH_CHUNK)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "wb") as out:
            # In batches, so that at most a few hundred MiB are in memory at once.
            for k in range(0, len(pieces), folder.threads):
                batch = pieces[k : k + folder.threads]
                for (name, start, end), data in zip(
                    batch, folder.map(_read_piece(folder), batch), strict=True
                ):
                    if len(data) != end - start:
                        raise OSError(
                            f"{folder.describe(name)}: asked for bytes [{start}, {end}), got {len(data)}: "
                            "the file changed since it was indexed"
                        )
                    out.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_piece(folder: SourceFolder) -> Callable[[tuple[str, int, int]], bytes]:
    return lambda piece: folder.read(*piece)
