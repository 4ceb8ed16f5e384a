"""StreamingDataset: a torch IterableDataset with random access over shards streamed into a local cache."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch.utils.data import IterableDataset, get_worker_info

from shardflow.dataset._bundles import batches_per_bundle, bundle
from shardflow.dataset._epochs import EpochLedger
from shardflow.dataset._iteration import ItemGroups, iter_batches, iter_samples
from shardflow.dataset._units import format_bytes, parse_bytes, parse_count
from shardflow.dataset._wrappers import refuse_resharding
from shardflow.dataset.cache import NodeCache, footprint, read_entries
from shardflow.dataset.errors import DatasetConfigError, StateDictError
from shardflow.dataset.pool import FETCH_THREADS, ShardPool, open_shards_cap
from shardflow.dataset.registry import streams_registry
from shardflow.dataset.stream import Stream
from shardflow.dataset.world import WorkerSlot, World
from shardflow.format import ShardInfo, ShardLocator
from shardflow.shuffle import (
    BATCHING_METHODS,
    SampleOrder,
    WorldShape,
    default_num_canonical_nodes,
    epoch_units,
)

__all__ = ["StreamingDataset", "BATCHING_METHODS"]

logger = logging.getLogger(__name__)

STATE_KEYS = ("epoch", "sample_in_epoch", "num_canonical_nodes", "shuffle_seed", "initial_physical_nodes")


def _torch_worker() -> tuple[WorkerSlot, int] | None:
    """This DataLoader worker process's slot and its iterator's base seed, or None outside one: the one
    place the package asks torch who the worker is."""
    info = get_worker_info()
    if info is None:
        return None
    return WorkerSlot(info.id, info.num_workers), info.seed - info.id


class StreamingDataset(IterableDataset):
    """Samples of shard datasets, streamed just in time into a local cache, in a deterministic order.

    A drop-in for mosaicml-streaming's ``StreamingDataset``: the same keyword arguments, defaults and
    meanings. Iterating yields this rank's and this DataLoader worker's part of the epoch: every worker
    computes its own part from the seed, the epoch and the world (no leader, no shared memory, no
    barrier), so the global order is the same for any number of nodes, ranks and workers. ``ds[i]`` reads
    any sample, downloading its shard first when needed. Subclass it and override ``get_item`` or
    ``__getitem__`` to transform samples; iteration goes through them.

    Args:
        streams: Streams to mix; or give ``remote``/``local``/``split`` for a single stream.
        remote: Where the shards live: a storage URL or a local folder.
        local: The local cache folder (None: one per remote, reused by later runs).
        split: A sub-folder holding the split.
        download_retry: Re-attempts of a failed download.
        download_timeout: Seconds one download attempt may take.
        validate_hash: A hash algorithm to check every shard with, or None.
        keep_zip: Keep compressed shards after decompressing them.
        epoch_size: Samples per epoch over all streams (an int or a string like ``"1.5m"``); default: the
            streams' weights decide, or every sample once.
        predownload: Samples ahead of the current one whose shards are fetched in the background
            (default ``8 * batch_size``, or 64).
        cache_limit: Bytes (an int or a string like ``"10gb"``) that the cache folders may hold, shared by
            every process using them: least-recently-used shards downloaded by shardflow are evicted. Too
            small for the shards in flight is an error that names the smallest workable limit.
        sampling_method: ``balanced`` or ``fixed``.
        sampling_granularity: Samples drawn from one shard at a time for partial repeats.
        partition_algo: ``orig`` or ``relaxed``.
        num_canonical_nodes: Canonical nodes of the order (default: one per physical node, 64 per node for
            ``py1s``/``py2s``).
        batch_size: Per-device batch size; the order is laid out in whole batches of it.
        shuffle: Shuffle the samples.
        shuffle_algo: ``py1e``, ``py1br``, ``py1s``, ``py2s`` or ``naive``.
        shuffle_seed: Seed of every random choice.
        shuffle_block_size: Unit of shuffle of ``py1br``/``py1e``.
        batching_method: ``random``, ``stratified`` (every global batch holds each stream's share),
            ``per_stream`` (every global batch from one stream) or ``device_per_stream`` (every device
            batch from one stream); all but ``random`` need ``batch_size``.
        allow_unsafe_types: Read ``pkl`` columns (they run code when decoded).
        replication: Consecutive ranks of a node that read the same samples (tensor parallelism).
        world: The data-parallel world, when detection (torch.distributed, then ``RANK``/``WORLD_SIZE``/
            ``LOCAL_WORLD_SIZE``) would not give it.
        stream_name: Without ``streams``: the name in ``streams_registry`` of the ``Stream`` class that
            reads ``remote``/``local``/``split``.
        stream_config: Without ``streams``: more arguments of that class (not ``remote``, ``local``,
            ``split`` or the download options, which the dataset's own arguments give).
    """

    def __init__(
        self,
        *,
        streams: Sequence[Stream] | None = None,
        remote: str | None = None,
        local: str | None = None,
        split: str | None = None,
        download_retry: int = 2,
        download_timeout: float = 60,
        validate_hash: str | None = None,
        keep_zip: bool = False,
        epoch_size: int | str | None = None,
        predownload: int | None = None,
        cache_limit: int | str | None = None,
        sampling_method: str = "balanced",
        sampling_granularity: int = 1,
        partition_algo: str = "relaxed",
        num_canonical_nodes: int | None = None,
        batch_size: int | None = None,
        shuffle: bool = False,
        shuffle_algo: str = "py1e",
        shuffle_seed: int = 9176,
        shuffle_block_size: int | None = None,
        batching_method: str = "random",
        allow_unsafe_types: bool = False,
        replication: int | None = None,
        world: World | None = None,
        stream_name: str = "stream",
        stream_config: Mapping[str, Any] | None = None,
    ) -> None:
        if batching_method not in BATCHING_METHODS:
            raise DatasetConfigError(
                f"batching_method={batching_method!r} is unknown: use one of {', '.join(BATCHING_METHODS)}"
            )
        if batching_method != "random" and batch_size is None:
            raise DatasetConfigError(
                f"batching_method={batching_method!r} composes every batch from chosen streams, so it needs "
                "batch_size (the per-device batch size); give batch_size or use batching_method='random'"
            )
        if batch_size is not None and (type(batch_size) is not int or batch_size < 1):
            raise DatasetConfigError(f"batch_size={batch_size!r} must be a positive int or None")
        if predownload is not None and (type(predownload) is not int or predownload < 0):
            raise DatasetConfigError(f"predownload={predownload!r} must be an int, 0 or more, or None")
        if world is not None and not isinstance(world, World):
            raise DatasetConfigError(f"world={world!r} must be a shardflow.dataset.World or None")
        self.download_retry = download_retry
        self.download_timeout = download_timeout
        self.validate_hash = validate_hash
        self.keep_zip = keep_zip
        self.epoch_size_arg = parse_count("epoch_size", epoch_size)
        self._predownload_arg = predownload
        self.predownload = predownload if predownload is not None else (8 * batch_size if batch_size else 64)
        if predownload is not None and batch_size is not None and predownload < batch_size:
            warnings.warn(
                f"predownload={predownload} is below batch_size={batch_size}: a batch may wait for shards "
                f"that were not fetched ahead; give predownload at least batch_size",
                UserWarning,
                stacklevel=2,
            )
        self._cache_limit_arg = cache_limit
        self.cache_limit = parse_bytes("cache_limit", cache_limit)
        self._limit_checked: tuple[World, int] | None = None  # the world and predownload it was checked for
        self.sampling_method = sampling_method
        self.sampling_granularity = sampling_granularity
        self.partition_algo = partition_algo
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.shuffle_algo = shuffle_algo
        self.shuffle_seed = shuffle_seed
        self.shuffle_block_size = shuffle_block_size
        self.batching_method = batching_method
        self.allow_unsafe_types = allow_unsafe_types
        self.replication = replication
        if world is not None:
            world.check_against_distributed()
        self._world_override = world
        self.streams = self._resolve_streams(streams, remote, local, split, stream_name, stream_config)
        Stream.validate_weights(self.streams)  # before any index is fetched
        self.num_streams = len(self.streams)

        shards: list[ShardInfo] = []
        self._shard_stream: list[int] = []
        for k, stream in enumerate(self.streams):
            found = stream.load_shards(allow_unsafe_types)
            shards.extend(found)
            self._shard_stream.extend([k] * len(found))
        self.shards: tuple[ShardInfo, ...] = tuple(shards)
        self.num_shards = len(shards)
        self.samples_per_shard = np.array([shard.samples for shard in shards], np.int64)
        self.sample_offset_per_shard = self.samples_per_shard.cumsum() - self.samples_per_shard
        self.stream_per_shard = np.array(self._shard_stream, np.int64)
        self.shards_per_stream = [int(self._shard_stream.count(k)) for k in range(len(self.streams))]
        self.shard_offset_per_stream = np.cumsum([0, *self.shards_per_stream[:-1]]).astype(np.int64)
        self.samples_per_stream = np.add.reduceat(self.samples_per_shard, self.shard_offset_per_stream)
        self.sample_offset_per_stream = self.samples_per_stream.cumsum() - self.samples_per_stream
        self._locator = ShardLocator(self.samples_per_shard)
        self.num_samples: int = int(self.samples_per_shard.sum())
        stored = sum(file.bytes for shard in shards for file in shard.raw_files)
        self._sample_bytes = stored / max(1, self.num_samples)  # on average, for sizing workers' bundles
        self._starts: list[int] = self._locator.starts.tolist()
        # Writes each stream's resolved proportion, repeat and choose back onto it, as the reference does.
        self.weights = Stream._resolve_weights(
            self.streams, self.samples_per_stream, self.epoch_size_arg, shuffle_seed
        )
        self.initial_physical_nodes: int | None = None
        self._canonical_nodes = num_canonical_nodes  # None: the default for the world in force
        self._handed_world: World | None = None  # the owner's world, in a DataLoader worker that unpickled it
        self._unpickled_in = 0
        self._order_cache: tuple[tuple[int, int, int | None], SampleOrder] | None = None
        self.epoch_size: int = self._order.epoch_size
        self._epochs = EpochLedger()  # which epoch each iteration runs, also in DataLoader workers
        downloading = {stream.local_root: stream for stream in self.streams if stream.remote_root is not None}
        self._index_bytes = sum(stream.get_index_size() for stream in downloading.values())
        self._cache = NodeCache(
            list(downloading),
            self.cache_limit,
            max(stream.wait_timeout for stream in self.streams),
            self._index_bytes,
        )
        self._pool = ShardPool(self.shards, self.streams, self._shard_stream, self._cache, open_shards_cap())
        if self.cache_limit is not None:
            self._fit_random_reads()
            self._cache.announce()
        self._batch_mode: tuple[int, bool] | None = None  # (batch_size, drop_last): see reading_batches

    # -- construction helpers ------------------------------------------------------------------------

    def _resolve_streams(
        self,
        streams: Sequence[Stream] | None,
        remote: str | None,
        local: str | None,
        split: str | None,
        stream_name: str,
        stream_config: Mapping[str, Any] | None,
    ) -> list[Stream]:
        defaults = {
            "split": split,
            "download_retry": self.download_retry,
            "download_timeout": self.download_timeout,
            "validate_hash": self.validate_hash,
            "keep_zip": self.keep_zip,
        }
        if streams is not None:
            if remote is not None or local is not None:
                raise DatasetConfigError(
                    "give either streams or remote/local, not both: put remote/local into a Stream"
                )
            if stream_config or stream_name != "stream":
                raise DatasetConfigError(
                    f"stream_name={stream_name!r} and stream_config={stream_config!r} choose the class of "
                    f"the one stream built from remote/local; with streams=, build each Stream yourself"
                )
            if isinstance(streams, Stream) or not len(streams):
                raise DatasetConfigError(f"streams={streams!r} must be a non-empty sequence of Stream")
            for stream in streams:
                if not isinstance(stream, Stream):
                    raise DatasetConfigError(f"streams holds {stream!r}, which is not a Stream")
            return [stream.with_defaults(**defaults) for stream in streams]
        if remote is None and local is None:
            raise DatasetConfigError("give remote, local or streams: all are None")
        config = dict(stream_config or {})
        taken = sorted(set(config) & {"remote", "local", *defaults})
        if taken:
            raise DatasetConfigError(
                f"stream_config sets {taken}, which StreamingDataset's own arguments give: pass them to "
                f"StreamingDataset instead"
            )
        cls = streams_registry.get(stream_name)
        try:
            stream = cls(remote=remote, local=local, split=split, **config)
        except TypeError as exc:
            raise DatasetConfigError(
                f"stream_config={stream_config!r} does not fit {cls.__name__} (stream_name={stream_name!r}): "
                f"{exc}"
            ) from None
        return [stream.with_defaults(**defaults)]

    def _check_cache_limit(self, given: int | str | None) -> int | None:
        """Refuse a limit below one shard being read plus those fetched ahead, per rank of the node; warn of
        one below what the shuffle reads at once. Returns how many of the largest shards a rank's share of
        the limit holds (None when no stream downloads)."""
        assert self.cache_limit is not None
        remote = [k for k, shard in enumerate(self.shards) if self.streams[self._shard_stream[k]].remote_root]
        if not remote:
            return None
        sizes = [footprint(self.shards[k]) for k in remote]
        largest = max(sizes)
        fewest = min(self.shards[k].samples for k in remote) or 1
        ahead = min(FETCH_THREADS, math.ceil(self.predownload / fewest))
        world = self.world
        self._limit_checked = (world, self.predownload)
        ranks = world.local_world_size
        index = self._index_bytes
        needed = index + ranks * (1 + ahead) * largest
        if self.cache_limit < needed:
            raise DatasetConfigError(
                f"cache_limit={given!r} ({self.cache_limit:,} bytes) cannot hold what this node has in "
                f"flight; the smallest workable limit is {needed:,} bytes "
                f"({format_bytes(needed, round_up=True)}): the streams' index.json files ({index:,} bytes, "
                f"counted as the reference counts them) + {ranks} rank(s) "
                f"x (1 shard read + {ahead} fetched ahead for predownload={self.predownload}) x the largest "
                f"shard's {largest:,} bytes on disk while it arrives; raise cache_limit or lower predownload"
            )
        spread = self._shards_in_use_per_node(remote, world.num_nodes)
        working = spread * sum(sizes) // len(sizes)
        if index + working > self.cache_limit:
            warnings.warn(
                f"cache_limit={given!r} ({self.cache_limit:,} bytes) is below what this node reads at once: "
                f"about {spread} shards ({working:,} bytes) with shuffle_algo={self.shuffle_algo!r}, "
                f"shuffle_block_size={self._order.block_size} and "
                f"{math.ceil(self.num_canonical_nodes / world.num_nodes)} canonical node(s) per node, plus "
                f"{index:,} bytes of index.json; expect shards downloaded again and evicted shards held on "
                f"disk by their readers: lower shuffle_block_size or raise cache_limit",
                UserWarning,
                stacklevel=3,
            )
        return max(1, (self.cache_limit - index) // largest // ranks)

    def _shards_in_use_per_node(self, shards: list[int], num_nodes: int) -> int:
        """About how many shards one of ``num_nodes`` nodes reads from at any moment, given the shuffle."""
        if self.shuffle and self.shuffle_algo == "naive":
            return len(shards)
        if not self.shuffle or self.shuffle_algo in ("py1s", "py2s"):
            spread = 2
        else:  # py1b, py1br, py1e: a block's samples come from about a block's worth of shards
            per_shard = max(1.0, float(np.mean(self.samples_per_shard[shards])))
            spread = math.ceil(self._order.block_size / per_shard) + 1
        return min(len(shards), spread * math.ceil(self.num_canonical_nodes / num_nodes))

    @property
    def num_canonical_nodes(self) -> int:
        """Canonical nodes of the order: as given or resumed from a state dict, else the default for the
        world in force (one per node; 64 per node for ``py1s``/``py2s``)."""
        if self._canonical_nodes is not None:
            return self._canonical_nodes
        return default_num_canonical_nodes(self.shuffle_algo, self.world.num_nodes)

    @num_canonical_nodes.setter
    def num_canonical_nodes(self, value: int) -> None:
        self._canonical_nodes = value

    @property
    def _order(self) -> SampleOrder:
        """The order for the canonical nodes, seed and batch size in force, rebuilt when one changes."""
        key = (self.num_canonical_nodes, self.shuffle_seed, self.batch_size)
        cached = self._order_cache
        if cached is None or cached[0] != key:
            cached = (key, self._make_order())
            self._order_cache = cached
        return cached[1]

    def _make_order(self) -> SampleOrder:
        return SampleOrder(
            samples_per_shard=self.samples_per_shard,
            num_canonical_nodes=self.num_canonical_nodes,
            batch_size=self.batch_size or 1,
            shards_per_stream=self.shards_per_stream,
            choose_per_stream=self.weights.choose.tolist(),
            proportion_per_stream=self.weights.proportion.tolist(),
            shuffle=self.shuffle,
            shuffle_algo=self.shuffle_algo,
            shuffle_seed=self.shuffle_seed,
            shuffle_block_size=self.shuffle_block_size,
            partition_algo=self.partition_algo,
            sampling_method=self.sampling_method,
            sampling_granularity=self.sampling_granularity,
            batching_method=self.batching_method,
        )

    # -- topology ------------------------------------------------------------------------------------

    @property
    def world(self) -> World:
        """The data-parallel world of distinct sample streams (after ``replication``), as in force now."""
        return self._full_world().replicate(self.replication)

    def _full_world(self) -> World:
        """The ``world`` given; else, in a DataLoader worker, its owner's: handed over in the pickle (spawn,
        forkserver) or inherited with the owner's memory (fork); else detected in this process."""
        if self._world_override is not None:
            return self._world_override
        handed = self._handed_world
        if handed is not None and self._unpickled_in == os.getpid() and _torch_worker() is not None:
            return handed
        return World.detect()

    # -- random access -------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Distinct samples over all streams (``dataset[i]`` takes ``0 <= i < size``)."""
        return self.num_samples

    def __len__(self) -> int:
        """Samples this rank yields per epoch (the epoch split over the ranks of the world in force, so a
        dataset built before ``torch.distributed`` is initialised counts right after), as torch expects."""
        return math.ceil(self.epoch_size / self.world.world_size)

    @property
    def length(self) -> int:
        """``len(self)``."""
        return len(self)

    @property
    def pool(self) -> ShardPool:
        """This process's open shards of the dataset, shared by its threads (iterations, random reads and
        ``StreamingDataLoader``'s thread workers)."""
        return self._pool

    def _fit_random_reads(self) -> None:
        """Under a cache limit, keep open for random reads no more shards than this rank's share holds."""
        fits = self._check_cache_limit(self._cache_limit_arg)
        self._pool.random_cap = min(open_shards_cap(), fits or self._pool.random_cap)

    def get_item(self, sample_id: int) -> Any:
        """The sample with this global id (``0 <= sample_id < size``), fetching its shard when needed.

        The shards it opens stay open only while they are among the last ones it used: as many as a
        quarter of the process's open-file limit, and under a cache limit as many as this rank's share of
        the limit holds (then an evicted one frees its disk blocks).
        """
        k, j = self._locator.locate_one(sample_id)
        return self._pool.recent_reader(k).get(j)

    def __getitem__(self, at: Any) -> Any:
        """A sample by id (negative counts from the end), or a list of samples for a slice, list or array."""
        if isinstance(at, (int, np.integer)) and not isinstance(at, bool):
            i = int(at)
            if i < 0:
                i += self.num_samples
            if not 0 <= i < self.num_samples:
                raise IndexError(f"sample {at} is out of range for a dataset of {self.num_samples} samples")
            return self.get_item(i)
        if isinstance(at, slice):
            return [self.get_item(i) for i in range(*at.indices(self.num_samples))]
        if isinstance(at, (list, tuple, np.ndarray)):
            return [self[sub] for sub in at]
        raise TypeError(f"dataset indices must be ints, slices, lists or arrays, not {type(at).__name__}")

    # -- epochs and resumption -----------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run ``epoch`` from its start and the ones after it the epochs after it
        (as ``DistributedSampler.set_epoch``), in DataLoader workers too, persistent or not."""
        if type(epoch) is not int or epoch < 0:
            raise DatasetConfigError(f"epoch={epoch!r} must be an int, 0 or more")
        refuse_resharding(self)  # accelerate's wrappers call set_epoch before each epoch
        self._epochs.restart(epoch, 0)

    def begin_epoch(self, workers: int = 1) -> tuple[int, int]:
        """Start an iteration in the process that owns this dataset: number its run in the epoch ledger and
        return its ``(epoch, sample_in_epoch)``, for ``workers`` readers that share it (threads, each reading
        its :class:`WorkerSlot` through :meth:`iter_worker`). ``iter(dataset)`` calls it itself (one
        reader), and ``state_dict`` counts from the latest run begun."""
        self._check_world()
        return self._run_start(self._epochs.start_run(workers))

    @contextlib.contextmanager
    def planning_epoch(self, workers: int, seed: int | None = None) -> Iterator[tuple[int, int]]:
        """Number the run of ``workers`` DataLoader worker processes started within this block (``seed``:
        their DataLoader iterator's base seed when they run already, persistent), so that this copy knows
        its epoch at once and the workers take the run from their copy of the dataset; yields its
        ``(epoch, sample_in_epoch)``. Copies made after the block do not take it."""
        run = self._epochs.start_run(workers, seed)
        self._epochs.planned = (self._epochs.generation, run)
        try:
            yield self._run_start(run)
        finally:
            self._epochs.planned = None

    def _check_world(self) -> None:
        """Check the cache limit again when the world changed since it was checked (e.g. torch.distributed
        initialised after construction)."""
        if self.cache_limit is not None and self._limit_checked != (self.world, self.predownload):
            self._fit_random_reads()

    def _run_start(self, run: int) -> tuple[int, int]:
        """Where run ``run`` of the ledger's generation starts: the generation's base (the next epoch when
        a state was saved at the very end of its epoch), then one epoch more per run."""
        epoch, offset = self._epochs.base
        if offset and offset >= self._samples_in_epoch(epoch):
            epoch, offset = epoch + 1, 0
        return (epoch + run, 0) if run else (epoch, offset)

    def agree_batch_size(self, loader_batch: int | None) -> None:
        """Take a loader's per-device batch size (None: one sample at a time) when this dataset has none;
        refuse another one. ``StreamingDataLoader`` calls it, so that its batches are the order's.

        Raises:
            DatasetConfigError: The dataset's batch_size differs from the loader's.
        """
        if self.batch_size is None:
            self._adopt_batch_size(loader_batch or 1)
        elif (loader_batch or 1) != self.batch_size:
            raise DatasetConfigError(
                f"StreamingDataLoader(batch_size={loader_batch}) over a StreamingDataset with batch_size="
                f"{self.batch_size}: the dataset lays each epoch out in whole batches of its batch_size for "
                f"its workers, so a loader that batches otherwise mixes them, and a resumed run repeats some "
                f"samples and skips others; give both the same batch_size, or leave the dataset's unset (the "
                f"loader's is then taken)"
            )

    def _batch_size_for(self, global_batch: object) -> int:
        """The per-device batch size that resumes a state saved with ``global_batch`` samples per step (its
        batch_size times its ranks) on the world in force: an epoch's order is laid out in global batches.

        Raises:
            StateDictError: ``global_batch`` is not a positive int, or this dataset's batch size or ranks
                cannot make it.
        """
        if (
            not isinstance(global_batch, (int, np.integer))
            or isinstance(global_batch, bool)
            or global_batch < 1
        ):
            raise StateDictError(
                f"state dict global_batch_size={global_batch!r} must be a positive int, or None"
            )
        saved, ranks = int(global_batch), self.world.world_size
        fix = (
            f"batch_size={saved // ranks} on {ranks} rank(s)"
            if saved % ranks == 0
            else f"a number of ranks that divides {saved}"
        )
        if self.batch_size is not None and self.batch_size * ranks != saved:
            raise StateDictError(
                f"the state dict was saved with a global batch of {saved} samples (batch_size x ranks), but "
                f"this dataset reads {self.batch_size * ranks} per step (batch_size={self.batch_size} on "
                f"{ranks} rank(s)): the epoch's order is laid out in global batches, so another one repeats "
                f"some samples and skips others; resume with {fix}"
            )
        if saved % ranks:
            raise StateDictError(
                f"the state dict was saved with a global batch of {saved} samples (batch_size x ranks), "
                f"which {ranks} rank(s) cannot share equally; resume with {fix}"
            )
        return saved // ranks

    def _adopt_batch_size(self, batch_size: int) -> None:
        """Lay epochs out in batches of ``batch_size`` from now on (the default ``predownload`` follows);
        1 changes nothing (it is the order without a batch size)."""
        if batch_size == 1 or batch_size == self.batch_size:
            return
        self.batch_size = batch_size
        if self._predownload_arg is None:
            self.predownload = 8 * batch_size
        if self.cache_limit is not None:
            self._fit_random_reads()

    def _samples_in_epoch(self, epoch: int) -> int:
        """Samples the world reads in ``epoch``: the epoch size, less what non-random batching drops."""
        if self.batching_method == "random":
            return self.epoch_size
        world = self.world
        rows = self._order.global_batch_ids(epoch, WorldShape(world.num_nodes, world.local_world_size, 1))
        return int((rows >= 0).any(axis=1).sum()) * rows.shape[1]

    def state_dict(self, num_samples: int = 0, from_beginning: bool = False) -> dict[str, Any]:
        """The resumption state, with mosaicml-streaming's keys (so either library resumes the other's) and
        ``global_batch_size`` (``batch_size`` times the ranks; the reference ignores it), which
        ``load_state_dict`` checks. The epoch is the one this dataset's latest iteration runs, also when
        DataLoader workers run it.

        Args:
            num_samples: Samples consumed by the whole world in the current epoch: since this run started
                or resumed it, or (``from_beginning``) since the epoch began.
            from_beginning: Whether ``num_samples`` counts from the epoch's start.

        Raises:
            StateDictError: The position cannot be resumed exactly: DataLoader workers read the epoch
                mid-way and the dataset has no ``batch_size`` (the loader's batches then interleave the
                workers' samples).
        """
        return self._state_dict(num_samples, from_beginning, exact=False)

    def state_dict_after_batches(self, num_samples: int) -> dict[str, Any]:
        """:meth:`state_dict` after ``num_samples`` of the latest run, read by the whole world in whole
        batches of ``batch_size`` in the order's order (as ``StreamingDataLoader`` yields them, whatever
        its workers): exact also mid-way through an epoch that several workers read."""
        return self._state_dict(num_samples, False, exact=True)

    def _state_dict(self, num_samples: int, from_beginning: bool, exact: bool) -> dict[str, Any]:
        """``state_dict``; ``exact``: the caller (``StreamingDataLoader``) batches as the order does."""
        latest = self._epochs.latest()
        if latest is None:  # no iteration since construction, set_epoch or load_state_dict
            (epoch, offset), workers = self._epochs.base, 1
        else:
            epoch, offset = self._run_start(latest[0])
            workers = latest[1]
        sample_in_epoch = num_samples if from_beginning else offset + num_samples
        if (
            not exact
            and self.batch_size is None
            and workers > 1
            and 0 < sample_in_epoch < self._samples_in_epoch(epoch)
        ):
            raise StateDictError(
                f"state_dict(num_samples={num_samples}) mid-way through epoch {epoch}, which {workers} "
                f"DataLoader workers read from a StreamingDataset without batch_size: each worker's samples "
                f"come in the loader's batches, so the first {sample_in_epoch} samples read are not the "
                f"first {sample_in_epoch} of the epoch's order and a resume would repeat some and skip "
                f"others. Give StreamingDataset(batch_size=<the DataLoader's batch_size>), or use "
                f"StreamingDataLoader (which sets it)"
            )
        world = self.world
        return {
            "epoch": epoch,
            "sample_in_epoch": sample_in_epoch,
            "num_canonical_nodes": self.num_canonical_nodes,
            "shuffle_seed": self.shuffle_seed,
            "initial_physical_nodes": (
                world.num_nodes if self.initial_physical_nodes is None else self.initial_physical_nodes
            ),
            "global_batch_size": None if self.batch_size is None else self.batch_size * world.world_size,
        }

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        """Resume from a state dict (this library's or mosaicml-streaming's) on the next ``__iter__``, always.

        A dataset without ``batch_size`` takes the state's global batch size split over the ranks in force;
        one whose ``batch_size`` times the ranks differs refuses it.

        Raises:
            StateDictError: ``obj`` is not a dict, a key is missing, a value is not a valid count, or the
                state's batch_size differs from the dataset's.
        """
        if not isinstance(obj, Mapping):
            raise StateDictError(
                f"load_state_dict takes the dict that state_dict() returned, not {type(obj).__name__} "
                f"{obj!r:.80}: pass the saved state (with no saved state, do not call load_state_dict)"
            )
        for key in STATE_KEYS:
            if key not in obj:
                raise StateDictError(f"the state dict has no {key!r}: it has {sorted(obj)}")
        values: dict[str, int | None] = {}
        for key in STATE_KEYS:
            value = obj[key]
            if key == "initial_physical_nodes" and value is None:
                values[key] = None
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise StateDictError(f"state dict {key}={value!r} must be an int, 0 or more")
            values[key] = int(value)
        epoch, sample_in_epoch, nodes, seed = (int(values[key] or 0) for key in STATE_KEYS[:4])
        if nodes < 1:
            raise StateDictError("state dict num_canonical_nodes=0 must be 1 or more")
        saved = obj.get("global_batch_size")
        if saved is not None:
            self._adopt_batch_size(self._batch_size_for(saved))
        self.num_canonical_nodes, self.shuffle_seed = nodes, seed
        self.initial_physical_nodes = values["initial_physical_nodes"]
        self._epochs.restart(epoch, sample_in_epoch)

    # -- iteration -----------------------------------------------------------------------------------

    def _worker_coordinates(self, slot: WorkerSlot | None) -> tuple[WorldShape, int, int, int, int | None]:
        """A worker's world shape, node, rank in node, worker in rank and the partition's initial nodes;
        ``slot`` None: this DataLoader worker process's (or the rank alone outside one)."""
        if slot is None:
            found = _torch_worker()
            slot = WorkerSlot() if found is None else found[0]
        world = self.world
        shape = WorldShape(world.num_nodes, world.local_world_size, slot.count)
        initial = self.initial_physical_nodes
        if initial is not None and initial == world.num_nodes:
            initial = None
        return shape, world.node, world.local_rank, slot.index, initial

    def worker_sample_ids(
        self, epoch: int, sample_in_epoch: int = 0, slot: WorkerSlot | None = None
    ) -> NDArray[np.int64]:
        """The global sample ids a worker of this rank yields in ``epoch``, padding removed; ``slot``
        names the worker (default: the current DataLoader worker process, or the rank alone)."""
        shape, node, rank, worker, initial = self._worker_coordinates(slot)
        ids = self._order.worker_sample_ids(epoch, shape, node, rank, worker, sample_in_epoch, initial)
        return ids[ids >= 0]

    def worker_sample_id_chunks(
        self, epoch: int, sample_in_epoch: int = 0, slot: WorkerSlot | None = None
    ) -> Iterator[NDArray[np.int64]]:
        """:meth:`worker_sample_ids` in consecutive chunks (padding ``-1`` kept), in memory O(chunk)."""
        shape, node, rank, worker, initial = self._worker_coordinates(slot)
        return self._order.worker_sample_id_chunks(epoch, shape, node, rank, worker, sample_in_epoch, initial)

    @property
    def supports_batch_reads(self) -> bool:
        """Whether whole batches can be read at once (see :meth:`reading_batches`): when samples come
        straight from the shards (a subclass overrides neither ``get_item`` nor ``__getitem__``), or when a
        subclass reads its batches itself (it overrides this and :meth:`read_batches`)."""
        return self._raw_samples

    @property
    def _raw_samples(self) -> bool:
        """Whether samples come straight from the shards (no ``get_item`` or ``__getitem__`` override)."""
        cls = type(self)
        return cls.__getitem__ is StreamingDataset.__getitem__ and cls.get_item is StreamingDataset.get_item

    def read_batches(
        self, chunks: Iterator[NDArray[np.int64]], batch_size: int, drop_last: bool, spans: bool = False
    ) -> Iterator[Any]:
        """The batches of the sample ids in ``chunks`` (see :meth:`reading_batches`), in the reading worker;
        with ``spans``, ``bytes`` columns may come as where their values lie (see ``read_batch``). A
        subclass that makes its own batches from these (e.g. decoding images) overrides it."""
        return iter_batches(self._pool, chunks, self.predownload, batch_size, drop_last, spans)

    @contextlib.contextmanager
    def reading_batches(self, batch_size: int, drop_last: bool) -> Iterator[None]:
        """Within this block, iterations of this dataset, and those of the DataLoader workers started in it
        (they copy the dataset), yield whole batches of ``batch_size`` (the last one partial unless
        ``drop_last``) as dicts of numpy arrays and lists, rather than samples; a worker process yields them
        in bundles (``StreamingDataLoader`` reads them so).

        Raises:
            DatasetConfigError: A subclass overrides ``get_item`` or ``__getitem__`` (see
                :attr:`supports_batch_reads`).
        """
        if not self.supports_batch_reads:
            raise DatasetConfigError(
                f"{type(self).__name__} overrides get_item or __getitem__, so its samples cannot be read a "
                "batch at a time: read it sample by sample"
            )
        previous, self._batch_mode = self._batch_mode, (batch_size, drop_last)
        try:
            yield
        finally:
            self._batch_mode = previous

    def __iter__(self) -> Iterator[Any]:
        """This worker's samples of the next epoch (or of the loaded state's), in order.

        The epoch is chosen when ``iter()`` is called, not at the first ``next()``.
        """
        worker = _torch_worker()
        if worker is None:
            epoch, offset = self.begin_epoch()
            if self._batch_mode is None:
                return self.iter_worker(WorkerSlot(), epoch, offset)
            return self.iter_worker(WorkerSlot(), epoch, offset, *self._batch_mode)
        slot, seed = worker
        self._check_world()
        epoch, offset = self._run_start(self._epochs.claim(slot.index, slot.count, seed))
        if self._batch_mode is None:
            return self.iter_worker(slot, epoch, offset)
        batch_size, drop_last = self._batch_mode
        chunks = self.worker_sample_id_chunks(epoch, offset, slot)
        batches = self.read_batches(chunks, batch_size, drop_last, self._spans_readable_by_trainer())
        return bundle(batches, slot.index, batches_per_bundle(self._sample_bytes * batch_size))

    def iter_worker(
        self,
        slot: WorkerSlot,
        epoch: int,
        sample_in_epoch: int = 0,
        batch_size: int | None = None,
        drop_last: bool = False,
        groups: ItemGroups | None = None,
    ) -> Iterator[Any]:
        """Worker ``slot``'s samples of ``epoch`` from ``sample_in_epoch`` on, in order, read through this
        process's :attr:`pool` (safe to run in several threads at once); with ``batch_size``, whole batches
        of it as dicts of numpy arrays and lists (see :meth:`reading_batches`; the last one partial unless
        ``drop_last``). With ``groups``, a subclass's own ``__getitem__`` is called a group of samples at a
        time through it (the thread loader spreads a group over its threads). The epoch comes from
        :meth:`begin_epoch`; this numbers nothing."""
        chunks = self.worker_sample_id_chunks(epoch, sample_in_epoch, slot)
        if batch_size is not None:
            if not self.supports_batch_reads:
                raise DatasetConfigError(
                    f"{type(self).__name__} overrides get_item or __getitem__: its samples cannot be read a "
                    "batch at a time"
                )
            return self.read_batches(chunks, batch_size, drop_last)
        item = None if self._raw_samples else self.__getitem__
        return iter_samples(self._pool, chunks, self.predownload, item, groups)

    def _spans_readable_by_trainer(self) -> bool:
        """Whether a DataLoader worker may send a batch's ``bytes`` columns as where they lie in the shard
        files, for the process that trains to copy them out of its own map (each byte copied once, and never
        by a worker): when opening a shard there costs no hash check (no ``validate_hash``) and the shards
        stay put (no ``cache_limit`` to evict one between the worker's read and the trainer's)."""
        return self.cache_limit is None and all(stream.validate_hash is None for stream in self.streams)

    def cache_stats(self) -> dict[str, int]:
        """This process's shard downloads, those of shards evicted from the folder before (re-downloads),
        and the evictions it made to keep within ``cache_limit``; summed over a node's processes, the
        node's."""
        cache = self._cache
        return {"downloads": cache.downloads, "redownloads": cache.redownloads, "evictions": cache.evictions}

    def open_shards(self) -> list[int]:
        """The shards this process has open (mapped) now."""
        return self._pool.open_shards()

    # -- mosaicml-streaming's cache and epoch names -------------------------------------------------

    @property
    def cache_usage(self) -> int:
        """Bytes this dataset has in its local folders now: every stream's ``index.json`` and the shard
        files (raw and compressed) present, as the index sizes them. Counted from the folders at each
        call (shardflow shares no memory between processes), so it includes other processes' downloads."""
        usage = sum(stream.get_index_size() for stream in self.streams)
        return usage + sum(
            self.streams[self._shard_stream[k]].local_bytes(shard) for k, shard in enumerate(self.shards)
        )

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        """Make shard ``shard_id`` local (download, decompress, check), within ``cache_limit``. Without
        ``blocking``, a shard another process is downloading is left to it."""
        stream = self.streams[self._shard_stream[shard_id]]
        stream.prepare_shard(self.shards[shard_id], self._cache, blocking)

    def evict_shard(self, shard_id: int) -> None:
        """Remove shard ``shard_id``'s files from the cache, if shardflow downloaded them (files that were
        in the folder before, and local-only streams, are never deleted: see the README). A process that
        has it open keeps reading its map; this one unmaps it first."""
        self._pool.release(shard_id)
        stream = self.streams[self._shard_stream[shard_id]]
        name = self.shards[shard_id].basename
        for entry in read_entries(stream.local_root):
            if entry.name == name:
                self._cache.evict(entry)
                return
        logger.info("evict_shard(%d): shardflow did not download %s, so it stays", shard_id, name)

    def evict_coldest_shard(self) -> None:
        """Evict the least recently used shard that shardflow downloaded into this dataset's folders.

        Raises:
            DatasetConfigError: No downloaded shard is present.
        """
        entries = [entry for root in self._cache.roots for entry in read_entries(root)]
        if not entries:
            raise DatasetConfigError(
                "evict_coldest_shard found no shard that shardflow downloaded into "
                f"{[str(root) for root in self._cache.roots]}: nothing to evict"
            )
        coldest = min(entries, key=lambda entry: entry.last_use)
        for k, shard in enumerate(self.shards):
            stream = self.streams[self._shard_stream[k]]
            if shard.basename == coldest.name and stream.local_root == coldest.root:
                self._pool.release(k)
        self._cache.evict(coldest)

    @property
    def next_epoch(self) -> int:
        """The epoch the next iteration runs (after the ones this dataset's iterations ran, also in its
        DataLoader workers)."""
        latest = self._epochs.latest()
        if latest is None:
            return self._run_start(0)[0]
        return self._run_start(latest[0])[0] + 1

    @next_epoch.setter
    def next_epoch(self, epoch: int) -> None:
        self.set_epoch(epoch)

    def on_exception(self, future: Future[Any]) -> None:
        """Re-raise the error of a finished background task (a ``Future``), if it failed."""
        error = future.exception()
        if error is not None:
            raise error

    def resample_streams(
        self, epoch: int, stream_id: int | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """The epoch's up/down-sampling, as mosaicml-streaming's: the shuffle units (samples drawn per
        whole or partial repeat of each shard) and the global sample ids drawn, unit after unit.

        Args:
            epoch: The epoch (seeds the draws with ``sampling_method="balanced"``).
            stream_id: Only that stream's units (drawn from a generator of their own), or every stream's.
        """
        balanced = self.sampling_method == "balanced"
        units = epoch_units(
            self.samples_per_shard,
            np.array(self.shards_per_stream, np.int64),
            self.weights.choose,
            int(self.sampling_granularity),
            int(self.shuffle_seed),
            int(epoch),
            vary_counts=balanced and self.shuffle,
            vary_subsets=balanced,
            stream=stream_id,
        )
        sizes, ids = units.sizes, units.ids
        local = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        base = np.repeat(ids.base, sizes)
        table_start = np.repeat(ids.table_start, sizes)
        picked = table_start >= 0
        local[picked] = ids.table[table_start[picked] + local[picked]]
        return sizes.astype(np.int64), (base + local).astype(np.int64)

    # -- pickling into workers -----------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """What a copy needs; a DataLoader worker that unpickles it takes this process's world and epoch
        ledger from it (a copy unpickled elsewhere, e.g. a spawned rank, finds its own)."""
        state = dict(self.__dict__)
        state["_handed_world"] = self._full_world()
        state["_epochs"] = self._epochs.handed(_torch_worker() is not None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._unpickled_in = os.getpid()

    def __repr__(self) -> str:
        streams = ", ".join(stream.describe() for stream in self.streams)
        return f"{type(self).__name__}({streams}; samples={self.num_samples}, shards={len(self.shards)})"
