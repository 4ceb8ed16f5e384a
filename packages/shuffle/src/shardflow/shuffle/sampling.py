"""Stream mixing: per-stream weights, and which samples of each shard an epoch draws.

Semantics are mosaicml-streaming's: a stream takes at most one of ``proportion`` (relative; then
``epoch_size`` sets the total), ``repeat`` or ``choose`` (absolute). A stream drawn ``choose`` times from
``n`` samples takes every sample ``choose // n`` times, and the rest, ``choose % n``, is spread over its
shards by picking granules of ``sampling_granularity`` samples of one shard at a time in random order.
Within a shard, a partial repeat is a random subset of its samples. As in the reference,
``sampling_method="balanced"`` redraws those subsets every epoch, and how many samples each shard gives
too when shuffling; ``"fixed"`` keeps both for the whole run. Random streams are derived from the seed
here, so the draws differ from the reference's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shardflow.shuffle._checks import as_sizes, check_non_negative, check_positive, is_integer
from shardflow.shuffle._jit import jit
from shardflow.shuffle._kernels import UnitMap
from shardflow.shuffle._random import (
    FIXED_EPOCH,
    permute_index,
    picks_key,
    shortfall_key,
    shuffle_in_place,
    subset_keys,
)
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
    """Add the samples lost to rounding down, one each to randomly chosen streams."""
    shortfall = total - int(choose.sum())
    order = np.arange(choose.shape[0], dtype=np.int64)
    shuffle_in_place(order, shortfall_key(seed))
    if shortfall > 0:
        choose[order[:shortfall]] += 1
    elif shortfall < 0:  # float rounding overshot: take back from the largest
        for stream in np.argsort(-choose, kind="stable")[:-shortfall]:
            choose[stream] -= 1
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
    if proportions[0] is not None or (unspecified and epoch_size is not None):
        total = int(samples.sum()) if epoch_size is None else int(epoch_size)
        shares = np.array(proportions if proportions[0] is not None else samples, np.float64)
        if shares.sum() <= 0:
            raise ShuffleError("every stream's proportion is 0: at least one must be positive")
        picks = np.floor(total * (shares / shares.sum())).astype(np.int64)
        picks = _spread_shortfall(picks, total, seed)
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
    return StreamWeights(picks / picks.sum(), picks / samples, picks, int(picks.sum()))


@jit
def _choose_per_shard(
    samples_per_shard: np.ndarray, choose: int, granularity: int, key: np.uint64
) -> np.ndarray:
    total = samples_per_shard.sum()
    out = samples_per_shard * (choose // total)
    rest = choose % total
    if not rest:
        return out
    num_shards = samples_per_shard.shape[0]
    pick_start = np.zeros(num_shards + 1, np.int64)  # shard j owns picks [pick_start[j], pick_start[j + 1])
    for j in range(num_shards):
        pick_start[j + 1] = pick_start[j] + (samples_per_shard[j] + granularity - 1) // granularity
    num_picks = int(pick_start[num_shards])
    counter = 0
    while rest:
        pick = permute_index(counter, num_picks, key)  # the picks in a random order, one at a time
        counter += 1
        low = 0
        high = num_shards - 1
        while low < high:  # the shard that owns this pick
            middle = (low + high + 1) >> 1
            if pick_start[middle] <= pick:
                low = middle
            else:
                high = middle - 1
        size = granularity
        if pick == pick_start[low + 1] - 1:
            size = samples_per_shard[low] - (pick - pick_start[low]) * granularity
        taken = min(rest, size)
        out[low] += taken
        rest -= taken
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
        Samples drawn from each shard; they add up to ``choose``. Time O(shards + picks drawn), memory
        O(shards).
    """
    samples = as_sizes("samples_per_shard", samples_per_shard)
    check_non_negative("choose", choose)
    check_positive("sampling_granularity", granularity)
    check_non_negative("shuffle_seed", seed)
    check_non_negative("epoch", epoch)
    if samples.sum() < 1:
        raise ShuffleError("samples_per_shard adds up to 0: a stream without samples cannot be drawn from")
    return _choose_per_shard(
        samples, int(choose), int(granularity), picks_key(seed, 0, epoch if use_epoch else FIXED_EPOCH)
    )


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
) -> EpochUnits:
    """Resample every stream for an epoch (arguments validated by the caller).

    ``vary_counts``: the samples drawn per shard change with the epoch; ``vary_subsets``: so does which
    samples a partial repeat of a shard takes. Units list each shard's whole repeats, then its partial one.
    """
    shard_offset = np.zeros(samples_per_shard.shape[0], np.int64)
    np.cumsum(samples_per_shard[:-1], out=shard_offset[1:])
    if choose_per_stream is None or np.array_equal(
        choose_per_stream, np.add.reduceat(samples_per_shard, _stream_starts(shards_per_stream))
    ):
        num = samples_per_shard.shape[0]
        return EpochUnits(
            samples_per_shard, UnitMap(shard_offset, np.zeros(num, np.int64), np.zeros(num, np.uint64), 1)
        )
    count_epoch = epoch if vary_counts else FIXED_EPOCH
    per_shard = np.concatenate(
        [
            _choose_per_shard(
                samples_per_shard[begin : begin + shards],
                int(choose),
                granularity,
                picks_key(seed, stream, count_epoch),
            )
            for stream, (begin, shards, choose) in enumerate(
                zip(_stream_starts(shards_per_stream), shards_per_stream, choose_per_stream, strict=True)
            )
        ]
    )
    sizes = np.where(samples_per_shard > 0, samples_per_shard, 1)
    whole, partial = np.divmod(per_shard, sizes)
    units_per_shard = whole + (partial > 0)
    shard_of_unit = np.repeat(np.arange(per_shard.shape[0]), units_per_shard)
    last_of_shard = np.cumsum(units_per_shard) - 1
    is_partial = np.zeros(shard_of_unit.shape[0], np.bool_)
    is_partial[last_of_shard[partial > 0]] = True
    unit_sizes = np.where(is_partial, partial[shard_of_unit], samples_per_shard[shard_of_unit])
    unit_keys = np.zeros(shard_of_unit.shape[0], np.uint64)
    subset_epoch = epoch if vary_subsets else FIXED_EPOCH
    unit_keys[is_partial] = subset_keys(seed, shard_of_unit[is_partial], subset_epoch)
    modulus = np.where(is_partial, samples_per_shard[shard_of_unit], 0)
    return EpochUnits(
        unit_sizes.astype(np.int64),
        UnitMap(shard_offset[shard_of_unit], modulus.astype(np.int64), unit_keys, 0),
    )


def _stream_starts(shards_per_stream: NDArray[np.int64]) -> NDArray[np.int64]:
    starts = np.zeros(shards_per_stream.shape[0], np.int64)
    np.cumsum(shards_per_stream[:-1], out=starts[1:])
    return starts
