"""Stream mixing: per-stream weights, and which samples of each shard an epoch draws.

Semantics are mosaicml-streaming's: a stream takes at most one of ``proportion`` (relative; then
``epoch_size`` sets the total), ``repeat`` or ``choose`` (absolute). A stream drawn ``choose`` times from
``n`` samples takes every sample ``choose // n`` times, and the rest, ``choose % n``, is spread over its
shards by picking granules of ``sampling_granularity`` samples of one shard at a time in random order.
Within a shard, a partial repeat is a random subset of its samples. As in the reference,
``sampling_method="balanced"`` redraws those subsets every epoch, and how many samples each shard gives
too when shuffling; ``"fixed"`` keeps both for the whole run. Every draw is the reference's, from the
same numpy generators in the same sequence (``default_rng(seed)`` for the rounding of proportions,
``default_rng(seed + epoch)`` or ``default_rng(seed)`` for picks and subsets), so the same arguments
resample exactly as mosaicml-streaming 0.13 does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shardflow.shuffle._checks import as_sizes, check_non_negative, check_positive, is_integer
from shardflow.shuffle._kernels import UnitMap
from shardflow.shuffle.errors import ShuffleError

__all__ = [
    "SAMPLING_METHODS",
    "StreamWeights",
    "resolve_stream_weights",
    "get_sampling",
    "EpochUnits",
    "epoch_units",
]

SAMPLING_METHODS = ("balanced", "fixed")
_EMPTY = np.empty(0, np.int64)


@dataclass(frozen=True, eq=False)
class StreamWeights:
    """Each stream's resolved weight, as the reference stores on its ``Stream`` objects.

    Attributes:
        proportion: Share of the epoch drawn from each stream.
        repeat: Times each stream's samples are drawn per epoch (may be fractional).
        choose: Samples drawn from each stream per epoch.
        epoch_size: Samples per epoch, ``choose.sum()``.
    """

    proportion: NDArray[np.float64]
    repeat: NDArray[np.float64]
    choose: NDArray[np.int64]
    epoch_size: int


def _weights(name: str, values: Sequence[float | None] | None, count: int) -> list[float | None]:
    if values is None:
        return [None] * count
    values = list(values)
    if len(values) != count:
        raise ShuffleError(
            f"{name} has {len(values)} entries for {count} streams: give one per stream (None where unset)"
        )
    for stream, value in enumerate(values):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.number))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ShuffleError(f"{name} of stream {stream} is {value!r}: it must be a non-negative number")
    return values


def _spread_shortfall(choose: NDArray[np.int64], total: int, seed: int) -> NDArray[np.int64]:
    """Add the samples lost to rounding down, one each to streams drawn without replacement."""
    shortfall = total - int(choose.sum())
    if shortfall < 0:
        raise ShuffleError(
            f"the proportions round to {int(choose.sum())} samples, more than the epoch's {total}: "
            f"give proportions that add up to a finite positive number"
        )
    picked = np.random.default_rng(seed).choice(choose.shape[0], shortfall, replace=False)
    choose[picked] += 1
    return choose


def resolve_stream_weights(
    samples_per_stream: ArrayLike,
    proportion: Sequence[float | None] | None = None,
    repeat: Sequence[float | None] | None = None,
    choose: Sequence[int | None] | None = None,
    epoch_size: int | None = None,
    seed: int = 9176,
) -> StreamWeights:
    """Derive every stream's proportion, repeat and choose from whichever one each stream was given.

    Args:
        samples_per_stream: Underlying samples of each stream.
        proportion: Per stream, its share of the epoch, or None; all streams or none must have one.
        repeat: Per stream, how many times to draw its samples, or None.
        choose: Per stream, how many samples to draw, or None.
        epoch_size: Total samples per epoch; only with proportions or with no weights at all (then
            streams are drawn in proportion to their size).
        seed: Seed of the random rounding of proportions (the run's ``shuffle_seed``).

    Returns:
        The resolved weights; ``epoch_size`` is the sum of ``choose``.

    Raises:
        ShuffleError: a stream without samples, a stream with two weights, proportions mixed with
            absolute weights, ``epoch_size`` with absolute weights, or an epoch with no samples.
    """
    samples = as_sizes("samples_per_stream", samples_per_stream)
    count = samples.shape[0]
    if not count:
        raise ShuffleError("samples_per_stream is empty: give at least one stream")
    empty = np.flatnonzero(samples == 0)
    if empty.size:
        raise ShuffleError(
            f"stream {empty[0]} has no samples: check its index.json and split, or leave it out"
        )
    check_non_negative("shuffle_seed", seed)
    proportions = _weights("proportion", proportion, count)
    repeats = _weights("repeat", repeat, count)
    chooses = _weights("choose", choose, count)
    for stream in range(count):
        given = [
            name
            for name, values in (("proportion", proportions), ("repeat", repeats), ("choose", chooses))
            if values[stream] is not None
        ]
        if len(given) > 1:
            raise ShuffleError(
                f"stream {stream} sets {' and '.join(given)}: give at most one of proportion, "
                f"repeat or choose"
            )
        if (proportions[stream] is None) != (proportions[0] is None):
            raise ShuffleError(
                f"stream {stream} {'lacks' if proportions[stream] is None else 'sets'} a proportion "
                f"and stream 0 does not: relative (proportion) and absolute (repeat, choose, "
                f"none) weights cannot be mixed"
            )
    if epoch_size is not None and (not is_integer(epoch_size) or epoch_size < 1):
        raise ShuffleError(
            f"epoch_size={epoch_size!r}: it must be a positive integer (or None for the size of the data)"
        )
    unspecified = all(value is None for value in (*proportions, *repeats, *chooses))
    relative = proportions[0] is not None or (unspecified and epoch_size is not None)
    if relative:
        total = int(samples.sum()) if epoch_size is None else int(epoch_size)
        shares = np.array(proportions if proportions[0] is not None else samples, np.float64)
        if shares.sum() <= 0:
            raise ShuffleError("every stream's proportion is 0: at least one must be positive")
        shares /= shares.sum()
        picks = _spread_shortfall((total * shares).astype(np.int64), total, seed)
    else:
        if epoch_size is not None:
            raise ShuffleError(
                f"epoch_size={epoch_size} only applies to streams weighted by proportion (or not "
                f"weighted at all); with repeat or choose the epoch size is their sum"
            )
        picks = samples.copy()
        for stream, (chosen, repeated) in enumerate(zip(chooses, repeats, strict=True)):
            if chosen is not None:
                picks[stream] = int(chosen)
            elif repeated is not None:
                picks[stream] = int(repeated * samples[stream])
    if picks.sum() < 1:
        raise ShuffleError(
            f"the weights draw no samples at all (choose per stream: {picks.tolist()}): give a "
            f"positive weight to at least one stream"
        )
    return StreamWeights(
        shares if relative else picks / picks.sum(), picks / samples, picks, int(picks.sum())
    )


def _choose_per_shard(
    samples_per_shard: NDArray[np.int64], choose: int, granularity: int, seed: int
) -> NDArray[np.int64]:
    """The reference's draw: whole repeats, then granules of shards in ``permutation`` order of ``seed``."""
    total = int(samples_per_shard.sum())
    if not choose % total:
        return samples_per_shard * (choose // total)
    granules = (samples_per_shard + granularity - 1) // granularity
    shard_of = np.repeat(np.arange(samples_per_shard.shape[0]), granules)
    size_of = np.full(shard_of.shape[0], granularity, np.int64)
    size_of[np.cumsum(granules) - 1] = samples_per_shard - (granules - 1) * granularity
    order = np.random.default_rng(seed).permutation(shard_of.shape[0])
    rest = choose % total
    taken = size_of[order]
    reached = np.cumsum(taken)
    last = int(np.searchsorted(reached, rest))  # the granule that completes ``rest``
    taken = taken[: last + 1].copy()
    taken[last] -= int(reached[last]) - rest
    out = samples_per_shard * (choose // total)
    np.add.at(out, shard_of[order[: last + 1]], taken)
    return out


def get_sampling(
    samples_per_shard: ArrayLike, choose: int, granularity: int, seed: int, epoch: int, use_epoch: bool
) -> NDArray[np.int64]:
    """How many samples to draw from each shard of one stream, as mosaicml-streaming's ``get_sampling``.

    Args:
        samples_per_shard: Samples in each shard of the stream.
        choose: Samples to draw from the stream in total.
        granularity: Samples drawn from one shard at a time for the final partial repeat.
        seed: Seed of the draw.
        epoch: The epoch.
        use_epoch: Whether the draw changes with the epoch.

    Returns:
        Samples drawn from each shard; they add up to ``choose``. Time and memory O(shards + granules):
        as the reference, a partial repeat draws a permutation of every granule.
    """
    samples = as_sizes("samples_per_shard", samples_per_shard)
    check_non_negative("choose", choose)
    check_positive("sampling_granularity", granularity)
    check_non_negative("shuffle_seed", seed)
    check_non_negative("epoch", epoch)
    if samples.sum() < 1:
        raise ShuffleError("samples_per_shard adds up to 0: a stream without samples cannot be drawn from")
    return _choose_per_shard(samples, int(choose), int(granularity), seed + epoch if use_epoch else seed)


@dataclass(frozen=True, eq=False)
class EpochUnits:
    """An epoch's shuffle units (whole or partial repeats of shards) and how they map to sample ids."""

    sizes: NDArray[np.int64]
    ids: UnitMap

    @property
    def epoch_size(self) -> int:
        """Samples in the epoch."""
        return int(self.sizes.sum())


def epoch_units(
    samples_per_shard: NDArray[np.int64],
    shards_per_stream: NDArray[np.int64],
    choose_per_stream: NDArray[np.int64] | None,
    granularity: int,
    seed: int,
    epoch: int,
    vary_counts: bool,
    vary_subsets: bool,
    stream: int | None = None,
) -> EpochUnits:
    """Resample the streams for an epoch as the reference's ``resample_streams`` (arguments validated).

    ``vary_counts``: the samples drawn per shard change with the epoch (the reference's
    ``epoch_seed_change``); ``vary_subsets``: so does which samples a partial repeat of a shard takes
    (``sampling_method="balanced"``). Units list each shard's whole repeats, then its partial one (its
    chosen samples sorted); shards without samples have none. ``stream``: only that stream's units, drawn
    from a generator of their own, as the reference's per-stream batching methods resample.
    """
    shard_offset = np.zeros(samples_per_shard.shape[0], np.int64)
    np.cumsum(samples_per_shard[:-1], out=shard_offset[1:])
    starts = _stream_starts(shards_per_stream)
    streams = range(shards_per_stream.shape[0]) if stream is None else [stream]
    natural = np.add.reduceat(samples_per_shard, starts) if samples_per_shard.shape[0] else starts
    chooses = natural if choose_per_stream is None else choose_per_stream
    if all(chooses[k] == natural[k] for k in streams):  # every shard once: no draws at all
        shards = np.concatenate([np.arange(starts[k], starts[k] + shards_per_stream[k]) for k in streams])
        shards = shards[samples_per_shard[shards] > 0]
        identity = int(stream is None or stream == 0)
        return EpochUnits(
            samples_per_shard[shards],
            UnitMap(shard_offset[shards], np.full(shards.shape[0], -1, np.int64), _EMPTY, identity),
        )
    subsets = np.random.default_rng(seed + epoch if vary_subsets else seed)
    count_seed = seed + epoch if vary_counts else seed
    sizes: list[int] = []
    bases: list[int] = []
    table_starts: list[int] = []
    tables: list[NDArray[np.int64]] = []
    filled = 0
    for k in streams:
        first = int(starts[k])
        shard_sizes = samples_per_shard[first : first + shards_per_stream[k]]
        per_shard = _choose_per_shard(shard_sizes, int(chooses[k]), granularity, count_seed)
        for shard, (size, chosen) in enumerate(zip(shard_sizes.tolist(), per_shard.tolist(), strict=True)):
            if not size:
                continue
            whole, partial = divmod(chosen, size)
            sizes += [size] * whole
            bases += [int(shard_offset[first + shard])] * (whole + (partial > 0))
            table_starts += [-1] * whole
            if partial:
                subset = np.sort(subsets.choice(size, partial, replace=False))
                sizes.append(partial)
                table_starts.append(filled)
                tables.append(subset.astype(np.int64))
                filled += partial
    return EpochUnits(
        np.array(sizes, np.int64),
        UnitMap(
            np.array(bases, np.int64),
            np.array(table_starts, np.int64),
            np.concatenate(tables) if tables else _EMPTY,
            0,
        ),
    )


def _stream_starts(shards_per_stream: NDArray[np.int64]) -> NDArray[np.int64]:
    starts = np.zeros(shards_per_stream.shape[0], np.int64)
    np.cumsum(shards_per_stream[:-1], out=starts[1:])
    return starts
