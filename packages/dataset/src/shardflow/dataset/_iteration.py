"""One worker's epoch, read window by window: shards fetched ahead of first need, released once idle.

The worker's ids arrive in chunks from shardflow.shuffle and are located (shard, index in shard) a window
at a time, so a worker's memory stays O(window) whatever the dataset's size. Within a window, each shard
is requested from the fetch threads ``predownload`` samples before its first use; at each window's start,
shards used neither in the previous window nor in this one are released (unmapped): they reopen, without
a download, if needed again. Under a cache limit a shard is also released as soon as the rest of its
window (and look-ahead) no longer uses it, so that one evicted while open frees its blocks soon.

An iteration reads through a :class:`~shardflow.dataset.pool.ShardPool`, holding its shards with a lease,
so several iterations (loader threads) may share one pool; it knows nothing of the dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shardflow.dataset._collate import gather_batch, read_batch
from shardflow.dataset.pool import ShardLease, ShardPool
from shardflow.format import Capability, ShardInfo

__all__ = ["iter_samples", "iter_batches", "ItemGroups", "WINDOW"]

WINDOW = 16_384
"""Sample ids located at a time."""

BULK = 4_096
"""Samples decoded at once, as whole columns, when every shard is an MDS shard of the same columns. An
iteration starts with 64 and doubles up to this, so its first sample waits only for its first shards."""


@dataclass(frozen=True)
class ItemGroups:
    """Reads samples ``size`` at a time: ``read(item, ids)`` returns ``[item(i) for i in ids]``, in order,
    however it spreads the calls (e.g. over a pool of threads), and returns only once none still runs."""

    read: Callable[[Callable[[int], Any], list[int]], list[Any]]
    size: int


class _Window:
    """The located ids of one window, and when each of its shards (and the look-ahead's) is first needed."""

    def __init__(self, lease: ShardLease, ids: NDArray[np.int64], size: int, ahead: int) -> None:
        self.lease = lease
        self.ids = ids[:size]
        shard_ids, local_ids = lease.pool.locate(ids)
        self.shard_ids, self.local_ids = shard_ids[:size], local_ids[:size]
        shards, first = np.unique(shard_ids, return_index=True)
        order = np.argsort(first, kind="stable")
        self.need: list[int] = shards[order].tolist()
        self.first: list[int] = first[order].tolist()
        self.used = set(shards[first < size].tolist())
        self.ahead = ahead
        self.size = size
        self._requested = 0
        self._last_use: list[tuple[int, int]] = []  # (last position, shard), by position: with a limit
        if lease.pool.release_early:
            backwards, first_from_end = np.unique(shard_ids[::-1], return_index=True)
            last = len(shard_ids) - 1 - first_from_end
            order = np.argsort(last, kind="stable")
            self._last_use = list(zip(last[order].tolist(), backwards[order].tolist(), strict=True))
        self._released = 0

    def release_done(self, position: int) -> None:
        """Under a cache limit, release the shards not used from ``position`` on in this window and its
        look-ahead, so that a shard evicted while open frees its disk blocks soon; they reopen if needed."""
        done, k = self._last_use, self._released
        while k < len(done) and done[k][0] < position:
            k += 1
        if k > self._released:
            self.lease.let_go([shard for _, shard in done[self._released : k]])
        self._released = k

    def advance(self, position: int) -> int:
        """Request the shards first needed up to ``position + predownload`` (at least the next one); return
        the next position (> ``position``) at which to call again."""
        q, need, first = self._requested, self.need, self.first
        horizon = position + self.ahead
        while q < len(need) and (first[q] <= horizon or q == self._requested):
            self.lease.request(need[q])
            q += 1
        self._requested = q
        return max(position + 1, first[q] - self.ahead) if q < len(need) else self.size


def _id_windows(
    chunks: Iterator[NDArray[np.int64]], window: int, ahead: int
) -> Iterator[tuple[NDArray[np.int64], int]]:
    """``(ids, size)``: consecutive windows of ``size`` ids (``window``, the last one shorter), each followed
    by up to ``ahead`` of the next ids; padding (``-1``) removed."""
    buffer = np.empty(0, np.int64)
    exhausted = False
    while True:
        while not exhausted and len(buffer) < window + ahead:
            chunk = next(chunks, None)
            if chunk is None:
                exhausted = True
            else:
                buffer = np.concatenate([buffer, chunk[chunk >= 0]])
        if not len(buffer):
            return
        size = min(window, len(buffer))
        yield buffer[: size + ahead], size
        buffer = buffer[size:]


def _windows(
    pool: ShardPool, chunks: Iterator[NDArray[np.int64]], window: int, ahead: int
) -> Iterator[_Window]:
    """The windows of the ids; the shards idle for a window are let go of between them, and every shard
    held at the end (their fetches cancelled unless another user holds them)."""
    previous: set[int] = set()
    lease = pool.lease()
    try:
        for ids, size in _id_windows(chunks, window, ahead):
            current = _Window(lease, ids, size, ahead)
            lease.keep_only(previous | current.used)
            yield current
            previous = current.used
    finally:
        lease.close()


def _bulk_columns(shards: tuple[ShardInfo, ...]) -> list[tuple[str, bool]] | None:
    """``(name, decodes to Python ints)`` per column when every shard's format reads whole columns
    (``Capability.COLUMNS``) and the shards have the same columns and encodings, so samples can be cut
    from whole columns; else None."""
    first = shards[0]
    columns = list(first.columns.items())
    for shard in shards:
        if Capability.COLUMNS not in shard.capabilities or list(shard.columns.items()) != columns:
            return None
    return [(name, encoding == "int") for name, encoding in columns]


def _sample_maker(names: list[str]) -> Callable[..., dict[str, Any]]:
    """A function of one value per column that returns the sample's dict, built by a dict display (the
    fastest way Python makes a dict of known keys). The names enter its source only as ``repr`` literals."""
    params = ", ".join(f"v{k}" for k in range(len(names)))
    items = ", ".join(f"{name!r}: v{k}" for k, name in enumerate(names))
    return eval(f"lambda {params}: {{{items}}}")  # type: ignore[no-any-return]  # noqa: S307


def _bulk_batches(
    pool: ShardPool, chunks: Iterator[NDArray[np.int64]], ahead: int, columns: list[tuple[str, bool]]
) -> Iterator[list[dict[str, Any]]]:
    """The samples in lists of up to ``BULK``: each column gathered whole (see ``gather_batch``), then cut
    into the samples' values (numpy scalars and array rows, or Python ints for ``int`` columns, as the
    per-sample decode; other columns come decoded already)."""
    make = _sample_maker([name for name, _ in columns])
    step = 64
    for window in _windows(pool, chunks, WINDOW, ahead):
        begin = 0
        while begin < window.size:
            end = min(begin + step, window.size)
            window.release_done(begin)
            window.advance(end - 1)
            _, arrays, lists, _ = gather_batch(pool, window.shard_ids[begin:end], window.local_ids[begin:end])
            values = [
                lists[name] if name not in arrays else arrays[name].tolist() if python else iter(arrays[name])
                for name, python in columns
            ]
            yield list(map(make, *values))
            begin, step = end, min(2 * step, BULK)


def iter_samples(
    pool: ShardPool,
    chunks: Iterator[NDArray[np.int64]],
    ahead: int,
    item: Callable[[int], Any] | None = None,
    groups: ItemGroups | None = None,
) -> Iterator[Any]:
    """The samples of the ids in order, fetching shards ``ahead`` samples before their first use; each read
    by ``item(id)`` when given (a dataset subclass's own ``__getitem__``), else straight from the shard;
    with ``groups`` too, ``item`` is called a group at a time through it.

    Without ``item``, on MDS shards of one set of columns, samples are made a list at a time and handed out
    by ``itertools.chain`` (no Python frame runs per sample)."""
    if item is not None and groups is not None:
        return chain.from_iterable(_item_groups(pool, chunks, ahead, item, groups))
    bulk = _bulk_columns(pool.shards) if item is None else None
    if bulk is not None:
        return chain.from_iterable(_bulk_batches(pool, chunks, ahead, bulk))
    return _iter_one_by_one(pool, chunks, ahead, item)


def _item_groups(
    pool: ShardPool,
    chunks: Iterator[NDArray[np.int64]],
    ahead: int,
    item: Callable[[int], Any],
    groups: ItemGroups,
) -> Iterator[list[Any]]:
    """The samples ``item(id)`` in lists of ``groups.size``, each read through ``groups.read`` while its
    shards are held."""
    size = groups.size
    for window in _windows(pool, chunks, size * max(1, WINDOW // size), ahead):
        for begin in range(0, window.size, size):
            end = min(begin + size, window.size)
            window.release_done(begin)
            window.advance(end - 1)
            yield groups.read(item, window.ids[begin:end].tolist())


def _iter_one_by_one(
    pool: ShardPool, chunks: Iterator[NDArray[np.int64]], ahead: int, item: Callable[[int], Any] | None
) -> Iterator[Any]:
    """The samples of the ids, one ``get`` (or ``item(id)``) at a time."""
    getters = pool.getters
    for window in _windows(pool, chunks, WINDOW, ahead):
        shard_list, local_list = window.shard_ids.tolist(), window.local_ids.tolist()
        position = 0
        while position < window.size:
            window.release_done(position)
            stop = min(window.advance(position), window.size)
            if item is None:
                for k, j in zip(shard_list[position:stop], local_list[position:stop], strict=True):
                    get = getters[k]
                    if get is None:
                        get = pool.getter(k)
                    yield get(j)
            else:
                for i in window.ids[position:stop].tolist():
                    yield item(i)
            position = stop


def iter_batches(
    pool: ShardPool,
    chunks: Iterator[NDArray[np.int64]],
    ahead: int,
    batch_size: int,
    drop_last: bool,
    spans: bool = False,
) -> Iterator[dict[str, Any]]:
    """The samples of the ids as batches of ``batch_size`` (the last one partial unless ``drop_last``),
    fetching shards ``ahead`` samples before their first use; with ``spans``, ``bytes`` columns come as
    where their values lie (see ``read_batch``)."""
    for window in _windows(pool, chunks, batch_size * max(1, WINDOW // batch_size), ahead):
        for begin in range(0, window.size, batch_size):
            end = min(begin + batch_size, window.size)
            if end - begin < batch_size and drop_last:
                return
            window.release_done(begin)
            window.advance(end - 1)
            yield read_batch(pool, window.shard_ids[begin:end], window.local_ids[begin:end], spans)
