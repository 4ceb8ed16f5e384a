"""The batch fast path: a batch's columns read whole, fixed-size ones as arrays with no step per sample."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import default_collate

if TYPE_CHECKING:
    from shardflow.dataset.pool import ShardPool
    from shardflow.format import ShardInfo

__all__ = ["ByteSpans", "gather_batch", "read_batch", "read_spans", "to_tensors"]


@dataclass(frozen=True)
class ByteSpans:
    """A ``bytes`` column of a batch as where its values lie in the shard files, for the process that trains
    to copy them out of its own map of the same files (a DataLoader worker then never touches them).

    Groups of one shard each: the shard's index in the dataset, and where its samples' values start and
    end in its file; ``where`` (batches of several shards) is each sample's place in the groups' order.
    """

    shards: tuple[int, ...]
    starts: tuple[np.ndarray, ...]
    ends: tuple[np.ndarray, ...]
    where: list[int] | None

    def read(self, pool: ShardPool) -> list[bytes]:
        """The values, in the batch's order, read through ``pool``'s readers (a random read each)."""
        found: list[bytes] = []
        for k, starts, ends in zip(self.shards, self.starts, self.ends, strict=True):
            found += pool.recent_reader(k).read_spans(starts, ends)
        return found if self.where is None else [found[p] for p in self.where]


def _common_columns(
    pool: ShardPool, shards: list[int], kind: Callable[[ShardInfo], dict[str, Any]]
) -> dict[str, Any]:
    """The columns that ``kind`` finds, with the same value, in every one of ``shards``."""
    common: dict[str, Any] | None = None
    for k in shards:
        found = kind(pool.shards[k])
        common = dict(found) if common is None else {n: v for n, v in common.items() if found.get(n) == v}
    return common or {}


def _byte_columns(shard: ShardInfo) -> dict[str, str]:
    """A shard's columns whose located spans are their values (none unless its format can locate spans)."""
    return shard.byte_columns


def gather_batch(
    pool: ShardPool, shard_ids: NDArray[np.int64], local_ids: NDArray[np.int64], spans: bool = False
) -> tuple[list[str], dict[str, np.ndarray], dict[str, list[Any]], dict[str, ByteSpans]]:
    """The columns of samples ``(shard_ids[i], local_ids[i])``, each in one piece, in the order given.

    Returns the column names (those of the first sample's shard), then the fixed-size numeric columns
    that every shard of the batch serves as arrays, gathered per shard into one numpy array each (fancy
    indexing on the shard's map), then every other column as the list of its decoded values (located
    per shard all at once, see ``ShardReader.read_columns``), except, with ``spans``, the ``bytes``
    columns of every shard of the batch, returned last as :class:`ByteSpans`.
    """
    count = len(shard_ids)
    order = np.argsort(shard_ids, kind="stable")
    shards, starts = np.unique(shard_ids[order], return_index=True)
    bounds = [*starts.tolist(), count]
    shard_list = shards.tolist()
    arrays = _common_columns(pool, shard_list, lambda shard: shard.array_columns)
    located = list(_common_columns(pool, shard_list, _byte_columns)) if spans else []
    names = list(pool.shards[shard_list[0]].columns)
    others = [name for name in names if name not in arrays and name not in located]
    out = {name: np.empty((count, *shape), dtype) for name, (dtype, shape) in arrays.items()}
    lists: dict[str, list[Any]] = {name: [] for name in others}
    bounds_of: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in located}
    for g, k in enumerate(shard_list):
        positions = order[bounds[g] : bounds[g + 1]]
        reader = pool.reader(k)  # held by the caller's lease
        read = reader.read_columns(local_ids[positions], list(arrays), others, located)
        for name, values in read.arrays.items():
            out[name][positions] = values
        for name, found in read.values.items():
            lists[name] += found
        for name, span in read.spans.items():
            bounds_of[name].append(span)
    where = None
    if len(shard_list) > 1 and (others or located):
        # The lists follow the samples sorted by shard: sample j sits at the place of j in that order.
        place = np.empty(count, np.int64)
        place[order] = np.arange(count)
        where = place.tolist()
        lists = {name: [found[p] for p in where] for name, found in lists.items()}
    byte_spans = {
        name: ByteSpans(tuple(shard_list), tuple(s for s, _ in found), tuple(e for _, e in found), where)
        for name, found in bounds_of.items()
    }
    return names, out, lists, byte_spans


def read_batch(
    pool: ShardPool, shard_ids: NDArray[np.int64], local_ids: NDArray[np.int64], spans: bool = False
) -> dict[str, Any]:
    """Samples ``(shard_ids[i], local_ids[i])`` collated as torch's ``default_collate`` would, but numpy.

    Fixed-size numeric columns are gathered per shard into one numpy array each (see
    :func:`gather_batch`); :func:`to_tensors` turns them into tensors without a copy in the process that
    trains, so that a DataLoader worker sends plain arrays (one pickle through its pipe) rather than tensors
    in shared-memory segments, which cost far more per batch. Other columns are read a column at a time
    and collated with ``default_collate`` (which keeps a list of ``bytes`` or ``str`` as it is); with
    ``spans``, ``bytes`` columns come as :class:`ByteSpans` for :func:`read_spans` in the trainer.
    """
    names, arrays, lists, located = gather_batch(pool, shard_ids, local_ids, spans)
    columns = {**{name: default_collate(found) for name, found in lists.items()}, **arrays, **located}
    return {name: columns[name] for name in names}


def read_spans(batch: Any, pool: ShardPool) -> Any:
    """``batch`` with its :class:`ByteSpans` read into lists of ``bytes`` through ``pool`` (a batch that is
    not a dict, made by a dataset's own ``read_batches``, has none)."""
    if not isinstance(batch, dict):
        return batch
    return {
        name: value.read(pool) if isinstance(value, ByteSpans) else value for name, value in batch.items()
    }


def to_tensors(batch: Any, pin: bool = False) -> Any:
    """``batch`` (a dict, or a list or tuple as ``default_collate`` makes of pairs) with its numpy arrays
    made tensors (sharing their memory), copied to pinned memory with ``pin`` unless pinned already (or on
    a GPU already)."""
    if isinstance(batch, (list, tuple)):
        return type(batch)(_tensor(value, pin) for value in batch)
    return {name: _tensor(value, pin) for name, value in batch.items()}


def _tensor(value: Any, pin: bool) -> Any:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if pin and isinstance(value, torch.Tensor) and value.device.type == "cpu" and not value.is_pinned():
        value = value.pin_memory()
    return value
