"""The batch fast path: a batch's fixed-size columns read as whole arrays, with no step per sample."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import default_collate

if TYPE_CHECKING:
    from shardflow.dataset.dataset import StreamingDataset

__all__ = ["read_batch", "to_tensors", "keep_as_is"]


def _array_columns(
    dataset: StreamingDataset, shards: list[int]
) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """The columns every shard of the batch serves as arrays of one dtype and shape."""
    common: dict[str, tuple[np.dtype, tuple[int, ...]]] | None = None
    for k in shards:
        found = dataset.shards[k].array_columns
        common = dict(found) if common is None else {n: v for n, v in common.items() if found.get(n) == v}
    return common or {}


def read_batch(dataset: StreamingDataset, shard_ids: NDArray[np.int64], local_ids: NDArray[np.int64]) -> Any:
    """Samples ``(shard_ids[i], local_ids[i])`` collated as torch's ``default_collate`` would, but numpy.

    Fixed-size numeric columns are gathered per shard into one numpy array each (fancy indexing on the
    shard's map); :func:`to_tensors` turns them into tensors without a copy in the process that trains,
    so that a DataLoader worker sends plain arrays (one pickle through its pipe) rather than tensors in
    shared-memory segments, which cost far more per batch. Other columns are read per sample and
    collated with ``default_collate``.
    """
    count = len(shard_ids)
    order = np.argsort(shard_ids, kind="stable")
    sorted_shards = shard_ids[order]
    shards, starts = np.unique(sorted_shards, return_index=True)
    bounds = [*starts.tolist(), count]
    shard_list = shards.tolist()
    arrays = _array_columns(dataset, shard_list)
    names = list(dataset.shards[shard_list[0]].columns)
    others = [name for name in names if name not in arrays]
    out = {name: np.empty((count, *shape), dtype) for name, (dtype, shape) in arrays.items()}
    rest: list[dict[str, Any]] = [{}] * count
    for g, k in enumerate(shard_list):
        positions = order[bounds[g] : bounds[g + 1]]
        reader = dataset._readers[k] or dataset._reader(k)
        wanted = local_ids[positions]
        if arrays:
            for name, values in reader.get_columns(wanted, list(arrays)).items():
                out[name][positions] = values
        if others:
            for position, sample in zip(positions.tolist(), reader.get_batch(wanted), strict=True):
                rest[position] = sample
    batch: dict[str, Any] = {}
    for name in names:
        if name in out:
            batch[name] = out[name]
        else:
            batch[name] = default_collate([sample[name] for sample in rest])
    return batch


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


def keep_as_is(batch: Any) -> Any:
    """The DataLoader ``collate_fn`` of the batch path: batches arrive collated; workers send numpy."""
    return batch
