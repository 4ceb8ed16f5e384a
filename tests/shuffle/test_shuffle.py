"""Shuffle algorithms: permutations, fixed canonical-node sets, determinism, locality, lookups, errors."""

from __future__ import annotations

import numpy as np
import pytest

from shardflow.shuffle import SHUFFLE_ALGOS, ShuffleError, get_shuffle
from shardflow.shuffle._kernels import lookup
from shardflow.shuffle.shuffle import identity_units, make_shuffler

BLOCK = 300


def node_sets(ids: np.ndarray, num_nodes: int) -> list[frozenset[int]]:
    total = ids.shape[0]
    return [
        frozenset(ids[total * c // num_nodes : total * (c + 1) // num_nodes].tolist())
        for c in range(num_nodes)
    ]


@pytest.mark.parametrize("algo", SHUFFLE_ALGOS)
def test_permutation_with_fixed_canonical_node_sets(algo: str, sizes: np.ndarray) -> None:
    """Every algorithm but the reference's ``naive`` (one permutation of the whole epoch, any node)."""
    total = int(sizes.sum())
    for num_nodes in (1, 2, 3, 7):
        for seed in (0, 1):
            first = None
            for epoch in range(3):
                ids = get_shuffle(algo, sizes, num_nodes, seed, epoch, BLOCK)
                assert ids.dtype == np.int64
                assert np.array_equal(np.sort(ids), np.arange(total))
                sets = node_sets(ids, num_nodes)
                if first is None:
                    first = sets
                assert algo == "naive" or sets == first, f"{algo}: canonical node sets moved between epochs"


@pytest.mark.parametrize("algo", SHUFFLE_ALGOS)
def test_deterministic_and_seed_and_epoch_matter(algo: str, sizes: np.ndarray) -> None:
    base = get_shuffle(algo, sizes, 4, 5, 2, BLOCK)
    assert np.array_equal(base, get_shuffle(algo, sizes, 4, 5, 2, BLOCK))
    assert not np.array_equal(base, get_shuffle(algo, sizes, 4, 6, 2, BLOCK))
    assert not np.array_equal(base, get_shuffle(algo, sizes, 4, 5, 3, BLOCK))
    assert not np.array_equal(base, np.arange(base.shape[0])), "nothing moved"


@pytest.mark.parametrize("algo", ["py1br", "py1e"])
def test_block_algorithms_keep_a_shard_within_about_a_block(algo: str) -> None:
    sizes = np.full(400, 50, np.int64)
    block = 1000
    for seed in range(3):
        ids = get_shuffle(algo, sizes, 2, seed, 0, block)
        where = np.empty_like(ids)
        where[ids] = np.arange(ids.shape[0])
        spread = where.reshape(400, 50).max(axis=1) - where.reshape(400, 50).min(axis=1)
        # Reference semantics: py1br blocks are < 1.25 blocks (a shard may straddle two), py1e windows are
        # < 1.25 blocks wide; py1e's local mixing adds 64 tiles (here tiles are single samples).
        assert spread.max() < 2.5 * block + 64, spread.max()
        assert spread.mean() > 0.25 * block, "samples of a shard should spread over about a block"


def test_py1e_with_large_blocks_spreads_tiles(sizes: np.ndarray) -> None:
    """Blocks of 2**16 use tiles of 256 samples; the result is still a node-preserving permutation."""
    sizes = np.full(64, 5000, np.int64)
    ids = get_shuffle("py1e", sizes, 2, 0, 0, 1 << 16)
    assert np.array_equal(np.sort(ids), np.arange(ids.shape[0]))
    assert node_sets(ids, 2) == node_sets(get_shuffle("py1e", sizes, 2, 0, 1, 1 << 16), 2)
    where = np.empty_like(ids)
    where[ids] = np.arange(ids.shape[0])
    spread = where.reshape(64, 5000).max(axis=1) - where.reshape(64, 5000).min(axis=1)
    assert spread.max() < 2.5 * (1 << 16)


@pytest.mark.parametrize("algo", SHUFFLE_ALGOS)
def test_lookup_of_some_positions_matches_the_whole_epoch(algo: str, sizes: np.ndarray) -> None:
    shuffler = make_shuffler(algo, sizes, 3, 7, 1, BLOCK)
    whole = get_shuffle(algo, sizes, 3, 7, 1, BLOCK)
    rng = np.random.default_rng(0)
    positions = rng.integers(-1, whole.shape[0], 500)
    expected = np.where(positions >= 0, whole[positions], -1)
    assert np.array_equal(lookup(shuffler, identity_units(shuffler), positions), expected)


def test_zero_sized_shards_are_allowed() -> None:
    ids = get_shuffle("py1e", [0, 5, 0, 7, 0], 2, 0, 0, BLOCK)
    assert np.array_equal(np.sort(ids), np.arange(12))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"algo": "py3x"}, "shuffle_algo='py3x' is unknown"),
        ({"num_canonical_nodes": 0}, "num_canonical_nodes must be a positive integer"),
        (
            {"num_canonical_nodes": 20, "shard_sizes": [3, 4]},
            "num_canonical_nodes=20 is more than the 7 samples",
        ),
        ({"shard_sizes": [0, 0]}, "no samples"),
        ({"shard_sizes": [3, -1]}, r"shard_sizes\[1\] = -1"),
        ({"seed": -3}, "shuffle_seed must be a non-negative integer, got -3"),
        ({"epoch": -1}, "epoch must be a non-negative integer, got -1"),
        ({"block_size": 0}, "shuffle_block_size must be a positive integer, got 0"),
    ],
)
def test_bad_input_says_which_number_is_wrong(kwargs: dict, match: str) -> None:
    args = {
        "algo": "py1e",
        "shard_sizes": [10, 20],
        "num_canonical_nodes": 2,
        "seed": 0,
        "epoch": 0,
        "block_size": BLOCK,
    }
    args.update(kwargs)
    with pytest.raises(ShuffleError, match=match) as caught:
        get_shuffle(**args)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("algo", ["py1e", "py1e_fast"])
def test_a_block_smaller_than_a_shard_is_a_user_warning(algo: str) -> None:
    """As in the reference: warnings.warn, so that scripts filtering UserWarning see it."""
    with pytest.warns(UserWarning, match="shuffle_block_size=10 is smaller than some shards"):
        get_shuffle(algo, np.array([100, 100], np.int64), 1, 5, 0, 10)
