"""The batch fast path: a batch's fixed-size columns read as whole arrays, with no step per sample."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import default_collate

if TYPE_CHECKING:
    from shardflow.dataset.dataset import StreamingDataset

__all__ = ["read_batch"]


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
    """Samples ``(shard_ids[i], local_ids[i])`` collated as torch's ``default_collate`` would collate them.

    Fixed-size numeric columns are gathered per shard into one array each (numpy fancy indexing on the
    shard's map) and become tensors without a copy; other columns are read per sample and collated with
    ``default_collate``.
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
            batch[name] = torch.from_numpy(out[name])
        else:
            batch[name] = default_collate([sample[name] for sample in rest])
    return batch
