"""Batching methods: how an epoch's samples are grouped into global and device batches.

``random`` is the pipeline of ``order`` (one shuffle of every stream together, partitioned over the world).
The other three reproduce mosaicml-streaming 0.13's batching methods of the same names value for value.
Each stream ``k`` is handled alone first:

* resampled from a generator of its own (``epoch_units(..., stream=k)``, as the reference's
  ``resample_streams(epoch, k)``);
* partitioned as ``get_partitions(partition_algo, its samples, num_canonical_nodes, nodes', ranks,
  workers, batch', 0, initial_physical_nodes)`` with (nodes', batch') = (1, 1) for ``stratified``, the
  world's (nodes, batch_size) for ``per_stream`` and (``num_canonical_nodes``, 1) for
  ``device_per_stream``;
* when shuffling, shuffled with the run's seed over the canonical nodes, with a block of
  ``int(shuffle_block_size * proportion_k)``;
* and read in traversal order (batches, workers, nodes, ranks, batch), ``-1`` padding included.

Then, with ``G`` the global batch size (``batch_size`` x nodes x ranks per node):

* ``stratified``: stream ``k`` gets ``int(proportion_k * G)`` samples of every global batch, and the
  missing ones go one each to the streams with the largest ``G * proportion_k - portion_k``, taken from
  the end of numpy's ``argsort`` of those leftovers (so ties go to the higher stream with up to 3 streams;
  with more, numpy's unstable sort decides, as in the reference). A stream's sequence is cut into rows of
  its portion (a partial last row padded with ``-1``); the epoch has as many global batches as the stream
  with the fewest rows free of ``-1`` has such rows, and takes each stream's first rows (as the reference,
  a row holding partition padding may be among them). Global batch ``s`` is stream 0's row ``s``, then
  stream 1's, ...
* ``per_stream``: each stream's sequence is cut into global batches; it keeps as many of its first ones
  as it has batches free of ``-1``. ``default_rng(seed + epoch)`` (``seed`` when not shuffling with
  ``sampling_method="balanced"``) shuffles the streams' labels, one per batch; the epoch takes the streams'
  batches in that order of labels, each stream's in sequence order.
* ``device_per_stream``: needs ``num_canonical_nodes`` a multiple of the nodes. Node ``p`` takes canonical
  nodes ``[p * C / N, (p + 1) * C / N)``: each stream's traversal of them is cut into device batches
  (always padded with ``-1`` to one more row when it divides evenly) and keeps as many first ones as it has
  whole ones. One generator (seeded as for ``per_stream``) shuffles each node's labels in node order; each
  node's batches are padded with ``-1`` batches to the same count, a multiple of ``N * ranks`` (always at
  least one padding batch, as the reference), and global batches take device batches round-robin over the
  nodes (device batch ``j`` of a global batch is node ``j % N``'s batch ``s * ranks + j // N``).

Resumption drops ``sample_in_epoch // G`` whole global batches (a ``sample_in_epoch`` off a global batch
boundary is rounded down, as the reference, and the partly consumed batch is read again). The global
batches left are dealt round-robin to the DataLoader workers (batch ``g`` to worker ``g % workers``), and
whole global batches of ``-1`` pad the epoch to a multiple of the workers. Device ``d`` (``node *
ranks_per_node + rank``) takes the ``d``-th ``batch_size`` slice of a global batch.

Unlike ``random``, these build the whole epoch in every process that asks: time and memory O(epoch).
"""

from __future__ import annotations

import logging
import warnings
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from shardflow.shuffle._checks import is_integer
from shardflow.shuffle._kernels import materialize_all
from shardflow.shuffle.errors import ShuffleError
from shardflow.shuffle.partition import partition_all, plan_partition
from shardflow.shuffle.sampling import EpochUnits
from shardflow.shuffle.shuffle import make_shuffler

__all__ = ["BATCHING_METHODS", "BatchingSetup", "global_batch_table", "resume", "deal_epoch", "deal_worker"]

logger = logging.getLogger(__name__)

BATCHING_METHODS = ("random", "stratified", "per_stream", "device_per_stream")
_BLOCK_ALGOS = ("py1br", "py1e")  # the reference's algorithms that use the block size
_warned: set[str] = set()  # every worker of every epoch would log the same drop: once per process


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


class BatchingSetup(NamedTuple):
    """What the per-stream methods need of a ``SampleOrder`` (validated there) and of the world."""

    method: str
    proportions: tuple[float, ...]  # each stream's resolved proportion (the reference's Stream.proportion)
    num_canonical_nodes: int
    shuffle_algo: str | None  # None: no shuffle
    seed: int
    block_size: int
    vary_order: bool  # the reference's epoch_seed_change: the batches' order changes with the epoch
    partition_algo: str
    initial_physical_nodes: int | None
    batch_size: int
    num_physical_nodes: int
    ranks_per_node: int
    workers_per_rank: int


def _traversals(
    setup: BatchingSetup, streams: list[EpochUnits], epoch: int, nodes: int, batch: int
) -> list[NDArray[np.int64]]:
    """Each stream's partition (nodes', ranks, workers, batches, batch') of its own shuffle."""
    parts = []
    for stream, (units, proportion) in enumerate(zip(streams, setup.proportions, strict=True)):
        count = units.epoch_size
        if count < 1:
            raise ShuffleError(
                f"stream {stream} draws no samples per epoch (choose_per_stream gives it 0): with "
                f"batching_method={setup.method!r} every stream must fill its batches; leave the stream out "
                f"or give it a positive weight"
            )
        block = int(setup.block_size * proportion)
        if setup.shuffle_algo is not None and block < 1:
            if setup.shuffle_algo in _BLOCK_ALGOS or setup.method == "device_per_stream":
                raise ShuffleError(
                    f"stream {stream} gets a shuffle block of int(shuffle_block_size x proportion) = "
                    f"int({setup.block_size} x {proportion}) = 0 samples: with batching_method="
                    f"{setup.method!r} raise shuffle_block_size or the stream's proportion"
                )
            block = 1  # unused by naive, py1s and py2s
        try:
            plan = plan_partition(
                setup.partition_algo,
                count,
                setup.num_canonical_nodes,
                nodes,
                setup.ranks_per_node,
                setup.workers_per_rank,
                batch,
                0,
                setup.initial_physical_nodes,
            )
            shuffler = make_shuffler(
                setup.shuffle_algo,
                units.sizes,
                setup.num_canonical_nodes,
                setup.seed,
                epoch,
                block,
                None,
                units.ids,
            )
        except ShuffleError as error:
            raise ShuffleError(
                f"stream {stream} ({count} samples this epoch) cannot be ordered alone, as batching_method="
                f"{setup.method!r} does: {error}"
            ) from error
        parts.append(partition_all(plan, materialize_all(shuffler, units.ids)))
    return parts


def _in_order(partition: NDArray[np.int64]) -> NDArray[np.int64]:
    """A partition's ids in traversal order: batches, workers, nodes, ranks, batch."""
    return partition.transpose(3, 2, 0, 1, 4).reshape(-1)


def _rows(sequence: NDArray[np.int64], width: int, pad: int) -> tuple[NDArray[np.int64], int]:
    """``sequence`` and ``pad`` -1s in rows of ``width``, and how many rows are free of -1."""
    rows = np.concatenate([sequence, np.full(pad, -1, np.int64)]).reshape(-1, width)
    return rows, int(np.count_nonzero(rows.min(axis=1, initial=0) >= 0)) if rows.shape[0] else 0


def _warn_dropped(method: str, stream: int, rows: int, kept: int, unit: str) -> None:
    if kept != rows:
        _warn_once(
            f"batching_method={method!r} drops {rows - kept} {unit}(s) of stream {stream} that hold too few "
            f"of its samples"
        )


def _portions(proportions: tuple[float, ...], global_batch: int) -> NDArray[np.int64]:
    """Each stream's samples per global batch, as the reference rounds them."""
    shares = global_batch * np.array(proportions, np.float64)
    portions = np.array([int(p * global_batch) for p in proportions], np.int64)
    missing = global_batch - int(portions.sum())
    if missing:
        # Largest leftovers first, read from the end of numpy's (unstable) argsort as the reference does.
        portions[np.argsort(shares - portions)[::-1][:missing]] += 1
    return portions


def _stratified(setup: BatchingSetup, streams: list[EpochUnits], epoch: int) -> NDArray[np.int64]:
    global_batch = setup.batch_size * setup.num_physical_nodes * setup.ranks_per_node
    portions = _portions(setup.proportions, global_batch)
    for stream, portion in enumerate(portions.tolist()):
        if portion < 1:
            raise ShuffleError(
                f"stream {stream} gets {portion} samples of every global batch of {global_batch} "
                f"(batch_size x nodes x ranks, proportion {setup.proportions[stream]}): with "
                f"batching_method='stratified' raise the global batch size or the stream's weight"
            )
    parts = []
    for stream, partition in enumerate(_traversals(setup, streams, epoch, 1, 1)):
        sequence = _in_order(partition)
        rows, whole = _rows(sequence, int(portions[stream]), -sequence.shape[0] % int(portions[stream]))
        _warn_dropped("stratified", stream, rows.shape[0], whole, "batch part")
        parts.append((rows, whole))
    batches = min(whole for _, whole in parts)
    return np.concatenate([rows[:batches] for rows, _ in parts], axis=1)


def _interleave(rng: np.random.Generator, counts: list[int]) -> NDArray[np.int64]:
    """Indices into the streams' batches stacked in stream order, in the order of shuffled stream labels.

    ``rng`` shuffles the labels (stream ``k`` as often as it has batches); the ``t``-th label ``k`` takes
    stream ``k``'s ``t``-th batch.
    """
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    rng.shuffle(labels)
    index = np.empty_like(labels)
    index[np.argsort(labels, kind="stable")] = np.arange(labels.shape[0], dtype=np.int64)
    return index


def _batch_rng(setup: BatchingSetup, epoch: int) -> np.random.Generator:
    return np.random.default_rng(setup.seed + epoch if setup.vary_order else setup.seed)


def _per_stream(setup: BatchingSetup, streams: list[EpochUnits], epoch: int) -> NDArray[np.int64]:
    global_batch = setup.batch_size * setup.num_physical_nodes * setup.ranks_per_node
    kept, counts = [], []
    partitions = _traversals(setup, streams, epoch, setup.num_physical_nodes, setup.batch_size)
    for stream, partition in enumerate(partitions):
        rows, whole = _rows(_in_order(partition), global_batch, 0)  # partitions hold whole global batches
        if not whole:
            raise ShuffleError(
                f"stream {stream} ({streams[stream].epoch_size} samples this epoch) does not fill one global "
                f"batch of {global_batch} (batch_size x nodes x ranks): with batching_method='per_stream' "
                f"every global batch comes from one stream; draw more of the stream, lower the global batch "
                f"size, or leave the stream out"
            )
        _warn_dropped("per_stream", stream, rows.shape[0], whole, "global batch")
        kept.append(rows[:whole])
        counts.append(whole)
    return np.concatenate(kept)[_interleave(_batch_rng(setup, epoch), counts)]


def _device_per_stream(setup: BatchingSetup, streams: list[EpochUnits], epoch: int) -> NDArray[np.int64]:
    nodes, ranks, batch = setup.num_physical_nodes, setup.ranks_per_node, setup.batch_size
    canonical = setup.num_canonical_nodes
    if canonical % nodes:
        raise ShuffleError(
            f"num_canonical_nodes={canonical} is not a multiple of num_physical_nodes={nodes}: with "
            f"batching_method='device_per_stream' each node reads the samples of its own canonical nodes; "
            f"pick num_canonical_nodes as a multiple of the node count"
        )
    per_node = canonical // nodes
    partitions = _traversals(setup, streams, epoch, canonical, 1)
    node_batches, node_counts = [], []
    for node in range(nodes):
        kept, counts = [], []
        for stream, partition in enumerate(partitions):
            sequence = _in_order(partition[node * per_node : (node + 1) * per_node])
            # The reference always pads, a whole row of -1 when the sequence fills its last batch.
            rows, whole = _rows(sequence, batch, batch - sequence.shape[0] % batch)
            if not whole:
                raise ShuffleError(
                    f"stream {stream} ({streams[stream].epoch_size} samples this epoch) has "
                    f"{sequence.shape[0]} slots on node {node}'s canonical nodes: less than one device "
                    f"batch (batch_size={batch}); with batching_method='device_per_stream' every device "
                    f"batch comes from one stream; draw more of the stream, lower batch_size, or leave it out"
                )
            _warn_dropped("device_per_stream", stream, rows.shape[0], whole, "device batch")
            kept.append(rows[:whole])
            counts.append(whole)
        node_batches.append(np.concatenate(kept))
        node_counts.append(counts)
    devices = nodes * ranks
    longest = max(b.shape[0] for b in node_batches)
    longest += devices - longest % devices  # as the reference: at least one more, a multiple of the devices
    rng = _batch_rng(setup, epoch)
    padded = np.full((longest, nodes, batch), -1, np.int64)
    for node in range(nodes):
        ordered = node_batches[node][_interleave(rng, node_counts[node])]
        padded[: ordered.shape[0], node] = ordered
    return padded.reshape(-1, batch * devices)


def global_batch_table(setup: BatchingSetup, streams: list[EpochUnits], epoch: int) -> NDArray[np.int64]:
    """The epoch's global batches, shape (batches, global batch size), before resumption.

    ``streams``: each stream's units of the epoch, resampled alone (``epoch_units(..., stream=k)``).
    Device ``d`` (``node * ranks_per_node + rank``) takes the ``d``-th ``batch_size`` slice of a row.
    """
    if setup.method == "stratified":
        return _stratified(setup, streams, epoch)
    if setup.method == "per_stream":
        return _per_stream(setup, streams, epoch)
    return _device_per_stream(setup, streams, epoch)


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
    if sample_in_epoch % global_batch:  # a UserWarning, as the reference's (Python shows it once a place)
        warnings.warn(
            f"batching_method={method!r} resumes on whole global batches: sample_in_epoch="
            f"{sample_in_epoch} is not a multiple of the global batch size {global_batch}, so the epoch "
            f"resumes at sample "
            f"{sample_in_epoch // global_batch * global_batch} and the partly read batch is read again",
            UserWarning,
            stacklevel=2,
        )
    return table[int(sample_in_epoch) // global_batch :]


def _padded(table: NDArray[np.int64], workers: int) -> NDArray[np.int64]:
    """Whole global batches of -1 so that every worker gets as many."""
    missing = (-table.shape[0]) % workers
    if not missing:
        return table
    return np.concatenate([table, np.full((missing, table.shape[1]), -1, np.int64)])


def deal_epoch(
    table: NDArray[np.int64], nodes: int, ranks: int, workers: int, batch: int
) -> NDArray[np.int64]:
    """Global batches to (nodes, ranks, workers, batches per worker, batch size); ``g`` to worker ``g % W``.

    Whole global batches of ``-1`` pad the epoch to a multiple of the workers.
    """
    table = _padded(table, workers)
    steps = table.shape[0] // workers
    dealt = table.reshape(steps, workers, nodes, ranks, batch).transpose(2, 3, 1, 0, 4)
    return np.ascontiguousarray(dealt)


def deal_worker(
    table: NDArray[np.int64],
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
    device = node * ranks + rank
    return np.ascontiguousarray(rows[:, device * batch : (device + 1) * batch]).reshape(-1)
