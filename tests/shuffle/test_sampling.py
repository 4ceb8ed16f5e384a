"""Stream sampling: per-shard draws that add up, balance, epoch behaviour, stream weights and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from shardflow.shuffle import ShuffleError, get_sampling, resolve_stream_weights


@pytest.mark.parametrize("use_epoch", [True, False])
def test_draws_add_up_and_fit_in_their_shards(use_epoch: bool) -> None:
    rng = np.random.default_rng(0)
    for granularity in range(1, 100, 7):
        for _ in range(5):
            samples = 100 + rng.integers(0, 100, 10)
            choose = int(rng.integers(0, 3 * samples.sum()))
            got = get_sampling(
                samples, choose, granularity, int(rng.integers(0, 31337)), int(rng.integers(0, 42)), use_epoch
            )
            assert got.sum() == choose
            whole = choose // samples.sum()
            assert (got >= whole * samples).all() and (got <= (whole + 1) * samples).all()


def test_deterministic_and_epoch_dependent_only_with_use_epoch() -> None:
    samples = np.full(20, 50)
    first = get_sampling(samples, 333, 4, 7, 0, True)
    assert np.array_equal(first, get_sampling(samples, 333, 4, 7, 0, True))
    assert any(
        not np.array_equal(first, get_sampling(samples, 333, 4, 7, epoch, True)) for epoch in (1, 2, 3)
    )
    fixed = [get_sampling(samples, 333, 4, 7, epoch, False) for epoch in range(4)]
    assert all(np.array_equal(fixed[0], other) for other in fixed)


def test_granularity_picks_whole_granules() -> None:
    got = get_sampling(np.full(10, 100), 250, 50, 1, 0, True)
    assert got.sum() == 250 and (got % 50 == 0).all()


@pytest.mark.parametrize("use_epoch", [True, False])
def test_balance_over_many_seeds(use_epoch: bool) -> None:
    """As the reference's test: the rate drawn per shard, averaged over seeds, is nearly even."""
    rng = np.random.default_rng(1)
    samples = 1_000 + rng.integers(0, 1_000, 10)
    choose = int(rng.integers(0, samples.sum()))
    total = np.zeros(10)
    for granularity in range(1, 100):
        for _ in range(10):
            total += get_sampling(
                samples, choose, granularity, int(rng.integers(0, 31337)), int(rng.integers(0, 42)), use_epoch
            )
    rates = total / (99 * 10) / samples
    assert rates.std() / rates.mean() < 0.05


def test_bad_draws_are_refused() -> None:
    with pytest.raises(ShuffleError, match="choose must be a non-negative integer, got -1"):
        get_sampling([10], -1, 1, 0, 0, True)
    with pytest.raises(ShuffleError, match="sampling_granularity must be a positive integer, got 0"):
        get_sampling([10], 5, 0, 0, 0, True)
    with pytest.raises(ShuffleError, match="adds up to 0"):
        get_sampling([0, 0], 5, 1, 0, 0, True)


def test_weights_follow_the_reference_rules() -> None:
    samples = [1000, 3000]
    plain = resolve_stream_weights(samples)
    assert plain.choose.tolist() == [1000, 3000] and plain.epoch_size == 4000
    sized = resolve_stream_weights(samples, epoch_size=400)
    assert sized.choose.tolist() == [100, 300]
    absolute = resolve_stream_weights(samples, repeat=[2.5, None], choose=[None, 10])
    assert absolute.choose.tolist() == [2500, 10] and absolute.epoch_size == 2510
    assert np.allclose(absolute.repeat, [2.5, 10 / 3000])
    relative = resolve_stream_weights([10, 10, 10], proportion=[1, 1, 1], epoch_size=100, seed=3)
    assert relative.choose.sum() == 100 and sorted(relative.choose.tolist()) == [33, 33, 34]
    assert np.allclose(relative.proportion, [1 / 3] * 3)  # the reference keeps the given shares


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"samples_per_stream": [10, 0]}, "stream 1 has no samples"),
        ({"samples_per_stream": []}, "samples_per_stream is empty"),
        ({"repeat": [1.0, None], "choose": [5, None]}, "stream 0 sets repeat and choose"),
        ({"proportion": [0.5, None]}, "stream 1 lacks a proportion and stream 0 does not"),
        (
            {"repeat": [2, None], "epoch_size": 50},
            "epoch_size=50 only applies to streams weighted by proportion",
        ),
        ({"epoch_size": 0}, "epoch_size=0: it must be a positive integer"),
        ({"repeat": [-1, None]}, "repeat of stream 0 is -1"),
        ({"choose": [0, 0]}, "the weights draw no samples at all"),
        ({"proportion": [0, 0]}, "every stream's proportion is 0"),
        ({"choose": [1]}, "choose has 1 entries for 2 streams"),
    ],
)
def test_bad_weights_say_which_stream_and_number(kwargs: dict, match: str) -> None:
    args = {"samples_per_stream": [10, 20]}
    args.update(kwargs)
    with pytest.raises(ShuffleError, match=match):
        resolve_stream_weights(**args)
