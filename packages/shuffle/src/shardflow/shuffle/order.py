"""The per-worker API: one epoch's sample ids for one DataLoader worker, from sampling, partition and shuffle.

This is what mosaicml-streaming's ``StreamingDataset`` computes in one leader process per node (the
whole epoch as a 5-D array, shared through POSIX shared memory); here every worker computes its own slice.
The pipeline of the reference's "random" batching: resample each stream (``sampling``), lay the epoch's
positions out over the world (``partition``), and look each position up in the epoch's shuffle. The
other batching methods (``stratified``, ``per_stream``, ``device_per_stream``) are in ``batching``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shardflow.shuffle._checks import as_sizes, check_non_negative, check_positive, is_integer
from shardflow.shuffle._kernels import Shuffler, UnitMap, lookup, materialize_all
from shardflow.shuffle.batching import (
    BATCHING_METHODS,
    BatchingSetup,
    deal_epoch,
    deal_worker,
    global_batch_table,
    resume,
)
from shardflow.shuffle.errors import ShuffleError
from shardflow.shuffle.partition import (
    PARTITION_ALGOS,
    PartitionPlan,
    partition_all,
    partition_batches,
    partition_slice,
    plan_partition,
    touched_nodes,
)
from shardflow.shuffle.sampling import SAMPLING_METHODS, EpochUnits, epoch_units
from shardflow.shuffle.shuffle import SHUFFLE_ALGOS, make_shuffler

__all__ = ["WorldShape", "SampleOrder", "default_num_canonical_nodes", "default_shuffle_block_size"]

CHUNK_IDS = 1 << 16  # default ids per chunk of ``worker_sample_id_chunks`` (rounded to whole batches)


def default_num_canonical_nodes(shuffle_algo: str, num_physical_nodes: int) -> int:
    """The reference's default: 64 per node for ``py1s``/``py2s`` (and their fast variants), else one per
    node of the first run."""
    return (
        64 * num_physical_nodes
        if shuffle_algo.removesuffix("_fast") in ("py1s", "py2s")
        else num_physical_nodes
    )


def default_shuffle_block_size(num_canonical_nodes: int) -> int:
    """The reference's default: ``max(4_000_000 // num_canonical_nodes, 1 << 18)``."""
    return max(4_000_000 // num_canonical_nodes, 1 << 18)


@dataclass(frozen=True)
class WorldShape:
    """How many nodes, ranks per node and DataLoader workers per rank read the epoch.

    Attributes:
        num_physical_nodes: Nodes of this run.
        ranks_per_node: Ranks (devices) per node.
        workers_per_rank: DataLoader workers per rank; a DataLoader with ``num_workers=0`` is 1 worker.
    """

    num_physical_nodes: int
    ranks_per_node: int
    workers_per_rank: int

    def __post_init__(self) -> None:
        check_positive("num_physical_nodes", self.num_physical_nodes)
        check_positive("ranks_per_node", self.ranks_per_node)
        if self.workers_per_rank == 0:
            raise ShuffleError(
                "workers_per_rank=0: a DataLoader with num_workers=0 reads in the main process, "
                "which counts as 1 worker per rank"
            )
        check_positive("workers_per_rank", self.workers_per_rank)


@dataclass(frozen=True, eq=False)
class SampleOrder:
    """Everything that fixes the sample order of a run; each epoch's order follows from it and the world.

    Argument names and defaults follow mosaicml-streaming's ``StreamingDataset``.

    Attributes:
        samples_per_shard: Samples in each shard, every stream's shards one after the other; sample ids
            count from the first shard's first sample.
        num_canonical_nodes: Canonical nodes (see ``default_num_canonical_nodes``).
        batch_size: Per-device batch size.
        shards_per_stream: Shards of each stream, in order (default: one stream of every shard).
        choose_per_stream: Samples drawn per epoch from each stream (see ``resolve_stream_weights``);
            default: every sample once.
        shuffle: Whether to shuffle; else positions are read in order.
        shuffle_algo: ``naive``, ``py1s``, ``py2s``, ``py1br`` or ``py1e``.
        shuffle_seed: Seed of every random choice of the run.
        shuffle_block_size: Unit of shuffle of ``py1br``/``py1e``; default
            ``default_shuffle_block_size(num_canonical_nodes)``.
        partition_algo: ``orig`` or ``relaxed``.
        sampling_method: ``balanced`` (partial repeats are redrawn every epoch) or ``fixed``.
        sampling_granularity: Samples drawn from one shard at a time for partial repeats.
        batching_method: How samples are grouped into batches: ``random`` (one shuffle of all streams
            together), ``stratified`` (every global batch holds each stream's share), ``per_stream``
            (every global batch from one stream) or ``device_per_stream`` (every device batch from one
            stream); see ``shardflow.shuffle.batching``. The last three cost O(epoch) time and memory
            per call.
        proportion_per_stream: Each stream's resolved proportion (``resolve_stream_weights(...).proportion``,
            the reference's ``Stream.proportion``), used by ``stratified`` (each stream's share of a global
            batch) and by the per-stream shuffles of the last three methods (block ``int(shuffle_block_size
            x proportion)``); default: ``choose_per_stream`` over its sum, which is the reference's value
            unless the streams were weighted by ``proportion``.
    """

    samples_per_shard: ArrayLike
    num_canonical_nodes: int
    batch_size: int
    shards_per_stream: Sequence[int] | None = None
    choose_per_stream: Sequence[int] | None = None
    shuffle: bool = False
    shuffle_algo: str = "py1e"
    shuffle_seed: int = 9176
    shuffle_block_size: int | None = None
    partition_algo: str = "relaxed"
    sampling_method: str = "balanced"
    sampling_granularity: int = 1
    batching_method: str = "random"
    proportion_per_stream: Sequence[float] | None = None
    _shards: NDArray[np.int64] = field(init=False, repr=False)
    _streams: NDArray[np.int64] = field(init=False, repr=False)
    _choose: NDArray[np.int64] | None = field(init=False, repr=False)
    _proportions: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        shards = as_sizes("samples_per_shard", self.samples_per_shard)
        streams = as_sizes(
            "shards_per_stream",
            [shards.shape[0]] if self.shards_per_stream is None else self.shards_per_stream,
        )
        if int(streams.sum()) != shards.shape[0]:
            raise ShuffleError(
                f"shards_per_stream adds up to {int(streams.sum())} shards but samples_per_shard "
                f"has {shards.shape[0]}: they must describe the same shards"
            )
        starts = np.concatenate([[0], np.cumsum(streams)])
        for stream in range(streams.shape[0]):
            if shards[starts[stream] : starts[stream + 1]].sum() < 1:
                raise ShuffleError(
                    f"stream {stream} has no samples (shards {starts[stream]} to "
                    f"{starts[stream + 1]}): check its index.json and split, or leave it out"
                )
        choose = None
        if self.choose_per_stream is not None:
            choose = as_sizes("choose_per_stream", self.choose_per_stream)
            if choose.shape != streams.shape:
                raise ShuffleError(
                    f"choose_per_stream has {choose.shape[0]} entries for {streams.shape[0]} "
                    f"streams: give one per stream"
                )
            if choose.sum() < 1:
                raise ShuffleError("choose_per_stream draws no samples at all: an epoch needs at least one")
        check_positive("num_canonical_nodes", self.num_canonical_nodes)
        check_positive("batch_size", self.batch_size)
        if self.shuffle_algo not in SHUFFLE_ALGOS:
            raise ShuffleError(
                f"shuffle_algo={self.shuffle_algo!r} is unknown: use one of {', '.join(SHUFFLE_ALGOS)}"
            )
        if self.partition_algo not in PARTITION_ALGOS:
            raise ShuffleError(
                f"partition_algo={self.partition_algo!r} is unknown: use one of {', '.join(PARTITION_ALGOS)}"
            )
        if self.sampling_method not in SAMPLING_METHODS:
            raise ShuffleError(
                f"sampling_method={self.sampling_method!r} is unknown: use one of "
                f"{', '.join(SAMPLING_METHODS)}"
            )
        check_positive("sampling_granularity", self.sampling_granularity)
        if self.batching_method not in BATCHING_METHODS:
            raise ShuffleError(
                f"batching_method={self.batching_method!r} is unknown: use one of "
                f"{', '.join(BATCHING_METHODS)}"
            )
        check_non_negative("shuffle_seed", self.shuffle_seed)
        if self.shuffle_block_size is not None:
            check_positive("shuffle_block_size", self.shuffle_block_size)
        object.__setattr__(self, "_shards", shards)
        object.__setattr__(self, "_streams", streams)
        object.__setattr__(self, "_choose", choose)
        object.__setattr__(self, "_proportions", self._resolved_proportions())

    def _resolved_proportions(self) -> tuple[float, ...]:
        if self.proportion_per_stream is None:
            starts = np.concatenate([[0], np.cumsum(self._streams)[:-1]])
            chosen = np.add.reduceat(self._shards, starts) if self._choose is None else self._choose
            return tuple((chosen / chosen.sum()).tolist())
        given = np.asarray(self.proportion_per_stream, np.float64)
        if given.shape != self._streams.shape or not np.all(np.isfinite(given)) or np.any(given < 0):
            raise ShuffleError(
                f"proportion_per_stream={list(self.proportion_per_stream)!r}: give one finite, "
                f"non-negative proportion per stream ({self._streams.shape[0]}), e.g. "
                f"resolve_stream_weights(...).proportion"
            )
        return tuple(given.tolist())

    @property
    def epoch_size(self) -> int:
        """Samples per epoch (before padding to the world)."""
        return int(self._shards.sum() if self._choose is None else self._choose.sum())

    @property
    def block_size(self) -> int:
        """The shuffle block size in effect."""
        if self.shuffle_block_size is not None:
            return int(self.shuffle_block_size)
        return default_shuffle_block_size(self.num_canonical_nodes)

    def units(self, epoch: int, stream: int | None = None) -> EpochUnits:
        """The epoch's resampled shards: O(shards + repeats), plus O(samples drawn) for partial repeats.

        ``stream``: only that stream's, resampled alone (as the per-stream batching methods do).
        """
        check_non_negative("epoch", epoch)
        balanced = self.sampling_method == "balanced"
        return epoch_units(
            self._shards,
            self._streams,
            self._choose,
            int(self.sampling_granularity),
            int(self.shuffle_seed),
            int(epoch),
            vary_counts=balanced and self.shuffle,
            vary_subsets=balanced,
            stream=stream,
        )

    def plan(
        self, world: WorldShape, sample_in_epoch: int = 0, initial_physical_nodes: int | None = None
    ) -> PartitionPlan:
        """The validated partition of an epoch over ``world`` (see ``partition.plan_partition``)."""
        return plan_partition(
            self.partition_algo,
            self.epoch_size,
            self.num_canonical_nodes,
            world.num_physical_nodes,
            world.ranks_per_node,
            world.workers_per_rank,
            self.batch_size,
            sample_in_epoch,
            initial_physical_nodes,
        )

    def _shuffler(self, units: EpochUnits, epoch: int, touched: NDArray[np.bool_] | None) -> Shuffler:
        return make_shuffler(
            self.shuffle_algo if self.shuffle else None,
            units.sizes,
            self.num_canonical_nodes,
            int(self.shuffle_seed),
            int(epoch),
            self.block_size,
            touched,
            units.ids,
        )

    def worker_sample_ids(
        self,
        epoch: int,
        world: WorldShape,
        node: int,
        rank_of_node: int,
        worker_of_rank: int,
        sample_in_epoch: int = 0,
        initial_physical_nodes: int | None = None,
    ) -> NDArray[np.int64]:
        """The sample ids one worker yields this epoch, in the order the DataLoader yields them.

        Equal to ``epoch_sample_ids(...)[node, rank_of_node, worker_of_rank].ravel()``. With
        ``batching_method="random"`` it is computed alone; time: O(samples of the canonical nodes its
        positions fall in), to build the shuffle chunks that hold them, one at a time. Memory: O(its
        samples + shards + one chunk), a chunk being at most 1.25 ``shuffle_block_size`` (py1br), a
        quarter of it (py1e), a shard (py1s, py2s); plus O(samples per canonical node) for ``naive`` or
        for py1e with a block under 512 (it then tracks samples, not tiles). Nothing is shared with other
        workers or processes. ``worker_sample_id_chunks`` yields the same ids a chunk at a time, in memory
        independent of the epoch's sample count. The other batching methods build the whole epoch and
        keep the worker's part: time and memory O(epoch).

        Args:
            epoch: The epoch.
            world: Nodes, ranks per node and workers per rank of this run.
            node: This worker's node in ``[0, num_physical_nodes)``.
            rank_of_node: Its rank within the node.
            worker_of_rank: Its DataLoader worker index within the rank (0 when ``num_workers=0``).
            sample_in_epoch: Samples of the epoch already consumed by the whole world (resumption). All
                but ``random`` round it down to a multiple of the global batch size (as the reference)
                and read the partly consumed global batch again.
            initial_physical_nodes: Node count of the run that started this epoch, to resume on another
                node count with ``partition_algo="relaxed"`` (``random`` only; the other methods give
                the same global batches to any world with the same global batch size).

        Returns:
            ``batches * batch_size`` sample ids, whole batches, ``-1`` where the epoch is padded; skip
            those. Every rank of the world gets the same number of real ids.

        Raises:
            ShuffleError: an impossible world shape, coordinates outside it, a resume point beyond the
                epoch, or a canonical node without samples; for the other batching methods, a stream
                too small for its part of a batch (named), or (``device_per_stream``) canonical nodes
                that are not a multiple of the nodes.
        """
        if self.batching_method != "random":
            _check_worker(world, node, rank_of_node, worker_of_rank)
            return self._dealt_worker_ids(
                epoch, world, (node, rank_of_node, worker_of_rank), sample_in_epoch, initial_physical_nodes
            )
        units = self.units(epoch)
        plan = self.plan(world, sample_in_epoch, initial_physical_nodes)
        positions = partition_slice(plan, node, rank_of_node, worker_of_rank)
        touched = np.zeros(self.num_canonical_nodes, np.bool_)
        if self.shuffle:
            bounds = (
                np.arange(self.num_canonical_nodes + 1, dtype=np.int64)
                * self.epoch_size
                // self.num_canonical_nodes
            )
            touched[np.searchsorted(bounds, positions[positions >= 0], side="right") - 1] = True
        return lookup(self._shuffler(units, epoch, touched), units.ids, positions)

    def worker_sample_id_chunks(
        self,
        epoch: int,
        world: WorldShape,
        node: int,
        rank_of_node: int,
        worker_of_rank: int,
        sample_in_epoch: int = 0,
        initial_physical_nodes: int | None = None,
        chunk_batches: int | None = None,
    ) -> Iterator[NDArray[np.int64]]:
        """``worker_sample_ids(...)`` in order, a few whole batches at a time, never all at once.

        The chunks, concatenated, are exactly ``worker_sample_ids(...)`` with the same arguments (``-1``
        padding included). Every chunk but the last holds ``chunk_batches`` batches of ``batch_size``
        ids; the last holds the rest (at least one batch); an epoch without batches for this worker
        yields nothing. Arguments are those of ``worker_sample_ids`` and are all checked here, at the
        call, not at the first ``next()``.

        With ``batching_method="random"``, memory is O(chunk + shards + one shuffle chunk) whatever the
        epoch's sample count (plus py1br's block starts and py1e's tile order of the canonical nodes the
        worker reads: about 1 in ``shuffle_block_size / 512`` of their samples; and, as for
        ``worker_sample_ids``, O(samples per canonical node) for ``naive`` or py1e with a block under
        512). Time: a first pass over the worker's positions (no shuffle; py1br and py1e only) finds the
        canonical nodes it reads, then each chunk builds the shuffle chunks that hold its positions. A
        shuffle chunk read by several chunks of ids is built once for each: py1e, py1s and py2s are as
        fast as ``worker_sample_ids`` at the default size, py1br (blocks of about ``shuffle_block_size``)
        about 3x slower when the worker reads a large share of few canonical nodes; larger chunks help.
        The other batching methods build the whole epoch at the call (O(epoch)) and yield views of the
        worker's part.

        Args:
            chunk_batches: Batches per chunk; default ``max(1, 65536 // batch_size)``, about 64k ids.
            (the others): as ``worker_sample_ids``.

        Raises:
            ShuffleError: as ``worker_sample_ids``, or ``chunk_batches`` not a positive integer.
        """
        _check_worker(world, node, rank_of_node, worker_of_rank)
        if chunk_batches is None:
            per_chunk = max(1, CHUNK_IDS // int(self.batch_size))
        elif not is_integer(chunk_batches) or chunk_batches < 1:
            raise ShuffleError(
                f"chunk_batches={chunk_batches!r}: give a positive number of batches per chunk, or None "
                f"for about {CHUNK_IDS} ids per chunk"
            )
        else:
            per_chunk = int(chunk_batches)
        if self.batching_method != "random":
            ids = self._dealt_worker_ids(
                epoch, world, (node, rank_of_node, worker_of_rank), sample_in_epoch, initial_physical_nodes
            )
            return _slices(ids, per_chunk * int(self.batch_size))
        units = self.units(epoch)
        plan = self.plan(world, sample_in_epoch, initial_physical_nodes)
        touched = None
        if self.shuffle and self.shuffle_algo not in ("naive_fast", "py1s_fast", "py2s_fast"):
            touched = touched_nodes(plan, node, rank_of_node, worker_of_rank)  # nodes with tables to build
        shuffler = self._shuffler(units, epoch, touched)
        return _looked_up(shuffler, units.ids, plan, (node, rank_of_node, worker_of_rank), per_chunk)

    def epoch_sample_ids(
        self,
        epoch: int,
        world: WorldShape,
        sample_in_epoch: int = 0,
        initial_physical_nodes: int | None = None,
    ) -> NDArray[np.int64]:
        """Every worker's sample ids for the epoch, as the reference's ``generate_work``.

        Returns:
            int64 array (nodes, ranks per node, workers per rank, batches per worker, batch size), ``-1``
            for padding. Memory O(epoch): prefer ``worker_sample_ids`` in a worker.
        """
        if self.batching_method != "random":
            return deal_epoch(
                self._batches_left(epoch, world, sample_in_epoch, initial_physical_nodes),
                world.num_physical_nodes,
                world.ranks_per_node,
                world.workers_per_rank,
                int(self.batch_size),
            )
        units = self.units(epoch)
        plan = self.plan(world, sample_in_epoch, initial_physical_nodes)
        return partition_all(plan, materialize_all(self._shuffler(units, epoch, None), units.ids))

    def global_batch_ids(
        self,
        epoch: int,
        world: WorldShape,
        sample_in_epoch: int = 0,
        initial_physical_nodes: int | None = None,
    ) -> NDArray[np.int64]:
        """The epoch's global batches in training order, shape (global batches, global batch size).

        Row ``s`` holds what every rank reads at step ``s`` (from ``sample_in_epoch`` on), ranks in order
        (node-major), each rank's ``batch_size`` samples in its order; ``-1`` is padding. Memory O(epoch).
        """
        epoch_ids = self.epoch_sample_ids(epoch, world, sample_in_epoch, initial_physical_nodes)
        global_batch = world.num_physical_nodes * world.ranks_per_node * int(self.batch_size)
        return epoch_ids.transpose(3, 2, 0, 1, 4).reshape(-1, global_batch)

    def _dealt_worker_ids(
        self,
        epoch: int,
        world: WorldShape,
        worker: tuple[int, int, int],
        sample_in_epoch: int,
        initial_physical_nodes: int | None,
    ) -> NDArray[np.int64]:
        """One worker's ids under a per-stream batching method (coordinates already checked)."""
        return deal_worker(
            self._batches_left(epoch, world, sample_in_epoch, initial_physical_nodes),
            world.num_physical_nodes,
            world.ranks_per_node,
            world.workers_per_rank,
            int(self.batch_size),
            *worker,
        )

    def _batches_left(
        self, epoch: int, world: WorldShape, sample_in_epoch: int, initial_physical_nodes: int | None
    ) -> NDArray[np.int64]:
        """The global batches of a per-stream batching method left after ``sample_in_epoch``."""
        streams = [self.units(epoch, stream) for stream in range(self._streams.shape[0])]
        setup = BatchingSetup(
            method=self.batching_method,
            proportions=self._proportions,
            num_canonical_nodes=int(self.num_canonical_nodes),
            shuffle_algo=self.shuffle_algo if self.shuffle else None,
            seed=int(self.shuffle_seed),
            block_size=self.block_size,
            vary_order=self.shuffle and self.sampling_method == "balanced",
            partition_algo=self.partition_algo,
            initial_physical_nodes=initial_physical_nodes,
            batch_size=int(self.batch_size),
            num_physical_nodes=world.num_physical_nodes,
            ranks_per_node=world.ranks_per_node,
            workers_per_rank=world.workers_per_rank,
        )
        table = global_batch_table(setup, streams, int(epoch))
        return resume(table, sample_in_epoch, self.epoch_size, self.batching_method)


def _check_worker(world: WorldShape, node: int, rank_of_node: int, worker_of_rank: int) -> None:
    for name, value, count, count_name in (
        ("node", node, world.num_physical_nodes, "num_physical_nodes"),
        ("rank_of_node", rank_of_node, world.ranks_per_node, "ranks_per_node"),
        ("worker_of_rank", worker_of_rank, world.workers_per_rank, "workers_per_rank"),
    ):
        if not is_integer(value) or not 0 <= value < count:
            raise ShuffleError(
                f"{name}={value!r} is outside the world: {count_name} is {count}, so it must be in "
                f"[0, {count})"
            )


def _slices(ids: NDArray[np.int64], size: int) -> Iterator[NDArray[np.int64]]:
    for begin in range(0, ids.shape[0], size):
        yield ids[begin : begin + size]


def _looked_up(
    shuffler: Shuffler, units: UnitMap, plan: PartitionPlan, worker: tuple[int, int, int], per_chunk: int
) -> Iterator[NDArray[np.int64]]:
    """The ids of a worker's batches, ``per_chunk`` batches at a time: positions, then their ids."""
    for first in range(0, plan.batches, per_chunk):
        positions = partition_batches(plan, *worker, first, min(first + per_chunk, plan.batches))
        yield lookup(shuffler, units, positions)
