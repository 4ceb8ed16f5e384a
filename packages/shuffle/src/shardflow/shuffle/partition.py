"""Partition an epoch's positions over nodes, ranks and workers; the global order never depends on them.

The layout is the reference's (mosaicml-streaming ``orig`` and ``relaxed``): canonical node ``c`` owns a
row of the position space; the rows are read column by column into one stream; physical node ``p`` takes
every ``num_physical_nodes``-th element of the stream, rank ``r`` every ``ranks_per_node``-th element of
its node, and each rank's list is cut into batches dealt round-robin to its workers, which is the order
a DataLoader yields them in. Global batch ``s`` (batch ``s`` of every rank) is therefore always the same
slice of the stream, whatever the world shape with the same global batch size. Rows of unequal length
are evened out by repeating a sample, node lists by repeating samples of the node, and each rank's list
is padded with ``-1`` to a whole number of batches per worker, so every device sees the same number of
samples.

Unlike the reference, nothing here builds the 5-D array to answer one worker: each element is computed
on its own in O(1), so a worker's slice costs O(its samples), and ``drop_first`` need not be a multiple
of the node count (the reference rounds it down, repeating samples on resume).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from shardflow.shuffle._checks import check_positive, is_integer
from shardflow.shuffle._jit import in_threads, jit
from shardflow.shuffle._memory import empty_int64
from shardflow.shuffle.errors import ShuffleError

__all__ = ["PARTITION_ALGOS", "get_partitions", "get_partition_slice", "PartitionPlan", "plan_partition"]

PARTITION_ALGOS = ("orig", "relaxed")
_NO_IDS = np.empty(0, np.int64)


class _Orig(NamedTuple):
    """The integers of an ``orig`` partition, precomputed once (see ``_plan_orig``)."""

    num_samples: int
    canonical: int
    nodes: int
    ranks: int
    workers: int
    batch: int
    row: int  # samples per canonical node, ceil(num_samples / canonical)
    padded_row: int  # row plus the padding that makes it divisible by nodes / canonical
    node_ratio: int
    padding: int
    regular: int  # 1 when every canonical node has a sample, else rows wrap around the samples
    drop: int
    stream: int  # canonical * padded_row
    node_length: int  # stream elements per node after dropping
    rank_padding: int
    rank_length: int  # samples per rank, padding included, -1s excluded
    batches: int  # batches per worker
    row_start: np.ndarray  # first position of each row (c * num_samples // canonical), then num_samples


class PartitionPlan(NamedTuple):
    """A validated partition: ``orig`` for the world the epoch was laid out for, and the world now.

    ``batches`` is the number of batches per worker (each of ``batch_size`` ids, ``-1`` for padding).
    """

    orig: _Orig
    nodes: int
    batch: int
    relaxed: bool
    batches: int


def _check_divisible(num_canonical_nodes: int, num_physical_nodes: int) -> None:
    low, high = sorted((num_canonical_nodes, num_physical_nodes))
    if high % low:
        raise ShuffleError(
            f"num_canonical_nodes={num_canonical_nodes} and num_physical_nodes={num_physical_nodes}: one "
            f"must divide the other, else every node would read every shard. Pick num_canonical_nodes as a "
            f"multiple of the node count, or resume with partition_algo='relaxed' and "
            f"initial_physical_nodes set to the node count of the first run"
        )


def _plan_orig(
    num_samples: int,
    num_canonical_nodes: int,
    num_physical_nodes: int,
    ranks_per_node: int,
    workers_per_rank: int,
    batch_size: int,
    drop_first: int,
) -> _Orig:
    _check_divisible(num_canonical_nodes, num_physical_nodes)
    row = -(-num_samples // num_canonical_nodes)
    node_ratio = num_physical_nodes // num_canonical_nodes if num_canonical_nodes < num_physical_nodes else 0
    padding = (-row) % node_ratio if node_ratio else 0
    padded_row = row + padding
    regular = int(
        num_samples > num_canonical_nodes
        or (num_samples == num_canonical_nodes and num_canonical_nodes >= num_physical_nodes)
    )
    if not regular:
        warnings.warn(  # a UserWarning, as the reference's
            f"{num_samples} samples over {num_canonical_nodes} canonical nodes: most samples will be "
            "repeated; check the dataset size or lower num_canonical_nodes",
            UserWarning,
            stacklevel=2,
        )
    stream = num_canonical_nodes * padded_row
    node_length = max(0, -(-(stream - drop_first) // num_physical_nodes))
    rank_padding = (-node_length) % ranks_per_node
    rank_length = (node_length + rank_padding) // ranks_per_node
    per_round = workers_per_rank * batch_size
    batches = -(-rank_length // per_round)
    row_start = np.arange(num_canonical_nodes + 1, dtype=np.int64) * num_samples // num_canonical_nodes
    return _Orig(
        num_samples,
        num_canonical_nodes,
        num_physical_nodes,
        ranks_per_node,
        workers_per_rank,
        batch_size,
        row,
        padded_row,
        node_ratio,
        padding,
        regular,
        drop_first,
        stream,
        node_length,
        rank_padding,
        rank_length,
        batches,
        row_start,
    )


def plan_partition(
    algo: str,
    num_samples: int,
    num_canonical_nodes: int,
    num_physical_nodes: int,
    ranks_per_node: int,
    workers_per_rank: int,
    batch_size: int,
    drop_first: int = 0,
    initial_physical_nodes: int | None = None,
) -> PartitionPlan:
    """Validate a partition request and precompute its integers (arguments as ``get_partitions``).

    Raises:
        ShuffleError: an unknown algorithm, a non-positive count, canonical and physical nodes that do not
            divide one another (``orig``), a global batch that the first run's devices cannot share
            (``relaxed``), or ``drop_first`` beyond the end of the epoch.
    """
    if algo not in PARTITION_ALGOS:
        raise ShuffleError(f"partition_algo={algo!r} is unknown: use one of {', '.join(PARTITION_ALGOS)}")
    if not is_integer(num_samples) or num_samples < 1:
        raise ShuffleError(
            f"num_samples={num_samples!r}: an epoch needs at least one sample (is a stream "
            f"empty, or are all its weights zero?)"
        )
    for name, value in (
        ("num_canonical_nodes", num_canonical_nodes),
        ("num_physical_nodes", num_physical_nodes),
        ("ranks_per_node", ranks_per_node),
        ("workers_per_rank", workers_per_rank),
        ("batch_size", batch_size),
    ):
        check_positive(name, value)
    world = num_physical_nodes * ranks_per_node
    limit = num_samples + world - num_samples % world
    if not is_integer(drop_first) or not 0 <= drop_first <= limit:
        raise ShuffleError(
            f"drop_first (sample_in_epoch) = {drop_first!r} is outside the epoch: it must be between 0 and "
            f"{limit} ({num_samples} samples, padded for {world} devices); is the checkpoint from another "
            f"dataset or epoch size?"
        )
    first_nodes = num_physical_nodes  # the node count the epoch's traversal is laid out for
    if algo == "relaxed" and initial_physical_nodes is not None:
        check_positive("initial_physical_nodes", initial_physical_nodes)
        low, high = sorted((num_canonical_nodes, num_physical_nodes))
        if high % low:
            first_nodes = initial_physical_nodes
    relaxed = first_nodes != num_physical_nodes
    if relaxed:
        global_batch = num_physical_nodes * ranks_per_node * batch_size
        initial_devices = first_nodes * ranks_per_node
        if global_batch % initial_devices:
            raise ShuffleError(
                f"the global batch of {global_batch} samples ({num_physical_nodes} nodes x {ranks_per_node} "
                f"ranks x batch_size {batch_size}) does not split over the {initial_devices} devices of the "
                f"first run (initial_physical_nodes={initial_physical_nodes}): keep the global batch size of "
                f"the first run when resuming on another node count"
            )
        orig = _plan_orig(
            num_samples,
            num_canonical_nodes,
            first_nodes,
            ranks_per_node,
            workers_per_rank,
            global_batch // initial_devices,
            drop_first,
        )
    else:
        orig = _plan_orig(
            num_samples,
            num_canonical_nodes,
            num_physical_nodes,
            ranks_per_node,
            workers_per_rank,
            batch_size,
            drop_first,
        )
    return PartitionPlan(orig, num_physical_nodes, batch_size, relaxed, orig.batches)


@jit
def _row_value(o: _Orig, row: int, column: int) -> int:
    """The position at (canonical node ``row``, ``column``) of the padded canonical matrix."""
    if not o.regular:
        return (row * o.padded_row + column) % o.num_samples
    if column >= o.row:  # padding for nodes > canonical nodes: repeat earlier columns of the row
        column = (o.row - o.node_ratio + 1 - o.padding + column - o.row) % o.row
    value = o.row_start[row] + column
    if column == o.row - 1 and o.row_start[row + 1] - o.row_start[row] < o.row:
        value -= 1  # a short row repeats its last sample
    return value


@jit
def _rank_value(o: _Orig, node: int, rank: int, index: int) -> int:
    """The ``index``-th position of a rank's list (``index < rank_length``)."""
    m = index * o.ranks + rank
    if m >= o.node_length:  # pad the node's list to a multiple of ranks with samples of the node
        extra = m - o.node_length
        if o.ranks + o.rank_padding - 1 <= o.node_length:
            m = o.node_length - o.ranks - o.rank_padding + 1 + extra
        else:
            m = extra % o.node_length
    q = o.drop + m * o.nodes + node
    if q >= o.stream:  # drop_first not a multiple of nodes: this node's list is one short, repeat
        q -= o.nodes
    return _row_value(o, q % o.canonical, q // o.canonical)


@jit
def _value(position: int, ids: np.ndarray) -> int:
    return ids[position] if ids.shape[0] and position >= 0 else position


@jit
def _fill_batch(
    plan: PartitionPlan, node: int, rank: int, worker: int, batch: int, out: np.ndarray, ids: np.ndarray
) -> None:
    """Write batch ``batch`` of one worker: positions, or the ids at them when ``ids`` is not empty."""
    o = plan.orig
    gather = ids.shape[0] > 0
    if plan.relaxed:
        # Global batch s is the same slice of the first run's traversal, split over today's devices.
        step = batch * o.workers + worker
        device_offset = (node * o.ranks + rank) * plan.batch
        for i in range(plan.batch):
            first_device, first_i = divmod(device_offset + i, o.batch)
            first_node, first_rank = divmod(first_device, o.ranks)
            index = step * o.batch + first_i
            out[i] = (
                _value(_rank_value(o, first_node, first_rank, index), ids) if index < o.rank_length else -1
            )
        return
    first = (batch * o.workers + worker) * o.batch
    last_m = (first + o.batch - 1) * o.ranks + rank
    if (
        first + o.batch > o.rank_length
        or last_m >= o.node_length
        or o.drop + last_m * o.nodes + node >= o.stream
    ):  # the batch reaches padding
        for i in range(o.batch):
            index = first + i
            out[i] = _value(_rank_value(o, node, rank, index), ids) if index < o.rank_length else -1
        return
    # Consecutive positions of a batch are ranks * nodes apart in the stream: step (row, column) without
    # dividing. No calls in the hot loop: every array argument costs a reference count.
    column_step, row_step = divmod(o.ranks * o.nodes, o.canonical)
    column, row = divmod(o.drop + (first * o.ranks + rank) * o.nodes + node, o.canonical)
    edge = not o.regular or column + (o.batch * o.ranks * o.nodes) // o.canonical + 1 >= o.row - 1
    row_start = o.row_start
    for i in range(o.batch):
        if edge:  # near the end of the rows: short rows and padding columns
            position = _row_value(o, row, column)
        else:
            position = row_start[row] + column
        out[i] = ids[position] if gather else position
        row += row_step
        column += column_step
        if row >= o.canonical:
            row -= o.canonical
            column += 1


@jit
def _fill_worker(
    plan: PartitionPlan,
    node: int,
    rank: int,
    worker: int,
    first: int,
    stop: int,
    out: np.ndarray,
    ids: np.ndarray,
) -> None:
    """Write batches ``first`` to ``stop - 1`` of one worker into ``out``, one after the other."""
    size = plan.batch
    for batch in range(first, stop):
        k = batch - first
        _fill_batch(plan, node, rank, worker, batch, out[k * size : (k + 1) * size], ids)


@jit
def _mark_rows(
    plan: PartitionPlan, node: int, rank: int, worker: int, touched: np.ndarray, buffer: np.ndarray
) -> None:
    """Mark in ``touched`` the canonical node of every position of one worker, a batch at a time.

    Canonical node ``c`` holds positions ``[c * n // C, (c + 1) * n // C)``, so position ``p`` is in node
    ``((p + 1) * C - 1) // n``. Stops early once every node is marked.
    """
    o = plan.orig
    canonical = o.canonical
    left = 0
    for c in range(canonical):
        if not touched[c]:
            left += 1
    for batch in range(plan.batches):
        if not left:
            return
        _fill_batch(plan, node, rank, worker, batch, buffer, buffer[:0])
        for i in range(plan.batch):
            position = buffer[i]
            if position >= 0:
                c = ((position + 1) * canonical - 1) // o.num_samples
                if not touched[c]:
                    touched[c] = True
                    left -= 1


@jit
def _fill_devices(plan: PartitionPlan, out: np.ndarray, ids: np.ndarray, start: int, stop: int) -> None:
    # Devices (node, rank) number start to stop - 1. Batch-major within a rank: the workers' batches are
    # consecutive in the rank's list, so the reads of ``ids`` stream through memory instead of jumping a
    # batch of every worker apart.
    o = plan.orig
    size = plan.batch
    for device in range(start, stop):
        node, rank = divmod(device, o.ranks)
        first_row = device * o.workers
        for batch in range(plan.batches):
            for worker in range(o.workers):
                row = out[first_row + worker, batch * size : (batch + 1) * size]
                _fill_batch(plan, node, rank, worker, batch, row, ids)


def _check_coordinates(plan: PartitionPlan, node: int, rank_of_node: int, worker_of_rank: int) -> None:
    for name, value, count, count_name in (
        ("node", node, plan.nodes, "num_physical_nodes"),
        ("rank_of_node", rank_of_node, plan.orig.ranks, "ranks_per_node"),
        ("worker_of_rank", worker_of_rank, plan.orig.workers, "workers_per_rank"),
    ):
        if not 0 <= value < count:
            raise ShuffleError(
                f"{name}={value} is outside the world: {count_name} is {count}, so it must be in [0, {count})"
            )


def partition_slice(
    plan: PartitionPlan, node: int, rank_of_node: int, worker_of_rank: int
) -> NDArray[np.int64]:
    """One worker's positions under a validated plan: ``plan.batches * batch_size``, ``-1`` = padding."""
    _check_coordinates(plan, node, rank_of_node, worker_of_rank)
    return partition_batches(plan, node, rank_of_node, worker_of_rank, 0, plan.batches)


def partition_batches(
    plan: PartitionPlan, node: int, rank_of_node: int, worker_of_rank: int, first: int, stop: int
) -> NDArray[np.int64]:
    """Batches ``first`` to ``stop - 1`` of one worker's positions (coordinates already checked)."""
    out = np.empty((stop - first) * plan.batch, np.int64)
    _fill_worker(plan, node, rank_of_node, worker_of_rank, first, stop, out, _NO_IDS)
    return out


def touched_nodes(
    plan: PartitionPlan, node: int, rank_of_node: int, worker_of_rank: int
) -> NDArray[np.bool_]:
    """Which canonical nodes hold one of the worker's positions: O(its samples) time, O(batch) memory."""
    touched = np.zeros(plan.orig.canonical, np.bool_)
    _mark_rows(plan, node, rank_of_node, worker_of_rank, touched, np.empty(plan.batch, np.int64))
    return touched


def get_partition_slice(
    algo: str,
    num_samples: int,
    num_canonical_nodes: int,
    num_physical_nodes: int,
    ranks_per_node: int,
    workers_per_rank: int,
    batch_size: int,
    node: int,
    rank_of_node: int,
    worker_of_rank: int,
    drop_first: int = 0,
    initial_physical_nodes: int | None = None,
) -> NDArray[np.int64]:
    """One worker's part of ``get_partitions(...)[node, rank_of_node, worker_of_rank].ravel()``, alone.

    Time and memory are O(samples of this worker); the epoch is never materialised.

    Args:
        algo: ``"orig"`` or ``"relaxed"``.
        num_samples: Positions in the epoch.
        num_canonical_nodes: Canonical nodes the position space is laid out for.
        num_physical_nodes: Nodes of this run.
        ranks_per_node: Ranks (devices) per node.
        workers_per_rank: DataLoader workers per rank (1 when ``num_workers=0``).
        batch_size: Per-device batch size.
        node: This worker's node, in ``[0, num_physical_nodes)``.
        rank_of_node: This worker's rank within its node.
        worker_of_rank: This worker's index within its rank.
        drop_first: Samples of the epoch already consumed (``sample_in_epoch``), any value.
        initial_physical_nodes: ``relaxed`` only: node count of the run that started the epoch.

    Returns:
        Positions in the order the DataLoader yields them, whole batches, ``-1`` for padding.
    """
    plan = plan_partition(
        algo,
        num_samples,
        num_canonical_nodes,
        num_physical_nodes,
        ranks_per_node,
        workers_per_rank,
        batch_size,
        drop_first,
        initial_physical_nodes,
    )
    return partition_slice(plan, node, rank_of_node, worker_of_rank)


def partition_all(plan: PartitionPlan, ids: NDArray[np.int64] | None = None) -> NDArray[np.int64]:
    """Every worker's positions, or ``ids[position]`` when ``ids`` is given (-1 stays -1).

    Shape: (nodes, ranks per node, workers per rank, batches per worker, batch size).
    """
    o = plan.orig
    out = empty_int64((plan.nodes * o.ranks * o.workers, plan.batches * plan.batch))
    source = _NO_IDS if ids is None else ids
    in_threads(plan.nodes * o.ranks, lambda start, stop: _fill_devices(plan, out, source, start, stop))
    return out.reshape(plan.nodes, o.ranks, o.workers, plan.batches, plan.batch)


def get_partitions(
    algo: str,
    num_samples: int,
    num_canonical_nodes: int,
    num_physical_nodes: int,
    ranks_per_node: int,
    workers_per_rank: int,
    batch_size: int,
    drop_first: int = 0,
    initial_physical_nodes: int | None = None,
) -> NDArray[np.int64]:
    """Partition an epoch's positions over nodes, ranks and workers, as mosaicml-streaming's get_partitions.

    Args:
        algo: ``"orig"`` (canonical and physical node counts divide one another) or ``"relaxed"`` (also
            resumes on any node count whose devices split the first run's global batch).
        num_samples: Positions in the epoch.
        num_canonical_nodes: Canonical nodes the position space is laid out for.
        num_physical_nodes: Nodes of this run.
        ranks_per_node: Ranks (devices) per node.
        workers_per_rank: DataLoader workers per rank (1 when ``num_workers=0``).
        batch_size: Per-device batch size.
        drop_first: Samples of the epoch already consumed (``sample_in_epoch``); not rounded.
        initial_physical_nodes: ``relaxed`` only: node count of the run that started the epoch.

    Returns:
        int64 array of shape (nodes, ranks per node, workers per rank, batches per worker, batch size);
        ``-1`` pads each rank to whole batches.

    Raises:
        ShuffleError: see ``plan_partition``.
    """
    plan = plan_partition(
        algo,
        num_samples,
        num_canonical_nodes,
        num_physical_nodes,
        ranks_per_node,
        workers_per_rank,
        batch_size,
        drop_first,
        initial_physical_nodes,
    )
    return partition_all(plan)
