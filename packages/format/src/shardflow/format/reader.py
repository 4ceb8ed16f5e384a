"""LocalDataset: torch-free random access to the samples of a dataset folder on local disk."""

from __future__ import annotations

import logging
import operator
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shardflow.format.errors import FormatError, UnknownNameError
from shardflow.format.hashing import get_hashes, is_hash
from shardflow.format.shards import ShardInfo, ShardLocator, ShardReader, read_shards

__all__ = ["LocalDataset", "ShardInfo"]

logger = logging.getLogger(__name__)

_SampleGetter = Callable[[int], dict[str, Any]]


class LocalDataset:
    """Random access to the samples of a dataset whose shards and ``index.json`` are on local disk.

    Reads MDS, JSONL and CSV/TSV/XSV shards, plain or compressed, and those of any registered format
    (:mod:`shardflow.format.formats`). Shards are opened (and, when only
    their compressed form exists, decompressed next to it) on first use, then memory-mapped for the
    life of the object (or until :meth:`release` or :meth:`close`). It behaves like a read-only list
    of sample dicts and is safe to share between threads and to pickle into worker processes.

    Args:
        local: The dataset folder.
        split: A sub-folder of ``local`` holding the split to read, or None.
        allow_unsafe_types: Read ``pkl`` columns, which run arbitrary code when decoded. Only for data
            you trust.
        validate_hash: A hash algorithm (e.g. ``'sha1'``) to check each shard file against the index
            with when it is first opened: the compressed file before decompressing it, else the raw file.
            None checks nothing (sizes and structure are always checked).

    Raises:
        UnknownNameError: ``validate_hash`` names no known hash algorithm.
        FileNotFoundError: There is no ``index.json`` in the folder.
        IndexFormatError: ``index.json`` is corrupt, of an unsupported version or unsafe.
        UnsafeEncodingError: A column is ``pkl`` and ``allow_unsafe_types`` is False.

    Reading a sample raises ShardMissingError (a ShardFormatError and a FileNotFoundError) for a missing
    shard file, ShardFormatError for a truncated or corrupt one and ShardHashError for a digest mismatch;
    each message names the file. It is built on :mod:`shardflow.format.shards`: one
    :class:`~shardflow.format.shards.ShardReader` per shard, which :meth:`release` closes alone.

    Example:
        >>> with LocalDataset("/data/my_dataset", split="train") as dataset:
        ...     first, last = dataset[0], dataset[-1]
        ...     batch = dataset.get_batch([3, 1, 4])
        ...     tokens = dataset.get_columns([3, 1, 4], ["tokens"])["tokens"]
    """

    def __init__(
        self,
        local: str | Path,
        split: str | None = None,
        allow_unsafe_types: bool = False,
        validate_hash: str | None = None,
    ) -> None:
        if validate_hash is not None and not is_hash(validate_hash):
            raise UnknownNameError(
                f"validate_hash={validate_hash!r} is not a known hash; use one of "
                f"{sorted(get_hashes())} or None"
            )
        self.local = local
        self.split = split
        self.allow_unsafe_types = allow_unsafe_types
        self.validate_hash = validate_hash
        self._root = Path(local) / split if split else Path(local)
        shards = read_shards(local, split, allow_unsafe_types)
        readers = [ShardReader(self._root, shard, validate_hash) for shard in shards]
        self.shards: tuple[ShardInfo, ...] = shards
        self._locator = ShardLocator.from_shards(shards)
        self.num_samples: int = self._locator.num_samples
        self._starts = self._locator.starts.tolist()
        self._readers = readers
        # The open shards' own get functions (None while closed): the hot path calls them directly.
        self._gets: list[_SampleGetter | None] = [None] * len(shards)
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """The number of samples (an alias of ``num_samples``)."""
        return self.num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"LocalDataset(local={str(self.local)!r}, split={self.split!r}, "
            f"samples={self.num_samples}, shards={len(self.shards)})"
        )

    def _getter(self, k: int) -> _SampleGetter:
        """Open shard ``k`` if needed and return its sample getter."""
        with self._lock:  # Also orders this against release(k): no getter of a closed shard is kept.
            get = self._gets[k]
            if get is None:
                get = self._gets[k] = self._readers[k].sample_getter()
        return get

    def _get(self, at: int) -> dict[str, Any]:
        i = at + self.num_samples if at < 0 else at
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample index {at} is out of range for a dataset of {self.num_samples} samples")
        k = bisect_right(self._starts, i) - 1
        get = self._gets[k] or self._getter(k)
        return get(i - self._starts[k])

    def get_item(self, sample_id: int) -> dict[str, Any]:
        """The sample ``sample_id``: mosaicml-streaming's name for ``dataset[sample_id]``.

        Raises:
            IndexError: ``sample_id`` is out of range.
            TypeError: ``sample_id`` is not an integer.
        """
        return self._get(operator.index(sample_id))

    def __getitem__(self, at: int | slice | Sequence[Any] | np.ndarray) -> Any:
        """Get a sample by index (negative counts from the end), or a list of samples.

        Args:
            at: An int, a slice, a list of ints (or of lists, giving nested lists) or a numpy array of
                integers (one list level per dimension).

        Returns:
            A sample dict for an int, else a list.

        Raises:
            IndexError: An index is out of range.
            TypeError: ``at`` is of another type.
        """
        if type(at) is int:
            return self._get(at)
        if isinstance(at, np.integer):
            return self._get(int(at))
        if isinstance(at, slice):
            return self.get_batch(range(*at.indices(self.num_samples)))
        if isinstance(at, np.ndarray) and at.ndim > 1:
            return [self[sub] for sub in at]
        if isinstance(at, list) and any(not isinstance(sub, (int, np.integer)) for sub in at):
            return [self[sub] for sub in at]
        if isinstance(at, (list, np.ndarray)):
            return self.get_batch(at)
        raise TypeError(
            "LocalDataset indices must be ints, slices, lists or integer numpy arrays, "
            f"not {type(at).__name__}"
        )

    def get_batch(self, ids: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Get many samples at once, in the order given; cheaper per sample than indexing one by one.

        Args:
            ids: Sample indices (negative ones count from the end), as a sequence or 1-D integer array.

        Returns:
            The samples.

        Raises:
            IndexError: An index is out of range.
            TypeError: ``ids`` is not a flat sequence of integers.
        """
        ids_array = np.asarray(ids)
        if ids_array.size == 0:
            return []
        if ids_array.ndim != 1 or ids_array.dtype.kind not in "iu":
            raise TypeError(
                f"get_batch needs a flat sequence of integers, not {ids_array.dtype} of shape "
                f"{ids_array.shape}"
            )
        shard_ids, local_ids = self._locate(ids_array)
        samples = []
        current, get = -1, None
        for k, i in zip(shard_ids.tolist(), local_ids.tolist(), strict=True):
            if k != current:
                current, get = k, self._gets[k] or self._getter(k)
            samples.append(get(i))  # type: ignore[misc]
        return samples

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shard and local index of each of ``ids`` (negative ones count from the end)."""
        wanted = ids.astype(np.int64)
        wanted[wanted < 0] += self.num_samples
        bad = (wanted < 0) | (wanted >= self.num_samples)
        if bad.any():
            raise IndexError(
                f"sample index {ids[np.argmax(bad)]} is out of range for a dataset of "
                f"{self.num_samples} samples"
            )
        return self._locator.locate(wanted)

    def get_columns(
        self, ids: Sequence[int] | np.ndarray, columns: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Columns of many samples as one numpy array each, in the order of ``ids`` (see
        :meth:`ShardReader.get_columns`: fixed-size number and array columns of MDS shards).

        Args:
            ids: Sample indices (negative ones count from the end), as a sequence or 1-D integer array.
            columns: The column names to read; None for every column.

        Returns:
            Column name to an array of shape ``(len(ids), *shape of one value)``.

        Raises:
            UnsupportedColumnError: A column is not a fixed-size number or array.
            IndexError: An index is out of range.
            TypeError: ``ids`` is not a flat sequence of integers.
        """
        ids_array = np.asarray(ids)
        if ids_array.size and (ids_array.ndim != 1 or ids_array.dtype.kind not in "iu"):
            raise TypeError(
                f"get_columns needs a flat sequence of integers, not {ids_array.dtype} of shape "
                f"{ids_array.shape}"
            )
        shard_ids, local_ids = self._locate(ids_array.reshape(-1))
        if not self.shards:
            raise IndexError("the dataset has no shards: there are no columns to read")
        found = np.unique(shard_ids) if shard_ids.size else np.zeros(1, np.int64)
        if len(found) == 1:  # All from one shard: its arrays are the answer.
            return self._readers[int(found[0])].get_columns(local_ids, columns)
        out: dict[str, np.ndarray] = {}
        for k in found.tolist():
            where = np.flatnonzero(shard_ids == k)
            parts = self._readers[k].get_columns(local_ids[where], columns)
            for name, part in parts.items():
                column = out.get(name)
                if column is None:
                    column = out[name] = np.empty((len(shard_ids), *part.shape[1:]), part.dtype)
                elif column.shape[1:] != part.shape[1:] or column.dtype != part.dtype:
                    raise FormatError(
                        f"column {name!r} is {part.dtype} of shape {part.shape[1:]} in shard "
                        f"{self.shards[k].basename} but {column.dtype} of shape {column.shape[1:]} in "
                        "another shard: read those shards apart"
                    )
                column[where] = part
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for shard in self.shards:
            if shard.samples:
                get = self._gets[shard.index] or self._getter(shard.index)
                for i in range(shard.samples):
                    yield get(i)

    def release(self, shard_index: int) -> None:
        """Unmap shard ``shard_index`` alone (see :attr:`shards`); it reopens on next use."""
        with self._lock:
            self._gets[shard_index] = None
            self._readers[shard_index].close()

    def close(self) -> None:
        """Unmap every open shard. The dataset stays usable: shards reopen on next use."""
        with self._lock:
            self._gets = [None] * len(self.shards)
            for reader in self._readers:
                reader.close()

    def __enter__(self) -> LocalDataset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "local": self.local,
            "split": self.split,
            "allow_unsafe_types": self.allow_unsafe_types,
            "validate_hash": self.validate_hash,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]
