"""The batch fast path: a batch's columns read whole, fixed-size ones as arrays with no step per sample."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import default_collate

if TYPE_CHECKING:
    from shardflow.dataset.dataset import StreamingDataset

__all__ = ["gather_batch", "read_batch", "to_tensors"]


def _array_columns(
    dataset: StreamingDataset, shards: list[int]
) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """The columns every shard of the batch serves as arrays of one dtype and shape."""
    common: dict[str, tuple[np.dtype, tuple[int, ...]]] | None = None
    for k in shards:
        found = dataset.shards[k].array_columns
        common = dict(found) if common is None else {n: v for n, v in common.items() if found.get(n) == v}
    return common or {}


def gather_batch(
    dataset: StreamingDataset, shard_ids: NDArray[np.int64], local_ids: NDArray[np.int64]
) -> tuple[list[str], dict[str, np.ndarray], dict[str, list[Any]]]:
    """The columns of samples ``(shard_ids[i], local_ids[i])``, each in one piece, in the order given.

    Returns the column names (those of the first sample's shard), then the fixed-size numeric columns
    that every shard of the batch serves as arrays, gathered per shard into one numpy array each (fancy
    indexing on the shard's map), then every other column as the list of its decoded values (located
    per shard all at once, see ``ShardReader.read_columns``).
    """
    count = len(shard_ids)
    order = np.argsort(shard_ids, kind="stable")
    shards, starts = np.unique(shard_ids[order], return_index=True)
    bounds = [*starts.tolist(), count]
    shard_list = shards.tolist()
    arrays = _array_columns(dataset, shard_list)
    names = list(dataset.shards[shard_list[0]].columns)
    others = [name for name in names if name not in arrays]
    out = {name: np.empty((count, *shape), dtype) for name, (dtype, shape) in arrays.items()}
    lists: dict[str, list[Any]] = {name: [] for name in others}
    for g, k in enumerate(shard_list):
        positions = order[bounds[g] : bounds[g + 1]]
        reader = dataset._readers[k] or dataset._reader(k)
        wanted = local_ids[positions]
        gathered, decoded = reader.read_columns(wanted, list(arrays), others)
        for name, values in gathered.items():
            out[name][positions] = values
        for name, found in decoded.items():
            lists[name] += found
    if len(shard_list) > 1 and others:
        # The lists follow the samples sorted by shard: sample j sits at the place of j in that order.
        place = np.empty(count, np.int64)
        place[order] = np.arange(count)
        where = place.tolist()
        lists = {name: [found[p] for p in where] for name, found in lists.items()}
    return names, out, lists


def read_batch(dataset: StreamingDataset, shard_ids: NDArray[np.int64], local_ids: NDArray[np.int64]) -> Any:
    """Samples ``(shard_ids[i], local_ids[i])`` collated as torch's ``default_collate`` would, but numpy.

    Fixed-size numeric columns are gathered per shard into one numpy array each (see
    :func:`gather_batch`); :func:`to_tensors` turns them into tensors without a copy in the process that
    trains, so that a DataLoader worker sends plain arrays (one pickle through its pipe) rather than tensors
    in shared-memory segments, which cost far more per batch. Other columns are read a column at a time
    and collated with ``default_collate`` (which keeps a list of ``bytes`` or ``str`` as it is).
    """
    names, arrays, lists = gather_batch(dataset, shard_ids, local_ids)
    return {name: arrays[name] if name in arrays else default_collate(lists[name]) for name in names}


def to_tensors(batch: dict[str, Any], pin: bool = False) -> dict[str, Any]:
    """``batch`` with its numpy arrays made tensors (sharing their memory, or copied to pinned memory)."""
    out = {}
    for name, value in batch.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if pin and isinstance(value, torch.Tensor):
            value = value.pin_memory()
        out[name] = value
    return out
