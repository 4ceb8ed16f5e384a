"""The epoch simulated: each worker's real order, its shard requests, the node's downloads, cache and trainer.

The order is the library's own: ``shardflow.shuffle.SampleOrder.worker_sample_ids`` gives every simulated
worker its ids, as each DataLoader worker computes them, so a plan of 1,000 nodes runs no 1,000 processes:
it computes the workers of the nodes it simulates (every node of a small world, else one representative
node, and says so). Nodes are alike: each reads its own canonical nodes' samples through its own link
into its own cache.

What is modelled, as ``shardflow.dataset`` does it (its README's "How it reads" and "The node cache"):

- each worker reads its ids in windows of 16,384 (whole batches), followed by ``predownload`` ids of
  look-ahead; before each batch it requests the shards first needed up to ``predownload`` samples ahead
  (at least the next one), and a batch waits until all its shards are open. At each window's start the
  shards used in neither this window nor the last are released; under a cache limit a shard is also
  released once the rest of its window no longer uses it;
- each worker process runs up to 8 fetch threads (FIFO); a shard that another process of the node is
  downloading is waited for, one that is in the cache is opened at once;
- the node's link carries every download at once, sharing ``bandwidth`` equally (processor sharing); each
  download first waits ``latency`` (the request's round trip);
- a download reserves its footprint (compressed + raw) in the cache and evicts least-recently-used shards
  (last opened or released) until the entries fit ``cache_limit``, and again when it has arrived (what
  became evictable while it was in flight): shards nobody has open first, then open ones (their readers
  keep reading); never one being downloaded, nor one that has just arrived before the workers waiting for
  it have opened it (they open it as it arrives: the library's ``open`` lock spares it). A shard needed
  again after eviction is downloaded again;
- workers send batches in bundles of 1, 2, 4, ... up to 8 (fewer for big batches) and run at most
  ``prefetch_factor`` bundles ahead of the trainer; each rank takes its workers' batches in turn, and the
  ranks step together (data-parallel training) at ``samples_per_second`` per rank at most.

Reading and decoding take no time in the model; the trainer's rate and the network set the pace.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shardflow.plan.errors import PlanInputError
from shardflow.plan.shapes import DatasetShape

__all__ = ["PlanConfig", "Plan", "plan_epoch", "FETCH_THREADS", "WINDOW", "MAX_SIMULATED_WORKERS"]

logger = logging.getLogger(__name__)

FETCH_THREADS = 8  # shardflow.dataset: fetch threads per process
WINDOW = 16_384  # shardflow.dataset._iteration.WINDOW: ids located at a time
BUNDLE = 8  # shardflow.dataset._bundles: the most batches a worker sends at a time
BUNDLE_BYTES = 8 << 20
MAX_SIMULATED_WORKERS = 256  # worlds with more workers are simulated on one representative node
SEARCH_SAMPLES = 4_000_000  # the smallest full-speed cache limit is searched for when a node reads fewer
_RANDOM_MEDIAN = 1 - 2**-0.5  # median |x - y| / n of two uniform random positions


@dataclass(frozen=True)
class PlanConfig:
    """A run to plan: the world, the loader's settings, the network and the trainer.

    Attributes:
        nodes: Physical nodes.
        ranks_per_node: Ranks (devices) per node.
        workers_per_rank: DataLoader workers per rank (0: the rank's main process reads).
        batch_size: Per-device batch size.
        shuffle, shuffle_algo, shuffle_seed, shuffle_block_size, num_canonical_nodes, partition_algo:
            As ``StreamingDataset`` takes them (None: its defaults).
        epoch: The epoch to plan (orders differ per epoch).
        cache_limit: Bytes the node's cache may hold, or None.
        predownload: Samples ahead whose shards are fetched (None: ``8 * batch_size``).
        bandwidth: The node's network bandwidth, bytes per second.
        latency: Seconds before a download's first byte (one request's round trip).
        samples_per_second: The most samples a rank's trainer consumes per second (None: no limit).
        prefetch_factor: Bundles a worker may run ahead (the DataLoader's ``prefetch_factor``).
        startup_seconds: Seconds before the workers start reading (process start, imports).
        simulated_nodes: Nodes to simulate (None: all when the world has at most 256 workers, else 1).
        search_limit: Search for the smallest cache limit at full speed: True, False, or None (when a node
            reads at most 4M samples).
    """

    nodes: int = 1
    ranks_per_node: int = 1
    workers_per_rank: int = 2
    batch_size: int = 32
    shuffle: bool = True
    shuffle_algo: str = "py1e"
    shuffle_seed: int = 9176
    shuffle_block_size: int | None = None
    num_canonical_nodes: int | None = None
    partition_algo: str = "relaxed"
    epoch: int = 0
    cache_limit: int | None = None
    predownload: int | None = None
    bandwidth: float = 100e6
    latency: float = 0.02
    samples_per_second: float | None = None
    prefetch_factor: int = 2
    startup_seconds: float = 0.0
    simulated_nodes: int | None = None
    search_limit: bool | None = None

    def __post_init__(self) -> None:
        for name in ("nodes", "ranks_per_node", "batch_size", "prefetch_factor"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise PlanInputError(f"{name}={value!r} must be an int, 1 or more")
        for name in ("workers_per_rank", "epoch"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise PlanInputError(f"{name}={value!r} must be an int, 0 or more")
        if not (
            isinstance(self.bandwidth, (int, float)) and math.isfinite(self.bandwidth) and self.bandwidth > 0
        ):
            raise PlanInputError(f"bandwidth={self.bandwidth!r} must be more than 0 bytes per second")
        if not (isinstance(self.latency, (int, float)) and 0 <= self.latency < math.inf):
            raise PlanInputError(f"latency={self.latency!r} must be 0 or more seconds")
        if not 0 <= self.startup_seconds < math.inf:
            raise PlanInputError(f"startup_seconds={self.startup_seconds!r} must be 0 or more seconds")
        if self.samples_per_second is not None and not 0 < self.samples_per_second:
            raise PlanInputError(
                f"samples_per_second={self.samples_per_second!r} must be more than 0 (or None: no limit)"
            )
        if self.cache_limit is not None and (type(self.cache_limit) is not int or self.cache_limit < 1):
            raise PlanInputError(f"cache_limit={self.cache_limit!r} must be a number of bytes, or None")
        if self.predownload is not None and (type(self.predownload) is not int or self.predownload < 0):
            raise PlanInputError(f"predownload={self.predownload!r} must be an int, 0 or more, or None")
        if self.simulated_nodes is not None and not 1 <= self.simulated_nodes <= self.nodes:
            raise PlanInputError(
                f"simulated_nodes={self.simulated_nodes!r} must be in [1, nodes={self.nodes}]"
            )

    @property
    def lookahead(self) -> int:
        return self.predownload if self.predownload is not None else 8 * self.batch_size

    @property
    def nodes_to_simulate(self) -> int:
        if self.simulated_nodes is not None:
            return self.simulated_nodes
        workers = self.nodes * self.ranks_per_node * max(1, self.workers_per_rank)
        return self.nodes if workers <= MAX_SIMULATED_WORKERS else 1


@dataclass
class Plan:
    """A simulated epoch: ``summary`` (numbers) and ``timeline`` (arrays for plots), see ``to_dict``."""

    config: PlanConfig
    dataset: dict[str, Any]
    summary: dict[str, Any]
    timeline: dict[str, list[float]]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What ``--json`` prints: ``config``, ``dataset``, ``summary``, ``timeline``, ``notes``."""
        return {
            "config": asdict(self.config),
            "dataset": self.dataset,
            "summary": self.summary,
            "timeline": self.timeline,
            "notes": self.notes,
        }


# -- the order of every simulated worker ----------------------------------------------------------------


@dataclass
class _Reader:
    """One worker's epoch, located: shard of every sample, and each batch's distinct shards."""

    node: int
    rank: int
    worker: int
    shards: NDArray[np.int64]
    batch_ptr: list[int]
    batch_shards: list[int]
    batch_samples: list[int]


@dataclass
class _Traffic:
    """Every simulated worker's located order (computed once, replayed for each cache limit)."""

    readers: list[_Reader]
    rank_ids: NDArray[np.int64]  # node 0 rank 0's samples in training order (shuffle quality)


def _locate(config: PlanConfig, shape: DatasetShape) -> _Traffic:
    from shardflow.shuffle import (
        SampleOrder,
        ShuffleError,
        WorldShape,
        default_num_canonical_nodes,
    )

    canonical = config.num_canonical_nodes or default_num_canonical_nodes(config.shuffle_algo, config.nodes)
    workers = max(1, config.workers_per_rank)
    try:
        order = SampleOrder(
            samples_per_shard=shape.samples,
            num_canonical_nodes=canonical,
            batch_size=config.batch_size,
            shuffle=config.shuffle,
            shuffle_algo=config.shuffle_algo,
            shuffle_seed=config.shuffle_seed,
            shuffle_block_size=config.shuffle_block_size,
            partition_algo=config.partition_algo,
        )
        world = WorldShape(config.nodes, config.ranks_per_node, workers)
        readers = []
        first_rank: list[NDArray[np.int64]] = []
        for node in range(config.nodes_to_simulate):
            for rank in range(config.ranks_per_node):
                for worker in range(workers):
                    ids = order.worker_sample_ids(config.epoch, world, node, rank, worker)
                    ids = ids[ids >= 0]
                    if node == 0 and rank == 0:
                        first_rank.append(ids)
                    readers.append(_batches(node, rank, worker, shape.shard_of(ids), config.batch_size))
    except ShuffleError as exc:
        raise PlanInputError(f"the library's order refuses this plan: {exc}") from None
    return _Traffic(readers, _interleave(first_rank, config.batch_size))


def _batches(node: int, rank: int, worker: int, shards: NDArray[np.int64], batch_size: int) -> _Reader:
    count = len(shards)
    batch = np.arange(count, dtype=np.int64) // batch_size
    span = int(shards.max()) + 1 if count else 1
    keys = np.unique(batch * span + shards)
    owner = keys // span
    ptr = np.searchsorted(owner, np.arange(-(-count // batch_size) + 1))
    sizes = np.minimum(batch_size, count - np.arange(-(-count // batch_size)) * batch_size)
    return _Reader(node, rank, worker, shards, ptr.tolist(), (keys % span).tolist(), sizes.tolist())


def _interleave(per_worker: list[NDArray[np.int64]], batch_size: int) -> NDArray[np.int64]:
    """One rank's ids in the order its trainer gets them: its workers' batches in turn."""
    pieces = []
    batches = [[ids[k : k + batch_size] for k in range(0, len(ids), batch_size)] for ids in per_worker]
    for step in range(max((len(b) for b in batches), default=0)):
        pieces += [b[step] for b in batches if step < len(b)]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)


# -- the event simulation -------------------------------------------------------------------------------


class _Node:
    """A node's link (processor sharing) and cache (entries, LRU, who has what open)."""

    def __init__(self, sim: _Sim, index: int) -> None:
        self.sim = sim
        self.index = index
        self.state: dict[int, int] = {}  # shard -> _DOWN or _HERE (absent: missing)
        self.entries: dict[int, int] = {}  # shard -> bytes counted against the limit
        self.usage = 0
        self.here_bytes = 0  # bytes of arrived shards in the folder
        self.last_use: dict[int, float] = {}
        self.open_count: dict[int, int] = {}
        self.waiters: dict[int, list[_Worker]] = {}
        self.ever: set[int] = set()
        self.held_evicted: dict[int, int] = {}  # evicted while open: bytes still on disk
        # the link
        self.flows: list[tuple[float, int, int]] = []  # (service at which it ends, seq, shard)
        self.started: dict[int, float] = {}  # shard -> service at which it joined
        self.joined: dict[int, float] = {}  # shard -> time at which its first byte came
        self.service = 0.0  # bytes each active flow has received since the start
        self.clock = 0.0
        self.version = 0
        # tallies
        self.downloads = 0
        self.redownloads = 0
        self.bytes = 0
        self.evictions = 0
        self.peak_cache = 0
        self.peak_held = 0
        self.peak_entries = 0
        self.cache_series: list[tuple[float, int]] = [(0.0, 0)]

    # the link
    def _advance(self, now: float) -> None:
        if self.flows and now > self.clock:
            self.service += (now - self.clock) * self.sim.bandwidth / len(self.flows)
        self.clock = now

    def _reschedule(self) -> None:
        self.version += 1
        if self.flows:
            left = self.flows[0][0] - self.service
            when = self.clock + max(0.0, left) * len(self.flows) / self.sim.bandwidth
            self.sim.push(when, _NET, (self, self.version))

    def join(self, shard: int, now: float) -> None:
        self._advance(now)
        heapq.heappush(self.flows, (self.service + float(self.sim.size[shard]), self.sim.next_seq(), shard))
        self.started[shard] = self.service
        self.joined[shard] = now
        self._reschedule()

    def network(self, version: int, now: float) -> None:
        if version != self.version:
            return
        self._advance(now)
        done = []
        while self.flows and self.flows[0][0] <= self.service * (1 + 1e-12) + 1e-6:
            done.append(heapq.heappop(self.flows)[2])
        self._reschedule()
        for shard in done:
            self.arrived(shard, now)

    def _in_flight(self) -> int:
        return int(sum(self.service - self.started[s] for _, _, s in self.flows))

    def _note_cache(self, now: float) -> None:
        size = self.here_bytes + self._in_flight()
        self.peak_cache = max(self.peak_cache, size)
        self.peak_held = max(self.peak_held, size + sum(self.held_evicted.values()))
        self.peak_entries = max(self.peak_entries, self.usage)
        self.cache_series.append((now, size))

    # the cache
    def download(self, shard: int, now: float) -> None:
        """Reserve room and start fetching ``shard``."""
        self.state[shard] = _DOWN
        self.downloads += 1
        if shard in self.ever:
            self.redownloads += 1
        self.ever.add(shard)
        self.entries[shard] = int(self.sim.footprint[shard])
        self.usage += self.entries[shard]
        self.last_use[shard] = now
        if self.sim.limit is not None and self.usage > self.sim.limit:
            self._make_room(shard, now)
        self.sim.push(now + self.sim.latency, _JOIN, (self, shard))

    def _make_room(self, exclude: int, now: float) -> None:
        limit = self.sim.limit
        assert limit is not None
        order = sorted(
            (s for s in self.entries if s != exclude and self.state.get(s) == _HERE),
            key=self.last_use.__getitem__,
        )
        for readers_too in (False, True):
            for shard in order:
                if self.usage <= limit:
                    break
                if shard in self.entries and (readers_too or not self.open_count.get(shard)):
                    self._evict(shard)
        self._note_cache(now)

    def _evict(self, shard: int) -> None:
        kept = self.entries.pop(shard)
        self.usage -= kept
        self.here_bytes -= kept
        del self.state[shard]
        self.evictions += 1
        if self.open_count.get(shard):
            self.held_evicted[shard] = kept

    def arrived(self, shard: int, now: float) -> None:
        del self.started[shard]
        kept = int(self.sim.kept[shard])
        self.usage += kept - self.entries[shard]
        self.entries[shard] = kept
        self.here_bytes += kept
        self.state[shard] = _HERE
        self.last_use[shard] = now
        self.bytes += int(self.sim.size[shard])
        self.sim.download_log.append((self.joined.pop(shard), now, int(self.sim.size[shard])))
        if self.sim.limit is not None and self.usage > self.sim.limit:
            self._make_room(shard, now)  # what became evictable while it arrived
        self._note_cache(now)
        waiting = self.waiters.pop(shard, [])
        for worker in waiting:  # every waiter opens it before any of them makes room for its next download
            worker.finish(shard, now)
        for worker in waiting:
            worker.carry_on(now)

    def opened(self, shard: int, now: float) -> None:
        self.open_count[shard] = self.open_count.get(shard, 0) + 1
        if shard in self.entries:
            self.last_use[shard] = now

    def closed(self, shard: int, now: float) -> None:
        self.open_count[shard] -= 1
        if shard in self.entries:
            self.last_use[shard] = now
        elif not self.open_count[shard]:
            self.held_evicted.pop(shard, None)


_DOWN, _HERE = 1, 2
_NET, _JOIN, _STEP = 0, 1, 2


class _Worker:
    """One DataLoader worker process: its windows, requests, fetch threads and batches produced."""

    def __init__(self, sim: _Sim, node: _Node, reader: _Reader) -> None:
        self.sim, self.node, self.reader = sim, node, reader
        self.count = len(reader.shards)
        self.batches = len(reader.batch_samples)
        self.open: set[int] = set()
        self.jobs: set[int] = set()  # requested, not yet open
        self.queue: deque[int] = deque()
        self.running = 0
        self.position = 0  # next batch to produce
        self.begun = -1
        self.blocked_on: int | None = None
        self.waiting_for_room = False
        # bundles
        most = max(1, min(BUNDLE, int(BUNDLE_BYTES // max(sim.sample_bytes * sim.batch_size, 1))))
        if sim.workers == 0:
            most = 1
        ends, size, end = [], 1, 0
        while end < self.batches:
            end = min(end + size, self.batches)
            ends.append(end)
            size = min(2 * size, most)
        self.bundle_end = ends
        self.bundle_of = np.repeat(np.arange(len(ends)), np.diff([0, *ends])).tolist()
        self.bundle_ready: list[float | None] = [None] * len(ends)
        self.taken = 0
        # the current window
        self.window_start = -1
        self.need: list[int] = []
        self.first: list[int] = []
        self.requested = 0
        self.used: set[int] = set()
        self.last_use: list[tuple[int, int]] = []
        self.released = 0

    # fetching
    def request(self, shard: int) -> None:
        if shard not in self.open and shard not in self.jobs:
            self.jobs.add(shard)
            self.queue.append(shard)

    def pump(self, now: float) -> None:
        """Start queued jobs on free threads; a shard in the cache opens at once."""
        while self.queue and self.running < FETCH_THREADS:
            shard = self.queue.popleft()
            if shard not in self.jobs:
                continue  # released before its turn
            self.running += 1
            state = self.node.state.get(shard)
            if state == _HERE:
                self.finish(shard, now)
            else:
                self.node.waiters.setdefault(shard, []).append(self)
                if state is None:
                    self.node.download(shard, now)

    def finish(self, shard: int, now: float) -> None:
        """A fetch job ends: the shard is open."""
        self.running -= 1
        self.jobs.discard(shard)
        self.open.add(shard)
        self.node.opened(shard, now)

    def carry_on(self, now: float) -> None:
        """After a fetch job ended: start the next jobs, and go on making batches if it unblocked one."""
        self.pump(now)  # may open queued shards that are in the cache already
        if self.blocked_on is not None and self.blocked_on in self.open:
            self.produce(now)

    def release(self, shard: int, now: float) -> None:
        if shard in self.open:
            self.open.discard(shard)
            self.node.closed(shard, now)

    # windows
    def _new_window(self, start: int, now: float) -> None:
        sim = self.sim
        size = min(sim.window, self.count - start)
        seg = self.reader.shards[start : start + size + sim.lookahead]
        shards, first = np.unique(seg, return_index=True)
        order = np.argsort(first, kind="stable")
        self.need, self.first = shards[order].tolist(), first[order].tolist()
        used = set(shards[first < size].tolist())
        for shard in list(self.open):
            if shard not in used and shard not in self.used:
                self.release(shard, now)
        self.used = used
        self.window_start, self.requested, self.released = start, 0, 0
        if sim.limit is not None:
            back, from_end = np.unique(seg[::-1], return_index=True)
            last = len(seg) - 1 - from_end
            by_last = np.argsort(last, kind="stable")
            self.last_use = list(zip(last[by_last].tolist(), back[by_last].tolist(), strict=True))
        else:
            self.last_use = []

    def _begin(self, batch: int, now: float) -> None:
        sim = self.sim
        begin = batch * sim.batch_size
        if begin % sim.window == 0:
            self._new_window(begin, now)
        offset = begin - self.window_start
        k = self.released
        while k < len(self.last_use) and self.last_use[k][0] < offset:
            self.release(self.last_use[k][1], now)
            k += 1
        self.released = k
        horizon = offset + self.reader.batch_samples[batch] - 1 + sim.lookahead
        q, at_start = self.requested, self.requested
        while q < len(self.need) and (self.first[q] <= horizon or q == at_start):
            self.request(self.need[q])
            q += 1
        self.requested = q
        self.pump(now)

    def produce(self, now: float) -> None:
        """Make batches until one waits for a shard or for the trainer to take a bundle."""
        self.blocked_on = None
        reader = self.reader
        while self.position < self.batches:
            batch = self.position
            bundle = self.bundle_of[batch]
            if bundle >= self.taken + self.sim.prefetch:
                self.waiting_for_room = True
                return
            if self.begun != batch:
                self.begun = batch
                self._begin(batch, now)
            for shard in reader.batch_shards[reader.batch_ptr[batch] : reader.batch_ptr[batch + 1]]:
                if shard not in self.open:
                    self.request(shard)
                    self.pump(now)
                    if shard not in self.open:
                        self.blocked_on = shard
                        return
            self.position += 1
            if self.position == self.bundle_end[bundle]:
                self.bundle_ready[bundle] = now
                self.sim.bundle_ready(now)

    def take(self, bundle: int, now: float) -> None:
        self.taken = bundle + 1
        if self.waiting_for_room:
            self.waiting_for_room = False
            self.produce(now)


class _Sim:
    """One run of the event loop over the simulated nodes, for one cache limit."""

    def __init__(self, config: PlanConfig, shape: DatasetShape, traffic: _Traffic, limit: int | None) -> None:
        self.bandwidth = float(config.bandwidth)
        self.latency = float(config.latency)
        self.limit = limit
        self.batch_size = config.batch_size
        self.window = config.batch_size * max(1, WINDOW // config.batch_size)
        self.lookahead = config.lookahead
        self.workers = config.workers_per_rank
        self.prefetch = 1 if config.workers_per_rank == 0 else config.prefetch_factor
        self.size = shape.download_bytes
        self.footprint = shape.footprint_bytes
        self.kept = shape.kept_bytes
        self.sample_bytes = shape.total_kept_bytes / shape.num_samples
        self.step_time = (
            0.0 if config.samples_per_second is None else config.batch_size / config.samples_per_second
        )
        self.events: list[tuple[float, int, int, Any]] = []
        self.seq = 0
        self.download_log: list[tuple[float, float, int]] = []  # (first byte, last byte, bytes)
        self.nodes = [_Node(self, n) for n in range(config.nodes_to_simulate)]
        self.ranks: list[list[_Worker]] = []
        for reader in traffic.readers:
            if reader.worker == 0:
                self.ranks.append([])
            self.ranks[-1].append(_Worker(self, self.nodes[reader.node], reader))
        self.schedules = [self._schedule(workers) for workers in self.ranks]
        self.steps = max(len(s) for s in self.schedules)
        self.step = 0
        self.trainer_waiting = False
        self.step_log: list[tuple[float, int]] = []
        self.stall = 0.0
        self.longest_stall = 0.0
        self.wanted = 0.0
        self.end = 0.0

    @staticmethod
    def _schedule(workers: list[_Worker]) -> list[tuple[_Worker, int, int]]:
        """(worker, batch, samples) of each step of a rank: its workers' batches in turn."""
        out = []
        for batch in range(max(w.batches for w in workers)):
            out += [(w, batch, w.reader.batch_samples[batch]) for w in workers if batch < w.batches]
        return out

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def push(self, when: float, kind: int, payload: Any) -> None:
        heapq.heappush(self.events, (when, self.next_seq(), kind, payload))

    def bundle_ready(self, now: float) -> None:
        if self.trainer_waiting:
            self.trainer_waiting = False
            self.push(now, _STEP, None)

    def try_step(self, now: float) -> None:
        if self.step >= self.steps:
            return
        picks = [s[self.step] for s in self.schedules if self.step < len(s)]
        for worker, batch, _ in picks:
            if worker.bundle_ready[worker.bundle_of[batch]] is None:
                self.trainer_waiting = True
                return
        if self.step:
            waited = now - self.wanted
            self.stall += waited
            self.longest_stall = max(self.longest_stall, waited)
        self.step_log.append((now, sum(p[2] for p in picks)))
        self.step += 1
        for worker, batch, _ in picks:
            bundle = worker.bundle_of[batch]
            if batch == (worker.bundle_end[bundle - 1] if bundle else 0):
                worker.take(bundle, now)
        self.wanted = now + self.step_time
        self.push(self.wanted, _STEP, None)

    def run(self, start: float) -> float:
        for workers in self.ranks:
            for worker in workers:
                worker.produce(start)
        self.wanted = start
        self.push(start, _STEP, None)
        events = self.events
        while events:
            now, _, kind, payload = heapq.heappop(events)
            if kind == _STEP:
                self.try_step(now)
            elif kind == _NET:
                payload[0].network(payload[1], now)
            else:
                payload[0].join(payload[1], now)
        if self.step < self.steps:
            raise AssertionError(f"the simulation stopped at step {self.step} of {self.steps}")
        return self.step_log[-1][0] + self.step_time if self.step_log else start


# -- the plan -------------------------------------------------------------------------------------------


def _accepted_limit(config: PlanConfig, shape: DatasetShape) -> int:
    """The smallest ``cache_limit`` that ``StreamingDataset`` accepts (its README: per rank of the node, one
    shard being read plus those fetched ahead for ``predownload``, at the largest shard's footprint)."""
    fewest = max(1, int(shape.samples.min()))
    ahead = min(FETCH_THREADS, math.ceil(config.lookahead / fewest))
    return config.ranks_per_node * (1 + ahead) * int(shape.footprint_bytes.max())


def _simulate(config: PlanConfig, shape: DatasetShape, traffic: _Traffic, limit: int | None) -> _Sim:
    sim = _Sim(config, shape, traffic, limit)
    start = config.startup_seconds + 2 * config.latency + shape.index_bytes / config.bandwidth
    sim.end = sim.run(start)
    return sim


def _search_limit(
    config: PlanConfig, shape: DatasetShape, traffic: _Traffic, free: _Sim, accepted: int
) -> int | None:
    """The smallest limit (to 2%) at which the epoch is within 5% of its unlimited time and downloads."""
    target_time = free.end * 1.05
    target_bytes = sum(n.bytes for n in free.nodes) * 1.05
    low, high = accepted, max(accepted, max(n.peak_entries for n in free.nodes))

    def fine(limit: int) -> bool:
        sim = _simulate(config, shape, traffic, limit)
        return sim.end <= target_time and sum(n.bytes for n in sim.nodes) <= target_bytes

    if fine(low):
        return low
    while high - low > max(1, high // 50):
        middle = (low + high) // 2
        if fine(middle):
            high = middle
        else:
            low = middle
    return high


def _binned(
    times: list[float], values: list[float], end: float, bins: int
) -> tuple[list[float], list[float]]:
    edges = np.linspace(0.0, max(end, 1e-9), bins + 1)
    sums, _ = np.histogram(times, bins=edges, weights=values)
    width = edges[1] - edges[0]
    return edges[:-1].round(6).tolist(), (sums / width).tolist()


def _spread(log: list[tuple[float, float, int]], end: float, bins: int) -> list[float]:
    """Bytes per second in each bin, each download's bytes spread evenly over its transfer."""
    edges = np.linspace(0.0, max(end, 1e-9), bins + 1)
    if not log:
        return [0.0] * bins
    first, last, size = (np.array(column, dtype=np.float64) for column in zip(*log, strict=True))
    cumulative = np.zeros(bins + 1)
    for begin in range(0, len(first), 4096):  # bounded memory: 4096 downloads x the edges at a time
        part = slice(begin, begin + 4096)
        share = (edges[None, :] - first[part, None]) / np.maximum(last[part] - first[part], 1e-9)[:, None]
        cumulative += (np.clip(share, 0.0, 1.0) * size[part, None]).sum(axis=0)
    return (np.diff(cumulative) / (edges[1] - edges[0])).tolist()


def _cache_steps(series: list[tuple[float, int]], end: float, bins: int) -> list[float]:
    """The cache's largest size in each bin (its size when the bin began, or any recorded within it)."""
    times = np.array([t for t, _ in series])
    values = np.array([v for _, v in series], dtype=np.float64)
    edges = np.linspace(0.0, max(end, 1e-9), bins + 1)
    at_start = values[np.maximum(np.searchsorted(times, edges[:-1], side="right") - 1, 0)]
    inside = np.searchsorted(edges, times, side="right") - 1
    peaks = at_start.copy()
    np.maximum.at(peaks, np.clip(inside, 0, bins - 1), values)
    return peaks.tolist()


def _shuffle_quality(ids: NDArray[np.int64], shape: DatasetShape) -> dict[str, Any]:
    """How far apart neighbouring samples of a rank's training order were written."""
    if len(ids) < 2:
        return {"median_neighbour_distance": None, "same_shard_fraction": None, "vs_random": None}
    ids = ids[:4_000_001]
    distance = np.abs(np.diff(ids))
    shards = shape.shard_of(ids)
    median = float(np.median(distance))
    return {
        "median_neighbour_distance": median,
        "same_shard_fraction": float(np.mean(shards[1:] == shards[:-1])),
        "vs_random": median / (_RANDOM_MEDIAN * shape.num_samples),
    }


def plan_epoch(
    shape: DatasetShape,
    config: PlanConfig,
    bins: int = 200,
) -> Plan:
    """Simulate one epoch of ``config`` over ``shape`` and summarise it (see the module's docstring).

    Raises:
        PlanInputError: A setting the library's order or cache would refuse (the message names it).
    """
    began = time.perf_counter()
    accepted = _accepted_limit(config, shape)
    if config.cache_limit is not None and config.cache_limit < accepted:
        raise PlanInputError(
            f"cache_limit={config.cache_limit:,} bytes is below the smallest that StreamingDataset accepts "
            f"for this run, {accepted:,} bytes ({config.ranks_per_node} rank(s) x (1 shard read + the shards "
            f"fetched ahead for predownload={config.lookahead}) x the largest shard's "
            f"{int(shape.footprint_bytes.max()):,} "
            "bytes): raise cache_limit or lower predownload"
        )
    traffic = _locate(config, shape)
    located = time.perf_counter()
    sim = _simulate(config, shape, traffic, config.cache_limit)
    end = sim.end
    simulated = len(sim.nodes)
    notes = []
    if simulated < config.nodes:
        notes.append(
            f"simulated {simulated} representative node(s) of {config.nodes} "
            f"({config.ranks_per_node} ranks x "
            f"{max(1, config.workers_per_rank)} workers each); nodes read alike, each its own share of the "
            "samples through its own link and cache: world totals are per-node figures times the nodes"
        )
    search = config.search_limit
    if search is None:
        search = sum(len(r.shards) for r in traffic.readers) / simulated <= SEARCH_SAMPLES
    full_speed = None
    if search:
        free = sim if config.cache_limit is None else _simulate(config, shape, traffic, None)
        full_speed = _search_limit(config, shape, traffic, free, accepted)
    else:
        notes.append("the smallest full-speed cache limit was not searched for (search_limit / --find-limit)")
    node_samples = sum(len(r.shards) for r in traffic.readers) / simulated
    downloaded = [n.bytes for n in sim.nodes]
    consumed_t = [t for t, _ in sim.step_log]
    consumed_n = [float(n) for _, n in sim.step_log]
    scale = config.nodes / simulated
    times, throughput = _binned(consumed_t, consumed_n, end, bins)
    download_rate = _spread(sim.download_log, end, bins)
    summary = {
        "epoch_seconds": end,
        "time_to_first_batch_seconds": sim.step_log[0][0] if sim.step_log else None,
        "stall_seconds": sim.stall,
        "stall_fraction": sim.stall / end if end else 0.0,
        "longest_stall_seconds": sim.longest_stall,
        "steps": sim.steps,
        "samples_per_node": node_samples,
        "throughput_samples_per_second": node_samples * config.nodes / end if end else None,
        "downloaded_bytes_per_node": float(np.mean(downloaded)),
        "downloaded_bytes": float(np.sum(downloaded) * scale),
        "downloads_per_node": float(np.mean([n.downloads for n in sim.nodes])),
        "redownloads_per_node": float(np.mean([n.redownloads for n in sim.nodes])),
        "evictions_per_node": float(np.mean([n.evictions for n in sim.nodes])),
        "network_busy_fraction": float(np.mean(downloaded)) / (config.bandwidth * end) if end else 0.0,
        "peak_cache_bytes": max(n.peak_cache for n in sim.nodes),
        "peak_cache_held_bytes": max(n.peak_held for n in sim.nodes),
        "peak_cache_entries_bytes": max(n.peak_entries for n in sim.nodes),
        "cache_limit": config.cache_limit,
        "smallest_accepted_cache_limit": accepted,
        "smallest_full_speed_cache_limit": full_speed,
        "shuffle_quality": _shuffle_quality(traffic.rank_ids, shape),
        "simulated_nodes": simulated,
        "plan_seconds": 0.0,
    }
    summary["plan_seconds"] = time.perf_counter() - began
    logger.debug(
        "located the order in %.2f s, simulated in %.2f s", located - began, time.perf_counter() - located
    )
    timeline = {
        "time_seconds": times,
        "throughput_samples_per_second": [v * scale for v in throughput],
        "download_bytes_per_second_per_node": [v / simulated for v in download_rate],
        "cache_bytes": _cache_steps(sim.nodes[0].cache_series, end, bins),
    }
    return Plan(replace(config), shape.describe(), summary, timeline, notes)
