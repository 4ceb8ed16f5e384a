"""Pinned outputs: the orders and draws of fixed settings.

The reference's algorithms (``naive``, ``py1s``, ``py2s``, ``py1br``, ``py1e``, unshuffled) and the
stream draws are pinned to digests computed by mosaicml-streaming 0.13.0 itself (its ``generate_work``
with random batching, ``get_shuffle``, ``get_sampling``, ``Stream.apply_weights``, in its venv), so these
tests hold the reference's order without running it. The ``*_fast`` variants are shardflow's own orders,
pinned from its output (their worker digests moved when partial repeats took the reference's subsets).
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

# From the reference: generate_work(...)[1, 0, 1] of epochs 0 and 3, resumed at sample 8.
WORKER = {
    ("naive", 0): "c6f3bf97c891dab0",
    ("naive", 9176): "71a7c80160cb4350",
    ("naive", 2**63 - 1): "b6a982cd760da7df",
    ("py1s", 0): "d6a19fdb3ce76694",
    ("py1s", 9176): "771ee4b88a60f25e",
    ("py1s", 2**63 - 1): "0706d3fe228f4a22",
    ("py2s", 0): "f6fd9eacc13cc4c8",
    ("py2s", 9176): "e7d42a8ddcbbca59",
    ("py2s", 2**63 - 1): "f50e030c1726fd29",
    ("py1br", 0): "307a714dfe068c45",
    ("py1br", 9176): "83a5bb35e43a7a76",
    ("py1br", 2**63 - 1): "8c3647efba00ea2c",
    ("py1e", 0): "b0a96a245d7d08b8",
    ("py1e", 9176): "66c62ce9fc2a05a5",
    ("py1e", 2**63 - 1): "fb12fab798ec34a0",
    (None, 0): "c71474d74530a462",
    (None, 9176): "3d6e128f10f73ae6",
    (None, 2**63 - 1): "beee4c5b9de9c576",
    # shardflow's own (resumed at sample 7: they resume off node multiples too)
    ("naive_fast", 0): "2f579af779654428",
    ("naive_fast", 9176): "30933cb2c4457899",
    ("naive_fast", 2**63 - 1): "5e1e8c4d1e42e4b7",
    ("py1s_fast", 0): "5153c120dfbcc187",
    ("py1s_fast", 9176): "a289477e3aa184a5",
    ("py1s_fast", 2**63 - 1): "44d341d787e7e0f7",
    ("py2s_fast", 0): "75f696b055368473",
    ("py2s_fast", 9176): "7cd76eec163c84db",
    ("py2s_fast", 2**63 - 1): "243ae4f4108fad2d",
    ("py1br_fast", 0): "e756206787d07c36",
    ("py1br_fast", 9176): "f76f62e5bb2cb7f0",
    ("py1br_fast", 2**63 - 1): "809cf6661792d219",
    ("py1e_fast", 0): "b51d125b2b586b62",
    ("py1e_fast", 9176): "59b371b1c3d1dd0d",
    ("py1e_fast", 2**63 - 1): "9fbd6a738a20a5a1",
}
# From the reference's get_shuffle; the fast variants' values are those pinned before the reference's orders.
SHUFFLE = {
    ("naive", 0, 0): "4af17b0138d0288a",
    ("naive", 31337, 5): "d02db10f18b3e8e0",
    ("py1s", 0, 0): "aed9676ecf881e6c",
    ("py1s", 31337, 5): "de8426b3f366a1b6",
    ("py2s", 0, 0): "11ef1e2c270584fc",
    ("py2s", 31337, 5): "c0a317954f16815f",
    ("py1br", 0, 0): "9819188e19feef4a",
    ("py1br", 31337, 5): "3b83e09ca40787cb",
    ("py1e", 0, 0): "60ffbb13773e4353",
    ("py1e", 31337, 5): "c49378f660a9165e",
    ("naive_fast", 0, 0): "b97584cc315b9acd",
    ("naive_fast", 31337, 5): "7c089c960d9ba47d",
    ("py1s_fast", 0, 0): "49f3c654bf35fa8d",
    ("py1s_fast", 31337, 5): "fe33093ee4d8f36f",
    ("py2s_fast", 0, 0): "5e024964590f8c7a",
    ("py2s_fast", 31337, 5): "3a25206cd08b21c1",
    ("py1br_fast", 0, 0): "7054d5002410d060",
    ("py1br_fast", 31337, 5): "54f7478a8f8a3c54",
    ("py1e_fast", 0, 0): "312cd8fa12ebc4ad",
    ("py1e_fast", 31337, 5): "81c4941cc10f854f",
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
    resume = 7 if algo and algo.endswith("_fast") else 8  # the reference rounds resume points to nodes
    ids = [order.worker_sample_ids(epoch, world, 1, 0, 1, sample_in_epoch=resume) for epoch in (0, 3)]
    assert digest(np.concatenate(ids)) == WORKER[algo, seed]


@pytest.mark.parametrize(("algo", "seed", "epoch"), list(SHUFFLE))
def test_get_shuffle_is_pinned(algo: str, seed: int, epoch: int) -> None:
    assert digest(get_shuffle(algo, SIZES, 3, seed, epoch, 128)) == SHUFFLE[algo, seed, epoch]


def test_epoch_with_fixed_sampling_and_orig_partition_is_pinned() -> None:
    """From the reference: the whole 5-D epoch."""
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
    assert digest(order.epoch_sample_ids(2, WorldShape(2, 1, 2))) == "27db86e91eddc9bd"


@pytest.mark.parametrize(("seed", "expected"), [(0, "84c4808ad04b4bd6"), (77, "3d49f2b402e79e6d")])
def test_get_sampling_is_pinned(seed: int, expected: str) -> None:
    draws = [get_sampling(SIZES, 2345, 4, seed, epoch, use) for epoch in (0, 1) for use in (True, False)]
    assert digest(np.concatenate(draws)) == expected


def test_rounding_of_stream_proportions_is_pinned() -> None:
    weights = resolve_stream_weights([100, 200, 300], proportion=[0.3, 0.3, 0.4], epoch_size=1001, seed=11)
    assert digest(weights.choose) == "29cc4c722f8f529a"
