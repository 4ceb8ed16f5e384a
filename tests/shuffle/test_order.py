"""SampleOrder: the per-worker API. Elastic determinism, resumption, stream mixing, errors."""

from __future__ import annotations

import numpy as np
import pytest
from _shuffle_order import epoch_from_workers, global_batches, stream_order

from shardflow.shuffle import SHUFFLE_ALGOS, SampleOrder, ShuffleError, WorldShape

GLOBAL_BATCH = 840  # divisible by every nodes x ranks below
# (nodes, ranks per node, DataLoader num_workers): 1..8 nodes, 1..8 ranks, 0..8 workers.
SHAPES = [
    (1, 1, 0),
    (1, 8, 2),
    (2, 4, 1),
    (2, 7, 3),
    (3, 8, 0),
    (3, 5, 4),
    (4, 2, 8),
    (4, 6, 1),
    (5, 4, 2),
    (5, 8, 1),
    (6, 4, 0),
    (6, 7, 2),
    (7, 8, 1),
    (7, 6, 3),
    (8, 1, 5),
    (8, 5, 1),
    (8, 3, 2),
    (1, 5, 7),
    (2, 1, 6),
    (3, 1, 2),
    (6, 1, 4),
    (4, 3, 3),
    (7, 1, 1),
    (5, 6, 0),
]


def world(nodes: int, ranks: int, num_workers: int) -> WorldShape:
    return WorldShape(nodes, ranks, max(1, num_workers))  # num_workers=0 reads in the main process


def order_for(nodes: int, ranks: int, sizes: np.ndarray, algo: str = "py1e", **kwargs: object) -> SampleOrder:
    args = {
        "num_canonical_nodes": 8,
        "batch_size": GLOBAL_BATCH // (nodes * ranks),
        "shuffle": True,
        "shuffle_algo": algo,
        "shuffle_block_size": 700,
        "shuffle_seed": 17,
    }
    args.update(kwargs)
    return SampleOrder(sizes, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("total", [GLOBAL_BATCH * 6, 4999])
def test_global_order_is_the_same_for_every_world_shape(total: int) -> None:
    assert len(SHAPES) >= 20
    sizes = np.full(total // 70, 70)
    sizes[-1] += total - sizes.sum()
    full_steps = total // GLOBAL_BATCH  # a last, partial step is padded differently per world shape
    expected_batches = expected_stream = None
    for nodes, ranks, workers in SHAPES:
        order = order_for(nodes, ranks, sizes)
        # relaxed + initial_physical_nodes=1 serves node counts that do not divide the 8 canonical nodes.
        epoch = epoch_from_workers(order, 3, world(nodes, ranks, workers), initial_physical_nodes=1)
        batches = global_batches(epoch)[:full_steps]
        first_nodes, first_batch = (nodes, order.batch_size) if 8 % nodes == 0 else (1, GLOBAL_BATCH // ranks)
        stream = stream_order(epoch, order.batch_size, first_nodes, first_batch)[: full_steps * GLOBAL_BATCH]
        if expected_batches is None:
            expected_batches, expected_stream = batches, stream
            if not total % GLOBAL_BATCH:
                assert np.array_equal(np.sort(stream), np.arange(total)), "each sample exactly once"
        shape = f"world {nodes}x{ranks}x{workers}"
        assert batches == expected_batches, f"{shape} changed the global batches"
        assert np.array_equal(stream, expected_stream), f"{shape} changed the order within the stream"


@pytest.mark.parametrize("algo", [*SHUFFLE_ALGOS, None])
def test_worker_slices_equal_the_epoch_with_resampled_streams(algo: str | None) -> None:
    sizes = np.array([30, 0, 45, 12, 80, 33, 7, 61], np.int64)
    order = SampleOrder(
        sizes,
        num_canonical_nodes=4,
        batch_size=5,
        shards_per_stream=[3, 5],
        choose_per_stream=[200, 100],
        shuffle=algo is not None,
        shuffle_algo=algo or "py1e",
        shuffle_block_size=40,
    )
    shape = WorldShape(2, 2, 3)
    epoch = order.epoch_sample_ids(2, shape, sample_in_epoch=13)
    for node in range(2):
        for rank in range(2):
            for worker in range(3):
                alone = order.worker_sample_ids(2, shape, node, rank, worker, sample_in_epoch=13)
                assert np.array_equal(alone, epoch[node, rank, worker].ravel())


@pytest.mark.parametrize(
    ("algo", "partition_algo", "first", "second", "initial"),
    [
        ("py1e", "orig", (2, 4, 2), (4, 2, 1), None),
        ("py1br", "orig", (4, 2, 3), (1, 8, 2), None),
        ("py1e", "relaxed", (2, 4, 2), (3, 4, 1), 2),
        ("py2s", "relaxed", (4, 3, 1), (7, 3, 2), 4),
    ],
)
def test_resuming_gives_exactly_the_tail(
    algo: str, partition_algo: str, first: tuple, second: tuple, initial: int | None
) -> None:
    total = GLOBAL_BATCH * 3
    sizes = np.full(total // 60, 60)
    before = order_for(first[0], first[1], sizes, algo, partition_algo=partition_algo)
    after = order_for(second[0], second[1], sizes, algo, partition_algo=partition_algo)
    full = before.epoch_sample_ids(1, world(*first))
    reference = stream_order(full, before.batch_size, first[0], before.batch_size)[:total]
    first_batch = GLOBAL_BATCH // (first[0] * first[1])
    for drop in (GLOBAL_BATCH, 2 * GLOBAL_BATCH, 1, 37, GLOBAL_BATCH + 5, total - 3):
        resumed = after.epoch_sample_ids(
            1, world(*second), sample_in_epoch=drop, initial_physical_nodes=initial
        )
        if initial is None:
            tail = stream_order(resumed, after.batch_size, second[0], after.batch_size)
        else:
            tail = stream_order(resumed, after.batch_size, initial, first_batch)
        assert np.array_equal(tail[: total - drop], reference[drop:]), f"resuming at {drop}"


def test_stream_mixing_draws_each_stream_its_share() -> None:
    sizes = np.array([100, 100, 50, 50, 50], np.int64)  # stream 0: ids 0..199, stream 1: ids 200..349
    for method in ("balanced", "fixed"):
        order = SampleOrder(
            sizes,
            num_canonical_nodes=2,
            batch_size=4,
            shards_per_stream=[2, 3],
            choose_per_stream=[130, 376],
            shuffle=True,
            sampling_method=method,
        )
        drawn = []
        for epoch in range(3):
            ids = order.epoch_sample_ids(epoch, WorldShape(1, 1, 1))
            ids = ids[ids >= 0]
            assert (ids < 200).sum() == 130 and (ids >= 200).sum() == 376  # 506 = 2 rows of 253: no padding
            counts = np.bincount(ids, minlength=350)
            assert (counts[200:] >= 2).all() and (counts[200:] <= 3).all()  # 2.5 repeats of stream 1
            drawn.append(counts)
        same = all(np.array_equal(drawn[0], other) for other in drawn)
        assert same == (method == "fixed"), method


def test_without_shuffle_each_canonical_node_reads_in_order() -> None:
    order = SampleOrder(np.full(10, 10), num_canonical_nodes=2, batch_size=5)
    ids = order.worker_sample_ids(0, WorldShape(2, 1, 1), 1, 0, 0)
    assert ids.tolist() == list(range(50, 100))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda o: o.worker_sample_ids(0, WorldShape(2, 2, 2), 2, 0, 0), "node=2 is outside the world"),
        (
            lambda o: o.worker_sample_ids(0, WorldShape(2, 2, 2), 0, 0, 2),
            "worker_of_rank=2 is outside the world",
        ),
        (
            lambda o: o.worker_sample_ids(0, WorldShape(3, 1, 1), 0, 0, 0),
            "num_canonical_nodes=4 and num_physical",
        ),
        (
            lambda o: o.worker_sample_ids(0, WorldShape(2, 1, 1), 0, 0, 0, sample_in_epoch=10**6),
            r"sample_in_epoch\) = 1000000 is outside the epoch",
        ),
        (
            lambda o: o.worker_sample_ids(-1, WorldShape(2, 1, 1), 0, 0, 0),
            "epoch must be a non-negative integer",
        ),
    ],
)
def test_impossible_requests_are_refused(call, match: str) -> None:  # noqa: ANN001
    order = SampleOrder(
        np.full(10, 10), num_canonical_nodes=4, batch_size=5, shuffle=True, partition_algo="orig"
    )
    with pytest.raises(ShuffleError, match=match):
        call(order)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"samples_per_shard": [5, 0, 0], "shards_per_stream": [1, 2]},
            r"stream 1 has no samples \(shards 1 to 3\)",
        ),
        ({"shards_per_stream": [2, 2]}, "shards_per_stream adds up to 4 shards but samples_per_shard has 3"),
        ({"choose_per_stream": [1, 2]}, "choose_per_stream has 2 entries for 1 streams"),
        ({"num_canonical_nodes": 0}, "num_canonical_nodes must be a positive integer, got 0"),
        ({"shuffle_algo": "py9"}, "shuffle_algo='py9' is unknown"),
        ({"sampling_method": "random"}, "sampling_method='random' is unknown"),
        ({"shuffle_seed": -1}, "shuffle_seed must be a non-negative integer"),
    ],
)
def test_bad_settings_say_which_number_is_wrong(kwargs: dict, match: str) -> None:
    args: dict = {"samples_per_shard": [5, 6, 7], "num_canonical_nodes": 2, "batch_size": 4}
    args.update(kwargs)
    with pytest.raises(ShuffleError, match=match):
        SampleOrder(**args)


def test_canonical_node_without_samples_is_refused() -> None:
    order = SampleOrder([3, 2], num_canonical_nodes=8, batch_size=1, shuffle=True)
    with pytest.raises(ShuffleError, match="num_canonical_nodes=8 is more than the 5 samples of the epoch"):
        order.worker_sample_ids(0, WorldShape(1, 1, 1), 0, 0, 0)


def test_zero_workers_is_explained() -> None:
    with pytest.raises(
        ShuffleError, match="num_workers=0 reads in the main process, which counts as 1 worker"
    ):
        WorldShape(1, 1, 0)
