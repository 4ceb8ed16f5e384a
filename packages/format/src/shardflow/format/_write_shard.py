"""The machinery every dataset writer shares: shard rolling, streaming files, hashing, publishing, index."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from shardflow.format._atomic import temp_path
from shardflow.format._write_files import CHUNK_BYTES, HashingFile, SizeLog
from shardflow.format._write_folder import load_existing, prepare_new
from shardflow.format.compression import get_compressor
from shardflow.format.errors import ShardTooLargeError, UnknownArgumentError
from shardflow.format.hashing import hash_file_all, new_hasher
from shardflow.format.index import INDEX_BASENAME, shard_files, write_index
from shardflow.format.upload import Out, get_uploader, split_out

__all__ = ["MAX_SHARD_BYTES", "ShardWriter", "config_field", "parse_size"]

logger = logging.getLogger(__name__)

_Writer = TypeVar("_Writer", bound="ShardWriter")

# Offsets are uint32: the last offset of a shard, its size, cannot exceed this.
MAX_SHARD_BYTES = 2**32 - 1

# Shards compressed at once: no more threads than this, and no more raw bytes than this in flight.
_MAX_COMPRESSORS = 4
_IN_FLIGHT_BYTES = 1 << 28

_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}


def parse_size(size: int | float | str | None) -> int | None:
    """A byte count from an int or a string like ``'100kb'`` or ``'1.5gb'`` (powers of 1024).

    Returns:
        The count, or ``None`` for ``None`` and ``0`` (no limit), as in mosaicml-streaming.

    Raises:
        ValueError: The string has no number or an unknown unit.
    """
    if not size:
        return None
    if isinstance(size, (int, float)):
        return int(size)
    text = size.strip().lower()
    number = text.rstrip("kmgtpb")
    unit = text[len(number) :] or "b"
    try:
        return int(float(number) * _UNITS[unit]) or None
    except (KeyError, ValueError):
        raise ValueError(
            f"size_limit={size!r}: expected bytes as an int or a string like '64mb'; units: {list(_UNITS)}"
        ) from None


def config_field(key: str, doc: str) -> property:
    """A read-only attribute that gives (a copy of) the field ``key`` of the writer's shard config."""

    def get(self: ShardWriter) -> Any:
        return copy.deepcopy(self._config[key])

    return property(get, doc=doc)


class ShardWriter:
    """Writes a dataset as numbered shards plus ``index.json``; subclasses define the shard format.

    Samples are encoded one at a time (:meth:`_encode`), buffered in chunks of ``CHUNK_BYTES`` and
    streamed to a temporary file, so memory does not grow with the shard. When a sample would push the
    shard past ``size_limit``, the shard is finished first: its files are assembled under temporary
    names, hashed, compressed, renamed to their final names and handed to the uploader. ``index.json``
    is written last, also through a rename, so an interrupted writer leaves either no index or the
    previous complete one; with a remote ``out`` it is handed to the uploader only after its ``wait()``
    (see :mod:`shardflow.format.upload`).

    Subclasses set :attr:`format` and :attr:`_per_sample`, fill ``columns`` for the shard config, set
    ``_columns`` (the column map as the user gave it), and implement :meth:`_encode`,
    :meth:`_start_data` and :meth:`_finish_files`.

    The configuration reads under mosaicml-streaming's names: :meth:`get_config`, ``compression``,
    ``hashes``, ``size_limit``, ``keep_local``, ``local``, ``remote``, ``shards``, ``columns`` and the
    format's column fields (read-only: a writer's configuration is fixed when it is created).
    """

    format: ClassVar[str] = ""
    _columns: dict[str, str]  # Set by the subclass: the column map as given.
    # Bytes each sample adds to a shard beyond its encoding (an MDS offset-table entry).
    _per_sample: ClassVar[int] = 0

    def __init__(
        self,
        *,
        out: Out,
        columns: dict[str, Any],
        keep_local: bool = False,
        compression: str | None = None,
        hashes: list[str] | None = None,
        size_limit: int | str | None = 1 << 26,
        progress_bar: bool = False,
        max_workers: int | None = None,
        retry: int = 2,
        exist_ok: bool = False,
        mode: str = "create",
        **unknown: Any,
    ) -> None:
        if unknown:
            name = type(self).__name__
            raise UnknownArgumentError(
                f"{name} got unknown argument(s) {sorted(unknown)}: the writers take out, keep_local, "
                "compression, hashes, size_limit, progress_bar, max_workers, retry, exist_ok and mode, "
                f"plus their format's own (see help({name})); fix or remove the name"
            )
        self._compressor = get_compressor(compression) if compression else None
        self._hashes = sorted(set(hashes or []))
        for algo in self._hashes:
            new_hasher(algo)  # Unknown names and missing optional libraries fail here, not mid-write.
        self._size_limit = parse_size(size_limit)
        if self._size_limit is not None and not 0 < self._size_limit < 2**32:
            raise ValueError(
                f"size_limit={size_limit!r}: expected 1 to 2**32 - 1 bytes (shard offsets are uint32), "
                "or None for a single shard"
            )
        if mode not in ("create", "append"):
            raise ValueError(f"mode={mode!r}: expected 'create' or 'append'")
        self._config: dict[str, Any] = {
            "version": 2,
            "format": self.format,
            "compression": compression or None,
            "hashes": self._hashes,
            "size_limit": self._size_limit,
            **columns,
        }
        self._keep_local = keep_local
        local, self._remote = split_out(out)
        if local is None and mode == "append":
            raise ValueError(f"out={out!r}: appending needs the dataset's local copy: pass (local, url)")
        self._uploader = get_uploader(out, progress_bar=progress_bar, max_workers=max_workers, retry=retry)
        if local is None:
            self._local = Path(tempfile.mkdtemp(prefix="shardflow-write-"))
            self._owns_local = True
        else:
            self._local = Path(local)
            self._owns_local = False
        existing = load_existing(self._local, self.format, columns) if mode == "append" else None
        if existing is None:
            prepare_new(self._local, exist_ok)
            existing = []
        self._old_shards = existing
        self._taken = {name for shard in existing for name in shard_files(shard)}
        self._shards: list[dict[str, Any]] = []
        # Finished shards are compressed in threads (the codecs release the GIL) while the next ones are
        # encoded; each holds its compressed bytes until written, so shards in flight are few and small.
        self._max_in_flight = _shards_in_flight(self._size_limit) if self._compressor else 0
        self._compressor_pool = (
            ThreadPoolExecutor(self._max_in_flight, "shardflow-compress") if self._max_in_flight else None
        )
        self._in_flight: deque[Future[dict[str, Any]]] = deque()
        self._written: list[Path] = []
        self._samples_done = 0  # In finished shards of this writer.
        self._finished = False
        self._progress = _progress_bar(progress_bar, self._local)
        # Per-shard state, (re)set by _open_shard.
        self._parts: list[bytes] = []
        self._pending = 0
        self._shard_size = 0
        self._uncounted = 0
        self._threshold = -1  # The size past which write() takes the slow path; -1 while no shard is open.
        self._number = -1
        self._data: HashingFile | None = None
        self._sizes: SizeLog | None = None
        self._buffer = self._parts.append
        self._log_size: Callable[[int], None] = _no_shard_open  # Bound to the shard's SizeLog when open.

    # -- the configuration, under mosaicml-streaming's names ---------------------------------------------

    compression = config_field("compression", "The compression name as given (``'zstd:7'``), or None.")
    hashes = config_field("hashes", "The hash algorithms recorded for every file, sorted.")
    size_limit = config_field("size_limit", "The shard size limit in bytes, or None for one shard.")

    def get_config(self) -> dict[str, Any]:
        """The configuration fields every index entry of this writer carries (a copy).

        Returns:
            ``version``, ``format``, ``compression``, ``hashes``, ``size_limit`` and the format's
            column fields: what mosaicml-streaming's ``get_config()`` returns for the same arguments.
        """
        return copy.deepcopy(self._config)

    @property
    def columns(self) -> dict[str, str]:
        """Column name to encoding, as given."""
        return dict(self._columns)

    @property
    def keep_local(self) -> bool:
        """Whether the local files stay after an upload."""
        return self._keep_local

    @property
    def local(self) -> str:
        """The local folder the files are written to (a temporary one for a bare remote ``out``)."""
        return str(self._local)

    @property
    def remote(self) -> str | None:
        """The remote URL the files are uploaded to, or None."""
        return self._remote

    @property
    def shards(self) -> list[dict[str, Any]]:
        """The index entries of the finished shards, in index order (a copy).

        With ``mode='append'`` the dataset's earlier shards come first. A shard being compressed in the
        background is listed once it is done; after :meth:`finish`, every shard is.
        """
        return copy.deepcopy([*self._old_shards, *self._shards])

    # -- the hooks of a format -----------------------------------------------------------------------------

    def _encode(self, sample: dict[str, Any]) -> bytes:
        """Encode one sample; raise EncodingError naming the column, the sample number and the problem."""
        raise NotImplementedError

    def _start_data(self, number: int, first_size: int) -> tuple[HashingFile, int, int]:
        """Create the file that receives the samples of shard ``number`` (its first has ``first_size`` bytes).

        Returns:
            The file; the bytes the shard has before any sample, as ``size_limit`` counts them; and the
            bytes of the offset-addressed file that ``size_limit`` does not count (a CSV header line).
        """
        raise NotImplementedError

    def _finish_files(self, number: int, data: HashingFile, sizes: SizeLog) -> dict[str, Any]:
        """Turn the sample file of shard ``number`` into its final files; return their index fields."""
        raise NotImplementedError

    # -- the public API --------------------------------------------------------------------------------------

    def write(self, sample: dict[str, Any]) -> None:
        """Add one sample, finishing the current shard first when the sample would overflow it.

        Args:
            sample: A dict with exactly the writer's columns.

        Raises:
            EncodingError: A key is missing or extra, or a value does not fit its column.
            ShardTooLargeError: The sample would make the shard reach 4 GiB.
        """
        data = self._encode(sample)
        size = len(data)
        total = self._shard_size + size + self._per_sample
        if total > self._threshold:
            total = self._make_room(size)
        self._shard_size = total
        self._log_size(size)
        self._buffer(data)
        self._pending += size
        if self._pending >= CHUNK_BYTES:
            self._flush()

    def finish(self) -> None:
        """Finish the last shard, write ``index.json`` and complete the uploads; later calls do nothing.

        On failure every temporary file is removed and the folder keeps its previous index, if any.
        """
        if self._finished:
            return
        try:
            if self._data is not None:
                self._close_shard()
            self._land_in_flight()
            index_path = write_index(self._local, self._old_shards + self._shards)
            self._written.append(index_path)
            if self._uploader is not None:
                self._uploader.wait()  # index.json goes last: only once every file named in it is uploaded
                self._uploader.upload(index_path, INDEX_BASENAME)
                self._uploader.finish()
                self._drop_local()
        finally:
            self._abandon_shard()
            if self._compressor_pool is not None:
                self._compressor_pool.shutdown(wait=True)  # a failed finish still lets the last shard end
            self._finished = True
            if self._progress is not None:
                self._progress.close()
                self._progress = None
        logger.info("wrote %d samples in %d shards to %s", self._samples_done, len(self._shards), self._local)

    def __enter__(self: _Writer) -> _Writer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # As mosaicml-streaming does, keep what was written even when the block raised.
        self.finish()

    # -- shards ----------------------------------------------------------------------------------------------

    def _sample_number(self) -> int:
        """The number of the sample being written, counting from 0 for this writer's first."""
        return self._samples_done + (self._sizes.count if self._sizes is not None else 0)

    def _next_number(self) -> int:
        number = max(self._number + 1, len(self._old_shards) + len(self._shards) + len(self._in_flight))
        while any(name.startswith(f"shard.{number:05}.") for name in self._taken):
            number += 1
        return number

    def _basenames(self, number: int, extension: str = "") -> tuple[str, str | None]:
        """The raw and compressed basenames of one file of shard ``number``, as the reference names them."""
        raw = f"shard.{number:05}.{self.format}{extension}"
        return raw, f"{raw}.{self._compressor.extension}" if self._compressor else None

    def _open_shard(self, first_size: int) -> None:
        if self._finished:
            raise RuntimeError(f"{type(self).__name__} for {self._local} is finished: create a new writer")
        self._number = self._next_number()
        raw, _ = self._basenames(self._number)
        self._sizes = SizeLog(temp_path(self._local / raw, "sizes"))
        self._data, self._shard_size, self._uncounted = self._start_data(self._number, first_size)
        limit = MAX_SHARD_BYTES - self._uncounted
        self._threshold = min(self._size_limit, limit) if self._size_limit is not None else limit
        self._log_size = self._sizes.values.append

    def _make_room(self, size: int) -> int:
        """The shard size with a sample of ``size`` bytes added, opening or rolling the shard as needed."""
        if self._sizes is None:
            self._open_shard(size)
        total = self._shard_size + size + self._per_sample
        assert self._sizes is not None
        if self._size_limit is not None and total > self._size_limit and self._sizes.count:
            self._close_shard()
            self._open_shard(size)
            total = self._shard_size + size + self._per_sample
        if total + self._uncounted > MAX_SHARD_BYTES:
            raise ShardTooLargeError(
                f"sample {self._sample_number()} ({size} bytes) would make {self.format} shard "
                f"{self._number} {total + self._uncounted} bytes; shard offsets are uint32, so a shard must "
                f"stay under 4 GiB ({MAX_SHARD_BYTES + 1} bytes): set size_limit (now {self._size_limit}) "
                "below that, or make the sample smaller"
            )
        return total

    def _flush(self) -> None:
        """Write the buffered samples to the shard's sample file."""
        assert self._data is not None and self._sizes is not None
        self._data.write_parts(self._parts)
        self._parts.clear()
        if self._progress is not None:
            self._progress.update(self._pending)
        self._pending = 0
        self._sizes.spill()

    def _close_shard(self) -> None:
        """Finish the open shard: flush, build its files, publish them, record its index entry."""
        assert self._data is not None and self._sizes is not None
        self._flush()
        count = self._sizes.count
        if not count:
            self._abandon_shard()
            return
        shard = (self._number, self._data, self._sizes)
        self._samples_done += count
        self._data = None
        self._sizes = None
        self._threshold = -1
        if self._compressor_pool is None:
            self._shards.append(self._shard_entry(*shard))
            return
        if len(self._in_flight) == self._max_in_flight:
            self._land_oldest()
        self._in_flight.append(self._compressor_pool.submit(self._shard_entry, *shard))

    def _shard_entry(self, number: int, data: HashingFile, sizes: SizeLog) -> dict[str, Any]:
        """Build the files of a finished shard (compressed, hashed, uploaded) and return its index entry."""
        count = sizes.count
        try:
            files = self._finish_files(number, data, sizes)
        finally:
            sizes.discard()
        logger.debug("finished shard %d of %s: %d samples", number, self._local, count)
        return {**self._config, "samples": count, **files}

    def _land_in_flight(self) -> None:
        """Wait for the shards being compressed and record their index entries in order (or raise)."""
        while self._in_flight:
            self._land_oldest()

    def _land_oldest(self) -> None:
        self._shards.append(self._in_flight.popleft().result())

    def _abandon_shard(self) -> None:
        """Delete the temporary files of the open shard, if any."""
        if self._data is not None:
            self._data.discard()
            self._data = None
        if self._sizes is not None:
            self._sizes.discard()
            self._sizes = None
        self._parts.clear()
        self._pending = 0
        self._threshold = -1

    def _publish(self, raw: HashingFile, raw_name: str, zip_name: str | None) -> tuple[dict, dict | None]:
        """Close a complete raw file, compress it if asked, rename the result into place and upload it.

        Returns:
            The ``raw_*`` and ``zip_*`` entries of the shard (``zip_*`` is ``None`` without compression).
        """
        raw_info = {"basename": raw_name, "bytes": raw.size, "hashes": raw.close()}
        try:
            if self._compressor is None or zip_name is None:
                self._install(raw.path, raw_name)
                return raw_info, None
            zipped = temp_path(self._local / zip_name)
            try:
                self._compressor.compress_file(raw.path, zipped)
                zip_info = {
                    "basename": zip_name,
                    "bytes": zipped.stat().st_size,
                    "hashes": hash_file_all(self._hashes, zipped),
                }
                self._install(zipped, zip_name)
            finally:
                zipped.unlink(missing_ok=True)
            return raw_info, zip_info
        finally:
            raw.discard()  # Gone already when it was installed under its final name.

    def _install(self, temporary: Path, name: str) -> None:
        final = self._local / name
        os.replace(temporary, final)
        self._written.append(final)
        if self._uploader is not None:
            self._uploader.upload(final, name)

    def _drop_local(self) -> None:
        """After a complete upload, remove the local files unless ``keep_local``."""
        if self._keep_local:
            logger.info("keep_local=True: the uploaded dataset stays in %s", self._local)
            return
        if self._owns_local:
            shutil.rmtree(self._local, ignore_errors=True)
            return
        for path in self._written:
            path.unlink(missing_ok=True)


def _shards_in_flight(size_limit: int | None) -> int:
    """How many finished shards may be compressed at once: one per usable CPU, within ``_IN_FLIGHT_BYTES``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    fit = _IN_FLIGHT_BYTES // size_limit if size_limit else 1
    return max(1, min(cpus, _MAX_COMPRESSORS, fit))


def _no_shard_open(size: int) -> None:
    raise AssertionError("a sample size was logged with no shard open")


def _progress_bar(enabled: bool, folder: Path) -> Any:
    """A tqdm bar of bytes written, or ``None`` (tqdm is optional)."""
    # mirrors shardflow.storage.upload._progress_bar; the packages may not import each other
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        logger.warning("progress_bar=True needs tqdm (pip install tqdm): writing without a progress bar")
        return None
    return tqdm(desc=f"writing {folder}", unit="B", unit_scale=True, unit_divisor=1024)
