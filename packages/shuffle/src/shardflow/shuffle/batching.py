"""Batching methods: how an epoch's samples are grouped into global and device batches.

``random`` is the pipeline of ``order`` (one shuffle of every stream together, partitioned over the world).
The other three follow mosaicml-streaming's batching methods of the same names; each stream is resampled
as for ``random`` (same draws), then shuffled on its own over the canonical nodes (its own seed, a shuffle
block of ``shuffle_block_size`` times its share of the epoch, at least 1) and read in canonical order:
column by column over the canonical nodes' rows, a short row repeating its last sample, exactly as the
partition reads one node of batch size 1. Call that list the stream's *sequence*; it depends on the seed,
the epoch and the canonical nodes, never on the world. Then, with ``G`` the global batch size
(``batch_size`` x nodes x ranks per node):

* ``stratified``: stream ``k`` gets ``round(G * choose_k / epoch_size)`` samples of every global batch
  (largest remainders, ties to the lower stream); global batch ``s`` is part ``s`` of stream 0's sequence,
  then of stream 1's, ...; there are as many as the scarcest stream allows (the rest of the others is
  dropped). Device ``d`` (``node * ranks_per_node + rank``) takes the ``d``-th ``batch_size`` slice, as in
  the reference, so a device batch may hold one stream only.
* ``per_stream``: each stream's sequence is cut into global batches (a partial last one is dropped); the
  streams' batches are interleaved in a seeded random order, each stream's in sequence order. Within a
  global batch the samples are dealt as the partition deals a stream (element ``(i * ranks + r) * nodes
  + p`` to node ``p``, rank ``r``, index ``i``), so a node reads its own canonical nodes' samples.
* ``device_per_stream``: needs the canonical nodes to be a multiple of the nodes; node ``p`` owns
  canonical nodes ``[p * C / N, (p + 1) * C / N)``, and each stream's sequence restricted to them is cut
  into device batches (a partial last one is dropped). Each node's device batches are interleaved in a
  seeded random order of its own; its ranks take them in turn (global batch ``s`` gives rank ``r`` of
  node ``p`` the node's device batch ``s * ranks + r``); the last ``< ranks`` device batches of a node
  that its ranks cannot share are dropped. Every node has the same count, so no global batch is partial.

The random orders of batches change every epoch when shuffling with ``sampling_method="balanced"``, else
they are the same every epoch (as the reference). Resumption drops ``sample_in_epoch // G`` whole global
batches: a ``sample_in_epoch`` off a global batch boundary is rounded down (the reference does the same),
and the partly consumed batch is read again. The global batches left are dealt round-robin to the
DataLoader workers (batch ``g`` to worker ``g % workers``), and whole global batches of ``-1`` pad the
epoch to a multiple of the workers, so every rank yields the same number of real samples.

Unlike ``random``, these build the whole epoch in every process that asks: time and memory O(epoch).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from shardflow.shuffle._checks import is_integer
from shardflow.shuffle._kernels import UnitMap, materialize_all
from shardflow.shuffle._random import (
    FIXED_EPOCH,
    device_batch_order_key,
    global_batch_order_key,
    shuffle_in_place,
    stream_shuffle_seed,
)
from shardflow.shuffle.errors import ShuffleError
from shardflow.shuffle.partition import partition_all, plan_partition
from shardflow.shuffle.sampling import EpochUnits
from shardflow.shuffle.shuffle import make_shuffler

__all__ = ["BATCHING_METHODS", "BatchingSetup", "global_batch_table", "resume", "deal_epoch", "deal_worker"]

logger = logging.getLogger(__name__)

BATCHING_METHODS = ("random", "stratified", "per_stream", "device_per_stream")
_warned: set[str] = set()  # every worker of every epoch would log the same drop: once per process


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


class BatchingSetup(NamedTuple):
    """What the per-stream methods need of a ``SampleOrder`` (validated there) and of the world."""

    method: str
    stream_starts: NDArray[np.int64]  # first sample id of each stream, then the total
    num_canonical_nodes: int
    shuffle_algo: str | None  # None: no shuffle
    seed: int
    block_size: int
    vary_order: bool  # the batches' random order changes with the epoch
    batch_size: int
    num_physical_nodes: int
    ranks_per_node: int


def _stream_sequences(
    setup: BatchingSetup, units: EpochUnits, epoch: int
) -> tuple[list[NDArray[np.int64]], list[int]]:
    """Each stream's ids in canonical order (see the module docstring), and its samples drawn."""
    base = units.ids.base
    # Units are listed shard by shard and ``base`` is each unit's shard offset: a stream's units are a run.
    unit_bounds = np.searchsorted(base, setup.stream_starts[:-1], side="left").tolist() + [base.shape[0]]
    epoch_size = units.epoch_size
    sequences = []
    counts = []
    for stream in range(setup.stream_starts.shape[0] - 1):
        first, stop = unit_bounds[stream], unit_bounds[stream + 1]
        sizes = units.sizes[first:stop]
        count = int(sizes.sum())
        if count < 1:
            raise ShuffleError(
                f"stream {stream} draws no samples per epoch (choose_per_stream gives it 0): with "
                f"batching_method={setup.method!r} every stream must fill its batches; leave the stream out "
                f"or give it a positive weight"
            )
        if setup.shuffle_algo is not None and count < setup.num_canonical_nodes:
            raise ShuffleError(
                f"stream {stream} draws {count} samples per epoch, fewer than num_canonical_nodes="
                f"{setup.num_canonical_nodes}: with batching_method={setup.method!r} each stream is shuffled "
                f"over the canonical nodes on its own; lower num_canonical_nodes or draw more of the stream"
            )
        ids = UnitMap(base[first:stop], units.ids.table_start[first:stop], units.ids.table, 0)
        shuffler = make_shuffler(
            setup.shuffle_algo,
            sizes,
            setup.num_canonical_nodes,
            stream_shuffle_seed(setup.seed, stream),
            epoch,
            max(1, setup.block_size * count // epoch_size),
            None,
            ids,
        )
        plan = plan_partition("orig", count, setup.num_canonical_nodes, 1, 1, 1, 1)
        sequences.append(partition_all(plan, materialize_all(shuffler, ids)).reshape(-1))
        counts.append(count)
    return sequences, counts


def _portions(counts: list[int], global_batch: int) -> list[int]:
    """Each stream's samples per global batch: proportional to ``counts``, largest remainders first."""
    total = sum(counts)
    portions = [count * global_batch // total for count in counts]
    remainders = [count * global_batch % total for count in counts]
    by_remainder = sorted(range(len(counts)), key=lambda k: (-remainders[k], k))
    for stream in by_remainder[: global_batch - sum(portions)]:
        portions[stream] += 1
    return portions


def _warn_dropped(method: str, dropped: list[int], unit: str) -> None:
    streams = [(k, n) for k, n in enumerate(dropped) if n]
    if streams:
        _warn_once(
            f"batching_method={method!r} drops samples that do not fill a whole {unit}: "
            + ", ".join(f"{n} of stream {k}" for k, n in streams)
        )


def _stratified(
    setup: BatchingSetup, sequences: list[NDArray[np.int64]], counts: list[int]
) -> NDArray[np.int64]:
    global_batch = setup.batch_size * setup.num_physical_nodes * setup.ranks_per_node
    portions = _portions(counts, global_batch)
    lengths = [int(sequence.shape[0]) for sequence in sequences]
    for stream, (portion, count) in enumerate(zip(portions, counts, strict=True)):
        if portion < 1 or lengths[stream] < portion:
            raise ShuffleError(
                f"stream {stream} cannot fill its share of a global batch: its {count} samples per epoch "
                f"get {portion} of every global batch of {global_batch} (batch_size x nodes x ranks); with "
                f"batching_method='stratified' raise the stream's weight or the global batch size (if its "
                f"share is 0), or draw more of the stream"
            )
    batches = min(length // portion for length, portion in zip(lengths, portions, strict=True))
    _warn_dropped(
        "stratified",
        [length - batches * portion for length, portion in zip(lengths, portions, strict=True)],
        "global batch",
    )
    parts = [
        sequence[: batches * portion].reshape(batches, portion)
        for sequence, portion in zip(sequences, portions, strict=True)
    ]
    return np.concatenate(parts, axis=1)


def _interleave(counts: list[int], key: np.uint64) -> NDArray[np.int64]:
    """Indices into the streams' batches stacked in stream order, in a random order of streams.

    Each stream's batches keep their order; which stream comes next is a Fisher-Yates shuffle of the
    streams' labels (each label as often as the stream has batches), as the reference draws it.
    """
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    shuffle_in_place(labels, key)
    index = np.empty_like(labels)
    index[np.argsort(labels, kind="stable")] = np.arange(labels.shape[0], dtype=np.int64)
    return index


def _per_stream(
    setup: BatchingSetup, sequences: list[NDArray[np.int64]], drawn: list[int], epoch: int
) -> NDArray[np.int64]:
    global_batch = setup.batch_size * setup.num_physical_nodes * setup.ranks_per_node
    counts = []
    for stream, sequence in enumerate(sequences):
        batches = sequence.shape[0] // global_batch
        if not batches:
            raise ShuffleError(
                f"stream {stream} has {drawn[stream]} samples per epoch, less than one global batch "
                f"of {global_batch} (batch_size x nodes x ranks): with batching_method='per_stream' every "
                f"global batch comes from one stream; draw more of the stream, lower the global batch size, "
                f"or leave the stream out"
            )
        counts.append(batches)
    _warn_dropped(
        "per_stream",
        [int(s.shape[0]) - n * global_batch for s, n in zip(sequences, counts, strict=True)],
        "global batch",
    )
    stacked = np.concatenate(
        [s[: n * global_batch].reshape(n, global_batch) for s, n in zip(sequences, counts, strict=True)]
    )
    return stacked[_interleave(counts, global_batch_order_key(setup.seed, epoch))]


def _device_per_stream(
    setup: BatchingSetup, sequences: list[NDArray[np.int64]], drawn: list[int], epoch: int
) -> NDArray[np.int64]:
    nodes, ranks, batch = setup.num_physical_nodes, setup.ranks_per_node, setup.batch_size
    canonical = setup.num_canonical_nodes
    if canonical % nodes:
        raise ShuffleError(
            f"num_canonical_nodes={canonical} is not a multiple of num_physical_nodes={nodes}: with "
            f"batching_method='device_per_stream' each node reads the samples of its own canonical nodes; "
            f"pick num_canonical_nodes as a multiple of the node count"
        )
    per_node = canonical // nodes
    counts = []  # device batches of each stream on every node (the same on each: rows are equal)
    for stream, sequence in enumerate(sequences):
        node_samples = sequence.shape[0] // nodes
        if node_samples < batch:
            raise ShuffleError(
                f"stream {stream} has {drawn[stream]} samples per epoch, {node_samples} per node over "
                f"{nodes} nodes: less than one device batch (batch_size={batch}); with batching_method="
                f"'device_per_stream' every device batch comes from one stream; draw more of the stream, "
                f"lower batch_size, or leave the stream out"
            )
        counts.append(node_samples // batch)
    _warn_dropped(
        "device_per_stream",
        [int(s.shape[0]) - nodes * n * batch for s, n in zip(sequences, counts, strict=True)],
        "device batch",
    )
    node_batches = sum(counts)
    steps = node_batches // ranks
    if node_batches % ranks:
        _warn_once(
            f"batching_method='device_per_stream' drops the last {node_batches % ranks} device batches of "
            f"each node: its {ranks} ranks cannot share them"
        )
    out = np.empty((nodes, steps * ranks, batch), np.int64)
    for node in range(nodes):
        stacked = np.concatenate(
            [
                # The node's canonical rows, read column by column: element q of a sequence is on row q % C.
                s.reshape(-1, canonical)[:, node * per_node : (node + 1) * per_node]
                .reshape(-1)[: n * batch]
                .reshape(n, batch)
                for s, n in zip(sequences, counts, strict=True)
            ]
        )
        order = _interleave(counts, device_batch_order_key(setup.seed, node, epoch))
        out[node] = stacked[order[: steps * ranks]]
    # Global batch s: rank r of node p takes the node's device batch s * ranks + r.
    return out.reshape(nodes, steps, ranks, batch).transpose(1, 0, 2, 3).reshape(steps, -1)


def global_batch_table(setup: BatchingSetup, units: EpochUnits, epoch: int) -> NDArray[np.int64]:
    """The epoch's global batches, shape (batches, global batch size), before resumption.

    Each row lists its samples in the order they are dealt (``deal_epoch``): for ``stratified`` and
    ``device_per_stream`` device ``d`` takes the ``d``-th slice of ``batch_size``, for ``per_stream``
    the partition's interleaving.
    """
    sequences, drawn = _stream_sequences(setup, units, epoch)
    order_epoch = epoch if setup.vary_order else FIXED_EPOCH
    if setup.method == "stratified":
        return _stratified(setup, sequences, drawn)
    if setup.method == "per_stream":
        return _per_stream(setup, sequences, drawn, order_epoch)
    return _device_per_stream(setup, sequences, drawn, order_epoch)


def resume(table: NDArray[np.int64], sample_in_epoch: int, epoch_size: int, method: str) -> NDArray[np.int64]:
    """The global batches left after ``sample_in_epoch`` samples, rounded down to whole global batches."""
    global_batch = table.shape[1]
    limit = epoch_size + global_batch
    if not is_integer(sample_in_epoch) or not 0 <= sample_in_epoch <= limit:
        raise ShuffleError(
            f"sample_in_epoch={sample_in_epoch!r} is outside the epoch: it must be between 0 and {limit} "
            f"({epoch_size} samples, global batch {global_batch}); is the checkpoint from another dataset or "
            f"epoch size?"
        )
    if sample_in_epoch % global_batch:
        _warn_once(
            f"batching_method={method!r} resumes on whole global batches: sample_in_epoch="
            f"{sample_in_epoch} is not a multiple of the global batch size {global_batch}, so the epoch "
            f"resumes at sample "
            f"{sample_in_epoch // global_batch * global_batch} and the partly read batch is read again"
        )
    return table[int(sample_in_epoch) // global_batch :]


def _padded(table: NDArray[np.int64], workers: int) -> NDArray[np.int64]:
    """Whole global batches of -1 so that every worker gets as many."""
    missing = (-table.shape[0]) % workers
    if not missing:
        return table
    return np.concatenate([table, np.full((missing, table.shape[1]), -1, np.int64)])


def deal_epoch(
    table: NDArray[np.int64], method: str, nodes: int, ranks: int, workers: int, batch: int
) -> NDArray[np.int64]:
    """Global batches to (nodes, ranks, workers, batches per worker, batch size); ``g`` to worker ``g % W``.

    Whole global batches of ``-1`` pad the epoch to a multiple of the workers.
    """
    table = _padded(table, workers)
    steps = table.shape[0] // workers
    if method == "per_stream":
        dealt = table.reshape(steps, workers, batch, ranks, nodes).transpose(4, 3, 1, 0, 2)
    else:
        dealt = table.reshape(steps, workers, nodes, ranks, batch).transpose(2, 3, 1, 0, 4)
    return np.ascontiguousarray(dealt)


def deal_worker(
    table: NDArray[np.int64],
    method: str,
    nodes: int,
    ranks: int,
    workers: int,
    batch: int,
    node: int,
    rank: int,
    worker: int,
) -> NDArray[np.int64]:
    """One worker's part, flattened: ``deal_epoch(...)[node, rank, worker].ravel()``."""
    rows = _padded(table, workers)[worker::workers]
    if method == "per_stream":
        part = rows.reshape(rows.shape[0], batch, ranks, nodes)[:, :, rank, node]
    else:
        device = node * ranks + rank
        part = rows[:, device * batch : (device + 1) * batch]
    return np.ascontiguousarray(part).reshape(-1)
