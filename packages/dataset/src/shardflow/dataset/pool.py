"""The shards one process has open, shared by every thread that reads them: a pool with user counts.

A :class:`ShardPool` owns a process's open readers (each a map of a cached shard), their per-sample
getters, the cache's use locks held while they are open, the background fetcher and the least-recently-used
set of shards that random reads keep open. Readers are counted by *users*: an iteration holds the shards it
reads through a :class:`ShardLease`, and random reads hold theirs while among the last ones used. A shard is
unmapped when its last user lets it go, never while another thread reads it, so loader threads may share
one pool. One lock guards the table; reads of an open shard take no lock.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from shardflow.dataset._fetch import ShardFetcher
from shardflow.format import ShardInfo, ShardLocator, ShardReader

if TYPE_CHECKING:
    from shardflow.dataset.cache import NodeCache
    from shardflow.dataset.stream import Stream

__all__ = ["FETCH_THREADS", "ShardLease", "ShardPool", "open_shards_cap"]

logger = logging.getLogger(__name__)

FETCH_THREADS = 8
"""Shards a process fetches at once in the background."""

_pools: weakref.WeakSet[ShardPool] = weakref.WeakSet()


def open_shards_cap() -> int:
    """How many shards random reads keep open in a process: a quarter of its open-file limit (each open
    shard holds a descriptor), at least 16."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft // 4) if soft != resource.RLIM_INFINITY else 1 << 16


def _new_locks_after_fork() -> None:
    """A forked child's pools get fresh locks (another thread of the parent may have held one)."""
    for pool in list(_pools):
        pool._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)


class ShardPool:
    """A process's open shards of one dataset, fetched on demand and shared by its threads.

    Args:
        shards: The dataset's shards, in order (a sample's global id counts through them).
        streams: The dataset's streams.
        shard_stream: The index in ``streams`` of each shard's stream.
        cache: The node cache the streams download into (its use locks, its touches).
        random_cap: How many shards random reads keep open (see :meth:`recent_reader`).
    """

    def __init__(
        self,
        shards: Sequence[ShardInfo],
        streams: Sequence[Stream],
        shard_stream: Sequence[int],
        cache: NodeCache,
        random_cap: int,
    ) -> None:
        self.shards = tuple(shards)
        self.streams = list(streams)
        self.shard_stream = list(shard_stream)
        self.cache = cache
        self.random_cap = random_cap
        self.locator = ShardLocator(np.array([shard.samples for shard in self.shards], np.int64))
        self._fetcher = ShardFetcher(FETCH_THREADS)
        self._reset()

    def _reset(self) -> None:
        count = len(self.shards)
        self.readers: list[ShardReader | None] = [None] * count
        """Each shard's open reader, or None; read it without the lock only for a shard one holds."""
        self.getters: list[Callable[[int], Any] | None] = [None] * count
        """Each open shard's unchecked per-sample getter once asked for (see :meth:`getter`)."""
        self._users = [0] * count
        self._holds: dict[int, int | None] = {}
        self._recent: OrderedDict[int, None] = OrderedDict()  # shards random reads hold, oldest first
        self._lock = threading.Lock()
        _pools.add(self)

    @property
    def release_early(self) -> bool:
        """Whether iterations let go of a shard as soon as they no longer read it (under a cache limit, so
        that a shard evicted while open frees its disk blocks soon), not only when idle for a window."""
        return self.cache.limit is not None

    def locate(self, ids: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``(shard, index in shard)`` of each global sample id."""
        return self.locator.locate(ids)  # type: ignore[no-any-return]

    def open_shards(self) -> list[int]:
        """The shards open (mapped) now."""
        return [k for k, reader in enumerate(self.readers) if reader is not None]

    def lease(self) -> ShardLease:
        """A new user's hold on shards (one iteration's)."""
        return ShardLease(self)

    # -- reading (the caller holds the shard) ---------------------------------------------------------

    def reader(self, shard: int) -> ShardReader:
        """The open reader of a shard the caller holds, fetching it first (or waiting for its fetch)."""
        reader = self.readers[shard]
        while reader is None:
            if not self._users[shard]:
                raise RuntimeError(
                    f"shard {shard} ({self.shards[shard].basename}) read without a hold: take one first "
                    "(a ShardLease's request, or recent_reader), or it is closed as soon as it opens"
                )
            stream = self.streams[self.shard_stream[shard]]
            self._fetcher.wait(
                shard,
                lambda: self._open(shard),
                2 * stream.wait_timeout,  # a wait for another's download, then one's own
                stream.describe(self.shards[shard].basename),
            )
            reader = self.readers[shard]  # None only if a release raced the fetch: fetch again
        return reader

    def getter(self, shard: int) -> Callable[[int], Any]:
        """The unchecked per-sample getter of a shard the caller holds (kept in :attr:`getters`)."""
        get = self.reader(shard).sample_getter()
        self.getters[shard] = get
        return get

    def recent_reader(self, shard: int) -> ShardReader:
        """The reader of a shard for random reads (``dataset[i]``, the trainer's copies of spans): held while
        among the last :attr:`random_cap` shards read this way, then let go."""
        recent = self._recent
        if shard in recent:  # a hit needs no lock: the dict's one call is atomic, and a miss is retried
            try:
                recent.move_to_end(shard)
            except KeyError:  # let go of by another thread meanwhile
                pass
            else:
                reader = self.readers[shard]
                if reader is not None:
                    return reader
        with self._lock:
            recent = self._recent
            if shard in recent:
                recent.move_to_end(shard)
                closing = []
            else:
                recent[shard] = None
                self._users[shard] += 1
                excess = len(recent) - self.random_cap
                closing = [self._drop(recent.popitem(last=False)[0]) for _ in range(excess)]
        self._close(closing)
        return self.reader(shard)

    def fetch(self, shard: int) -> None:
        """Start fetching (and opening, every page mapped) a shard in the background unless it is open."""
        if self.readers[shard] is None:
            self._fetcher.request(shard, lambda: self._open(shard, whole=True))

    def release(self, shard: int) -> None:
        """Let go of the random reads' hold on a shard; it is unmapped unless an iteration reads it."""
        with self._lock:
            held = shard in self._recent
            if held:
                del self._recent[shard]
            closing = [self._drop(shard)] if held else []
        self._close(closing)

    # -- the table ------------------------------------------------------------------------------------

    def _use(self, shard: int) -> None:
        with self._lock:
            self._users[shard] += 1

    def _let_go(self, shards: Iterable[int]) -> None:
        with self._lock:
            closing = [self._drop(k) for k in shards]
        self._close(closing)

    def _drop(self, shard: int) -> tuple[int, ShardReader | None, int | None]:
        """Under the lock: one user less; when none is left, take the shard out of the table, to close."""
        self._users[shard] -= 1
        if self._users[shard]:
            return shard, None, None
        reader = self.readers[shard]
        self.readers[shard] = None
        self.getters[shard] = None
        if reader is None:
            self._fetcher.cancel(shard)
            return shard, None, None
        self._fetcher.forget(shard)
        return shard, reader, self._holds.pop(shard, None)

    def _close(self, closing: list[tuple[int, ShardReader | None, int | None]]) -> None:
        """Unmap the shards :meth:`_drop` took out (outside the lock), release their use locks, note their
        use for the cache's eviction order."""
        for shard, reader, hold in closing:
            if reader is None:
                continue
            reader.close()
            self.cache.let_go(hold)
            stream = self.streams[self.shard_stream[shard]]
            self.cache.touch(stream.local_root, self.shards[shard].basename)

    def _open(self, shard: int, whole: bool = False) -> None:
        """Fetch job: make the shard local and open it (in a fetch thread); ``whole`` when most of it will
        be read, so that its pages are mapped now, in this thread, not at first touch.

        Under a cache limit the shard's use lock is held from before its fetch until it is closed, so that
        eviction passes it over. A shard that lost its last user meanwhile is closed again at once.
        """
        if self.readers[shard] is not None:
            return
        stream = self.streams[self.shard_stream[shard]]
        info = self.shards[shard]
        hold = self.cache.hold(stream.local_root, info.basename, stream.describe(info.basename))
        try:
            reader = stream.open_shard(info, self.cache, whole)
        except BaseException:
            self.cache.let_go(hold)
            raise
        self.cache.touch(stream.local_root, info.basename)
        with self._lock:
            wanted = self._users[shard] > 0 and self.readers[shard] is None
            if wanted:
                self._holds[shard] = hold
                self.readers[shard] = reader
        if not wanted:
            reader.close()
            self.cache.let_go(hold)

    def __getstate__(self) -> dict[str, Any]:
        """A copy holds nothing open: it opens shards in the process that unpickles it."""
        keep = ("shards", "streams", "shard_stream", "cache", "random_cap", "locator", "_fetcher")
        return {name: self.__dict__[name] for name in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()


class ShardLease:
    """One iteration's hold on shards of a :class:`ShardPool`: those it requested and has not let go of."""

    def __init__(self, pool: ShardPool) -> None:
        self.pool = pool
        self.held: set[int] = set()

    def request(self, shard: int) -> None:
        """Hold a shard and start fetching it in the background unless it is open."""
        if shard not in self.held:
            self.held.add(shard)
            self.pool._use(shard)
        self.pool.fetch(shard)

    def let_go(self, shards: Iterable[int]) -> None:
        """Stop holding ``shards`` (those held); each is unmapped once no other user holds it."""
        dropped = [k for k in shards if k in self.held]
        self.held.difference_update(dropped)
        self.pool._let_go(dropped)

    def keep_only(self, keep: set[int]) -> None:
        """Let go of every held shard not in ``keep``."""
        self.let_go([k for k in self.held if k not in keep])

    def close(self) -> None:
        """Let go of every held shard (the iteration ended)."""
        self.let_go(list(self.held))
