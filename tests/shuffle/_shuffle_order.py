"""Rebuild an epoch's global order from every worker's own slice (helpers of the shuffle tests)."""

from __future__ import annotations

import numpy as np

from shardflow.shuffle import SampleOrder, WorldShape

__all__ = ["epoch_from_workers", "global_batches", "stream_order"]


def epoch_from_workers(
    order: SampleOrder,
    epoch: int,
    world: WorldShape,
    sample_in_epoch: int = 0,
    initial_physical_nodes: int | None = None,
) -> np.ndarray:
    """The 5-D epoch (nodes, ranks, workers, batches, batch size) assembled from each worker's own slice."""
    rows = [
        order.worker_sample_ids(epoch, world, node, rank, worker, sample_in_epoch, initial_physical_nodes)
        for node in range(world.num_physical_nodes)
        for rank in range(world.ranks_per_node)
        for worker in range(world.workers_per_rank)
    ]
    shape = (world.num_physical_nodes, world.ranks_per_node, world.workers_per_rank, -1, order.batch_size)
    return np.stack(rows).reshape(shape)


def global_batches(epoch: np.ndarray) -> list[tuple[int, ...]]:
    """Each global step's samples (every rank's batch of that step, -1 dropped), sorted.

    Step ``s`` of a rank is batch ``s // workers`` of worker ``s % workers``: the DataLoader's round robin.
    """
    nodes, ranks, workers, batches, _ = epoch.shape
    steps = []
    for step in range(workers * batches):
        ids = epoch[:, :, step % workers, step // workers].ravel()
        ids = np.sort(ids[ids >= 0])
        if ids.size:
            steps.append(tuple(ids.tolist()))
    return steps


def stream_order(slices: np.ndarray, batch_size: int, first_nodes: int, first_batch_size: int) -> np.ndarray:
    """Place every id of a 5-D epoch at its index in the canonical stream (the order that never changes).

    Element ``i`` of device ``(node, rank)``'s batch at step ``s`` is element ``i0`` of device
    ``(node0, rank0)`` of the first run (``first_nodes`` nodes, ``first_batch_size`` per device), whose
    stream index is ``s * G + (i0 * ranks + rank0) * first_nodes + node0``. Trailing padding is cut.
    """
    nodes, ranks, workers, batches, _ = slices.shape
    global_batch = nodes * ranks * batch_size
    out = np.full(workers * batches * global_batch, -2, np.int64)
    for node in range(nodes):
        for rank in range(ranks):
            for worker in range(workers):
                for batch in range(batches):
                    step = batch * workers + worker
                    for i in range(batch_size):
                        device0, i0 = divmod((node * ranks + rank) * batch_size + i, first_batch_size)
                        node0, rank0 = divmod(device0, ranks)
                        out[step * global_batch + (i0 * ranks + rank0) * first_nodes + node0] = slices[
                            node, rank, worker, batch, i
                        ]
    return out
