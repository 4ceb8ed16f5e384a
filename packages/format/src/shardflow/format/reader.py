"""LocalDataset: torch-free random access to the samples of a dataset folder on local disk."""

from __future__ import annotations

import logging
import threading
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shardflow.format._read_mds import MDSPlan, MDSShard
from shardflow.format._read_text import TextPlan, TextShard
from shardflow.format.errors import UnknownNameError, UnsafeEncodingError
from shardflow.format.hashing import get_hashes, is_hash
from shardflow.format.index import INDEX_BASENAME, read_index

__all__ = ["LocalDataset", "ShardInfo"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardInfo:
    """One shard of a dataset, as its index describes it.

    Attributes:
        index: Position of the shard in the index.
        basename: Its (raw) data file, relative to the dataset folder.
        format: ``mds``, ``json``, ``csv``, ``tsv`` or ``xsv``.
        samples: How many samples it holds.
        start: The dataset index of its first sample.
        compression: Its compression name, or None.
        columns: Column name to encoding.
    """

    index: int
    basename: str
    format: str
    samples: int
    start: int
    compression: str | None
    columns: dict[str, str]


class LocalDataset:
    """Random access to the samples of a dataset whose shards and ``index.json`` are on local disk.

    Reads MDS, JSONL and CSV/TSV/XSV shards, plain or compressed. Shards are opened (and, when only
    their compressed form exists, decompressed next to it) on first use, then memory-mapped for the
    life of the object. It behaves like a read-only list of sample dicts and is safe to share between
    threads and to pickle into worker processes.

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

    Reading a sample raises ShardFormatError for a missing, truncated or corrupt shard file and
    ShardHashError for a digest mismatch; each message names the file.

    Example:
        >>> with LocalDataset("/data/my_dataset", split="train") as dataset:
        ...     first, last = dataset[0], dataset[-1]
        ...     batch = dataset.get_batch([3, 1, 4])
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
                f"validate_hash={validate_hash!r} is not a known hash; use one of {get_hashes()} or None"
            )
        self.local = local
        self.split = split
        self.allow_unsafe_types = allow_unsafe_types
        self.validate_hash = validate_hash
        self._root = Path(local) / split if split else Path(local)
        index_path = self._root / INDEX_BASENAME
        entries = read_index(index_path)["shards"]
        self._plans = [self._plan(entry, index_path) for entry in entries]
        shards, start = [], 0
        for k, (entry, plan) in enumerate(zip(entries, self._plans, strict=True)):
            shards.append(
                ShardInfo(
                    k,
                    entry["raw_data"]["basename"],
                    entry["format"],
                    entry["samples"],
                    start,
                    entry.get("compression"),
                    plan.columns,
                )
            )
            start += entry["samples"]
        self.shards: tuple[ShardInfo, ...] = tuple(shards)
        self.num_samples: int = start
        self._starts = [shard.start for shard in shards]
        self._starts_array = np.array(self._starts, dtype=np.int64)
        self._readers: list[MDSShard | TextShard | None] = [None] * len(shards)
        self._lock = threading.Lock()
        logger.debug("opened index %s: %d shards, %d samples", index_path, len(shards), start)

    def _plan(self, entry: dict[str, Any], index_path: Path) -> MDSPlan | TextPlan:
        plan = MDSPlan(entry) if entry["format"] == "mds" else TextPlan(entry, index_path)
        if plan.unsafe_columns and not self.allow_unsafe_types:
            raise UnsafeEncodingError(
                f"column {plan.unsafe_columns[0]!r} of {self._root / entry['raw_data']['basename']} "
                f"(listed in {index_path}) is pickled, and unpickling runs arbitrary code: pass "
                "allow_unsafe_types=True only if you trust whoever wrote this dataset"
            )
        return plan

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

    def _reader(self, k: int) -> MDSShard | TextShard:
        reader = self._readers[k]
        if reader is None:
            with self._lock:
                reader = self._readers[k]
                if reader is None:
                    reader = self._plans[k].open(self._root, self.validate_hash)
                    self._readers[k] = reader
        return reader

    def _get(self, at: int) -> dict[str, Any]:
        i = at + self.num_samples if at < 0 else at
        if not 0 <= i < self.num_samples:
            raise IndexError(f"sample index {at} is out of range for a dataset of {self.num_samples} samples")
        k = bisect_right(self._starts, i) - 1
        reader = self._readers[k] or self._reader(k)
        return reader.get(i - self._starts[k])

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
        wanted = ids_array.astype(np.int64)
        wanted[wanted < 0] += self.num_samples
        bad = (wanted < 0) | (wanted >= self.num_samples)
        if bad.any():
            raise IndexError(
                f"sample index {ids_array[np.argmax(bad)]} is out of range for a dataset of "
                f"{self.num_samples} samples"
            )
        shard_ids = np.searchsorted(self._starts_array, wanted, side="right") - 1
        local_ids = wanted - self._starts_array[shard_ids]
        samples = []
        current, get = -1, None
        for k, i in zip(shard_ids.tolist(), local_ids.tolist(), strict=True):
            if k != current:
                current, get = k, self._reader(k).get
            samples.append(get(i))  # type: ignore[misc]
        return samples

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for shard in self.shards:
            if shard.samples:
                get = self._reader(shard.index).get
                for i in range(shard.samples):
                    yield get(i)

    def close(self) -> None:
        """Unmap every open shard. The dataset stays usable: shards reopen on next use."""
        with self._lock:
            readers, self._readers = self._readers, [None] * len(self.shards)
        for reader in readers:
            if reader is not None:
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
