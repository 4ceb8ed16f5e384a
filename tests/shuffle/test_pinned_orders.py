"""Pinned outputs: the orders and draws of fixed settings, recorded before the random keys moved together.

A digest that changes means every run's order changed (checkpoints would resume elsewhere): only accept
new values for a deliberate change of the shuffle, and say so in its notes.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from shardflow.shuffle import (
    SHUFFLE_ALGOS,
    SampleOrder,
    WorldShape,
    get_sampling,
    get_shuffle,
    resolve_stream_weights,
)

SIZES = 1 + (np.arange(60, dtype=np.int64) * 7) % 53  # 60 shards of 1 to 53 samples
SEEDS = (0, 9176, 2**63 - 1)

WORKER = {
    ("naive", 0): "1a6a511729351c5a",
    ("naive", 9176): "865adf8fcb07b091",
    ("naive", 2**63 - 1): "d7bb211757b0a934",
    ("py1s", 0): "4cb1bc638eea2e09",
    ("py1s", 9176): "f55f0c750785502b",
    ("py1s", 2**63 - 1): "a5590979714dd549",
    ("py2s", 0): "273821308b3e785b",
    ("py2s", 9176): "5e093de2a5f2cd25",
    ("py2s", 2**63 - 1): "bf3da0c3f08f1e2b",
    ("py1br", 0): "bd6e60855e94132d",
    ("py1br", 9176): "94bb2c442b7a30bb",
    ("py1br", 2**63 - 1): "29f943f665b1e0ac",
    ("py1e", 0): "f8af8028966a3955",
    ("py1e", 9176): "d8238fceee9b7d80",
    ("py1e", 2**63 - 1): "20b43713c5ac7d9b",
    (None, 0): "8f36101fbf2775bb",
    (None, 9176): "78be6512c6f61f1c",
    (None, 2**63 - 1): "5f3a78c049509a6b",
}
SHUFFLE = {
    ("naive", 0, 0): "b97584cc315b9acd",
    ("naive", 31337, 5): "7c089c960d9ba47d",
    ("py1s", 0, 0): "49f3c654bf35fa8d",
    ("py1s", 31337, 5): "fe33093ee4d8f36f",
    ("py2s", 0, 0): "5e024964590f8c7a",
    ("py2s", 31337, 5): "3a25206cd08b21c1",
    ("py1br", 0, 0): "7054d5002410d060",
    ("py1br", 31337, 5): "54f7478a8f8a3c54",
    ("py1e", 0, 0): "312cd8fa12ebc4ad",
    ("py1e", 31337, 5): "81c4941cc10f854f",
}


def digest(values: np.ndarray) -> str:
    """The first 16 hex digits of the SHA-256 of the values as int64."""
    return hashlib.sha256(np.ascontiguousarray(values, np.int64).tobytes()).hexdigest()[:16]


def test_every_algorithm_is_pinned() -> None:
    assert {algo for algo, _ in WORKER} == {*SHUFFLE_ALGOS, None}
    assert {algo for algo, _, _ in SHUFFLE} == set(SHUFFLE_ALGOS)


@pytest.mark.parametrize(("algo", "seed"), list(WORKER))
def test_worker_sample_ids_are_pinned(algo: str | None, seed: int) -> None:
    """Two streams with partial repeats, a resume point off batch boundaries, two epochs."""
    order = SampleOrder(
        SIZES,
        num_canonical_nodes=4,
        batch_size=3,
        shards_per_stream=[25, 35],
        choose_per_stream=[500, 1234],
        shuffle=algo is not None,
        shuffle_algo=algo or "py1e",
        shuffle_seed=seed,
        shuffle_block_size=200,
    )
    world = WorldShape(2, 2, 2)
    ids = [order.worker_sample_ids(epoch, world, 1, 0, 1, sample_in_epoch=7) for epoch in (0, 3)]
    assert digest(np.concatenate(ids)) == WORKER[algo, seed]


@pytest.mark.parametrize(("algo", "seed", "epoch"), list(SHUFFLE))
def test_get_shuffle_is_pinned(algo: str, seed: int, epoch: int) -> None:
    assert digest(get_shuffle(algo, SIZES, 3, seed, epoch, 128)) == SHUFFLE[algo, seed, epoch]


def test_epoch_with_fixed_sampling_and_orig_partition_is_pinned() -> None:
    order = SampleOrder(
        SIZES,
        4,
        3,
        shuffle=True,
        shuffle_algo="py1e",
        shuffle_seed=5,
        shuffle_block_size=1 << 16,
        sampling_method="fixed",
        partition_algo="orig",
        shards_per_stream=[25, 35],
        choose_per_stream=[100, 3000],
    )
    assert digest(order.epoch_sample_ids(2, WorldShape(2, 1, 2))) == "8966a180ea16704a"


@pytest.mark.parametrize(("seed", "expected"), [(0, "88f0f36e8d8fdb26"), (77, "ceb53a10acf73524")])
def test_get_sampling_is_pinned(seed: int, expected: str) -> None:
    draws = [get_sampling(SIZES, 2345, 4, seed, epoch, use) for epoch in (0, 1) for use in (True, False)]
    assert digest(np.concatenate(draws)) == expected


def test_rounding_of_stream_proportions_is_pinned() -> None:
    weights = resolve_stream_weights([100, 200, 300], proportion=[0.3, 0.3, 0.4], epoch_size=1001, seed=11)
    assert digest(weights.choose) == "29cc4c722f8f529a"
