"""Batching methods: what every global and device batch is made of, determinism, world invariance, resume."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardflow.shuffle import BATCHING_METHODS, SampleOrder, ShuffleError, WorldShape, batching

PER_STREAM_METHODS = ("stratified", "per_stream", "device_per_stream")
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _log_every_warning() -> None:
    batching._warned.clear()  # warnings are logged once per process


def make_order(stream_sizes: list[list[int]], method: str, **kwargs: object) -> SampleOrder:
    args: dict[str, object] = {
        "num_canonical_nodes": 4,
        "batch_size": 4,
        "shuffle": True,
        "shuffle_algo": "py1e",
        "shuffle_block_size": 64,
        "shuffle_seed": 5,
        "batching_method": method,
    }
    args.update(kwargs)
    return SampleOrder(
        np.concatenate([np.asarray(s, np.int64) for s in stream_sizes]),
        shards_per_stream=[len(s) for s in stream_sizes],
        **args,  # type: ignore[arg-type]
    )


def stream_of(order: SampleOrder, ids: np.ndarray) -> np.ndarray:
    """The stream of each sample id (-1 stays -1)."""
    sizes = np.asarray(order.samples_per_shard)
    shards = np.asarray(order.shards_per_stream)
    stream_starts = np.concatenate([[0], np.cumsum(sizes)])[np.cumsum(shards)]
    return np.where(ids >= 0, np.searchsorted(stream_starts, ids, side="right"), -1)


def real_rows(batches: np.ndarray) -> np.ndarray:
    """The global batches that are not padding; padding is only ever whole rows of -1 at the end."""
    real = (batches >= 0).all(axis=1)
    padding = (batches < 0).all(axis=1)
    assert (real | padding).all(), "a global batch mixes real samples and padding"
    count = int(real.sum())
    assert real[:count].all() and padding[count:].all(), "padding before real batches"
    return batches[:count]


def draws(order: SampleOrder, epoch: int) -> list[int]:
    """Samples drawn per stream this epoch (choose, or the stream's size)."""
    units = order.units(epoch)
    return [int(n) for n in np.bincount(stream_of(order, units.ids.base), units.sizes)]


streams_strategy = st.lists(
    st.lists(st.integers(1, 40), min_size=1, max_size=6), min_size=1, max_size=4
).filter(lambda streams: all(sum(s) >= 40 for s in streams))
world_strategy = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))


@FAST
@given(streams=streams_strategy, shape=world_strategy, batch=st.integers(1, 5), shuffle=st.booleans())
def test_stratified_global_batches_hold_each_streams_share(
    streams: list[list[int]], shape: tuple[int, int, int], batch: int, shuffle: bool
) -> None:
    world = WorldShape(*shape)
    global_batch = batch * shape[0] * shape[1]
    counts = [sum(s) for s in streams]
    if global_batch < len(streams) or min(counts) * global_batch < sum(counts):
        return  # a stream's share is 0: the error is tested below
    order = make_order(streams, "stratified", batch_size=batch, shuffle=shuffle)
    try:
        batches = real_rows(order.global_batch_ids(1, world))
    except ShuffleError as error:  # a stream with fewer samples than its share: no batch at all
        assert "cannot fill its share" in str(error)
        return
    assert batches.shape[0] >= 1
    share = np.array(counts) * global_batch / sum(counts)
    for row in batches:
        per_stream = np.bincount(stream_of(order, row), minlength=len(streams))
        assert per_stream.sum() == global_batch
        assert (np.abs(per_stream - share) < 1).all(), f"{per_stream} is not the share {share}"
        # Streams follow one another in stream order within the batch (the reference's layout).
        assert (np.diff(stream_of(order, row)) >= 0).all()
    assert (
        len(set(map(tuple, (np.bincount(stream_of(order, r), minlength=len(streams)) for r in batches)))) == 1
    )


@FAST
@given(streams=streams_strategy, shape=world_strategy, batch=st.integers(1, 4), shuffle=st.booleans())
def test_per_stream_global_batches_come_from_one_stream(
    streams: list[list[int]], shape: tuple[int, int, int], batch: int, shuffle: bool
) -> None:
    world = WorldShape(*shape)
    global_batch = batch * shape[0] * shape[1]
    order = make_order(streams, "per_stream", batch_size=batch, shuffle=shuffle)
    if any(sum(s) < global_batch for s in streams):
        small = next(k for k, s in enumerate(streams) if sum(s) < global_batch)
        with pytest.raises(ShuffleError, match=f"stream {small} has"):
            order.global_batch_ids(0, world)
        return
    batches = real_rows(order.global_batch_ids(0, world))
    origin = stream_of(order, batches)
    assert (origin == origin[:, :1]).all(), "a global batch mixes streams"
    # Every stream gives all its whole global batches (the sequence repeats at most a sample per row).
    per_stream = np.bincount(origin[:, 0], minlength=len(streams))
    rows = [-(-sum(s) // 4) * 4 for s in streams]  # 4 canonical nodes, short rows padded
    assert per_stream.tolist() == [n // global_batch for n in rows]
    for k in range(len(streams)):
        samples = batches[origin[:, 0] == k].ravel()
        assert np.bincount(samples - samples.min()).max() <= 2, "a sample more than twice"


@FAST
@given(streams=streams_strategy, shape=world_strategy, batch=st.integers(1, 4), shuffle=st.booleans())
def test_device_per_stream_device_batches_come_from_one_stream(
    streams: list[list[int]], shape: tuple[int, int, int], batch: int, shuffle: bool
) -> None:
    nodes = [1, 2, 4][shape[0] - 1]  # divides the 4 canonical nodes
    world = WorldShape(nodes, shape[1], shape[2])
    order = make_order(streams, "device_per_stream", batch_size=batch, shuffle=shuffle)
    epoch = order.epoch_sample_ids(2, world)
    devices = epoch.reshape(-1, batch)
    real = devices[(devices >= 0).all(axis=1)]
    assert ((devices >= 0).all(axis=1) | (devices < 0).all(axis=1)).all()
    origin = stream_of(order, real)
    assert (origin == origin[:, :1]).all(), "a device batch mixes streams"
    if shape[1] == 1:  # else the last ranks - 1 device batches of a node may be a small stream's only ones
        assert set(origin[:, 0].tolist()) == set(range(len(streams))), "every stream gives device batches"
    real_per_rank = (epoch >= 0).sum(axis=(2, 3, 4))
    assert (real_per_rank == real_per_rank.flat[0]).all(), "ranks read different numbers of samples"


@pytest.mark.parametrize("method", PER_STREAM_METHODS)
def test_worker_ids_are_the_epochs_slice_and_ranks_read_equally(method: str) -> None:
    order = make_order([[30, 25, 40], [17, 60], [33, 33]], method)
    world = WorldShape(2, 2, 3)
    for sample_in_epoch in (0, 16 * 3):
        epoch = order.epoch_sample_ids(1, world, sample_in_epoch)
        real = (epoch >= 0).sum(axis=(2, 3, 4))
        assert (real == real[0, 0]).all()
        for node in range(2):
            for rank in range(2):
                for worker in range(3):
                    ids = order.worker_sample_ids(1, world, node, rank, worker, sample_in_epoch)
                    assert np.array_equal(ids, epoch[node, rank, worker].ravel())


def test_locality_each_node_reads_its_canonical_nodes() -> None:
    # Unshuffled, one stream of 96 samples over 8 canonical nodes: sample i is on canonical node i // 12.
    world = WorldShape(2, 3, 2)
    order = make_order([[48, 48]], "per_stream", num_canonical_nodes=8, batch_size=2, shuffle=False)
    epoch = order.epoch_sample_ids(0, world)
    for node in range(2):  # as the partition: node p reads canonical nodes p, p + 2, ...
        ids = epoch[node][epoch[node] >= 0]
        assert set((ids // 12 % 2).tolist()) == {node}
    order = make_order([[48, 48]], "device_per_stream", num_canonical_nodes=8, batch_size=2, shuffle=False)
    epoch = order.epoch_sample_ids(0, world)
    for node in range(2):  # node p owns canonical nodes [4p, 4p + 4)
        ids = epoch[node][epoch[node] >= 0]
        assert set((ids // 12 // 4).tolist()) == {node}


@pytest.mark.parametrize("method", PER_STREAM_METHODS)
def test_deterministic_from_seed_and_epoch(method: str) -> None:
    streams = [[30, 25, 40], [17, 60], [33, 33]]
    world = WorldShape(2, 2, 2)
    first = make_order(streams, method).epoch_sample_ids(3, world)
    assert np.array_equal(first, make_order(streams, method).epoch_sample_ids(3, world))
    assert not np.array_equal(first, make_order(streams, method).epoch_sample_ids(4, world))
    assert not np.array_equal(first, make_order(streams, method, shuffle_seed=6).epoch_sample_ids(3, world))


@pytest.mark.parametrize("method", ("per_stream", "device_per_stream"))
def test_batch_order_changes_with_the_epoch_only_when_balanced_shuffling(method: str) -> None:
    streams = [[30, 25, 40], [17, 60], [33, 33]]
    world = WorldShape(1, 2, 1)

    def origins(order: SampleOrder, epoch: int) -> list[int]:
        return stream_of(order, order.global_batch_ids(epoch, world)[:, 0]).tolist()

    fixed = make_order(streams, method, shuffle=False)
    assert origins(fixed, 0) == origins(fixed, 1)
    assert len(set(origins(fixed, 0))) == 3
    assert origins(fixed, 0) != sorted(origins(fixed, 0)), "the streams' batches are interleaved"
    fixed = make_order(streams, method, sampling_method="fixed")
    assert origins(fixed, 0) == origins(fixed, 1)
    balanced = make_order(streams, method)
    assert origins(balanced, 0) != origins(balanced, 1)


GLOBAL = 24
SAME_GLOBAL_BATCH = [(1, 1, 1), (1, 2, 3), (2, 3, 1), (3, 2, 2), (4, 3, 4), (2, 4, 2), (6, 1, 1), (1, 24, 2)]


@pytest.mark.parametrize("method", ("stratified", "per_stream"))
def test_same_global_batches_for_every_world_with_the_global_batch_size(method: str) -> None:
    streams = [[30, 25, 40, 11], [17, 60, 5], [33, 33, 33]]
    expected = None
    for nodes, ranks, workers in SAME_GLOBAL_BATCH:
        order = make_order(streams, method, batch_size=GLOBAL // (nodes * ranks), num_canonical_nodes=6)
        batches = real_rows(order.global_batch_ids(2, WorldShape(nodes, ranks, workers)))
        if method == "per_stream":  # the partition's deal changes with the world: compare as sets
            batches = np.sort(batches, axis=1)
        if expected is None:
            expected = batches
        assert np.array_equal(batches, expected), f"world {nodes}x{ranks}x{workers} changed the batches"


def test_device_per_stream_node_sequence_is_the_same_for_any_ranks_and_workers() -> None:
    streams = [[30, 25, 40, 11], [17, 60, 5], [33, 33, 33]]
    nodes, batch = 2, 3
    sequences = []
    for ranks, workers in [(1, 1), (2, 3), (3, 1), (4, 2)]:
        order = make_order(streams, "device_per_stream", batch_size=batch)
        batches = real_rows(order.global_batch_ids(1, WorldShape(nodes, ranks, workers)))
        # Global batch s gives rank r of node p the node's device batch s * ranks + r.
        per_node = batches.reshape(-1, nodes, ranks, batch).transpose(1, 0, 2, 3).reshape(nodes, -1, batch)
        sequences.append(per_node)
    shortest = min(s.shape[1] for s in sequences)
    longest = max(s.shape[1] for s in sequences)
    assert longest - shortest < 4, "at most ranks - 1 device batches of a node are dropped"
    for per_node in sequences[1:]:
        assert np.array_equal(per_node[:, :shortest], sequences[0][:, :shortest])


@pytest.mark.parametrize("method", PER_STREAM_METHODS)
def test_resume_at_global_batch_boundaries_and_round_down(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    streams = [[30, 25, 40], [17, 60], [33, 33]]
    world = WorldShape(2, 2, 3)
    order = make_order(streams, method, batch_size=2)
    full = real_rows(order.global_batch_ids(0, world))
    for step in (0, 1, 5, full.shape[0] - 1, full.shape[0]):
        resumed = real_rows(order.global_batch_ids(0, world, sample_in_epoch=step * 8))
        assert np.array_equal(resumed, full[step:])
    with caplog.at_level(logging.WARNING, logger="shardflow.shuffle.batching"):
        rounded = real_rows(order.global_batch_ids(0, world, sample_in_epoch=5 * 8 + 3))
    assert np.array_equal(rounded, full[5:])
    assert any("resumes on whole global batches" in r.getMessage() for r in caplog.records)
    with pytest.raises(ShuffleError, match="sample_in_epoch"):
        order.global_batch_ids(0, world, sample_in_epoch=10**6)


@pytest.mark.parametrize("method", ("stratified", "per_stream"))
def test_resume_on_another_world_with_the_same_global_batch_size(method: str) -> None:
    streams = [[30, 25, 40, 11], [17, 60, 5], [33, 33, 33]]
    before = make_order(streams, method, batch_size=12)
    after = make_order(streams, method, batch_size=3)
    full = real_rows(before.global_batch_ids(1, WorldShape(1, 2, 2)))
    resumed = real_rows(after.global_batch_ids(1, WorldShape(2, 4, 3), sample_in_epoch=3 * GLOBAL))
    assert np.array_equal(np.sort(resumed, axis=1), np.sort(full[3:], axis=1))


def test_too_small_streams_are_errors_naming_the_stream() -> None:
    world = WorldShape(2, 2, 1)
    with pytest.raises(
        ShuffleError, match=r"stream 1 has 10 samples per epoch, less than one global batch of 16"
    ):
        make_order([[50], [4, 6]], "per_stream").global_batch_ids(0, world)
    with pytest.raises(ShuffleError, match=r"stream 1 has 6 samples per epoch, 4 per node over 2 nodes"):
        make_order([[50], [6]], "device_per_stream", batch_size=5).global_batch_ids(0, world)
    with pytest.raises(ShuffleError, match=r"stream 1 cannot fill its share .* get 0 of every global batch"):
        make_order([[500], [8]], "stratified").global_batch_ids(0, world)
    with pytest.raises(ShuffleError, match=r"stream 1 draws no samples per epoch"):
        make_order([[50], [60]], "per_stream", choose_per_stream=[50, 0]).global_batch_ids(0, world)
    with pytest.raises(
        ShuffleError, match=r"stream 1 draws 3 samples per epoch, fewer than num_canonical_nodes=4"
    ):
        make_order([[50], [3]], "stratified").global_batch_ids(0, world)
    with pytest.raises(
        ShuffleError, match=r"num_canonical_nodes=4 is not a multiple of num_physical_nodes=3"
    ):
        make_order([[50], [60]], "device_per_stream").global_batch_ids(0, WorldShape(3, 1, 1))
    with pytest.raises(
        ShuffleError, match=r"batching_method='per_device' is unknown: use one of random, strat"
    ):
        make_order([[50]], "per_device")
    with pytest.raises(ShuffleError, match=r"rank_of_node=2 is outside the world"):
        make_order([[50], [60]], "per_stream").worker_sample_ids(0, world, 0, 2, 0)


def test_dropped_samples_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shardflow.shuffle.batching"):
        make_order([[41], [57]], "per_stream").global_batch_ids(0, WorldShape(1, 2, 1))
    assert any("do not fill a whole global batch" in r.getMessage() for r in caplog.records)


def test_random_is_the_default_and_unchanged() -> None:
    assert BATCHING_METHODS == ("random", "stratified", "per_stream", "device_per_stream")
    streams = [[30, 25, 40], [17, 60]]
    world = WorldShape(2, 2, 2)
    default = make_order(streams, "random").epoch_sample_ids(1, world)
    args = {
        "num_canonical_nodes": 4,
        "batch_size": 4,
        "shuffle": True,
        "shuffle_block_size": 64,
        "shuffle_seed": 5,
    }
    plain = SampleOrder([30, 25, 40, 17, 60], shards_per_stream=[3, 2], **args)  # type: ignore[arg-type]
    assert np.array_equal(default, plain.epoch_sample_ids(1, world))
    steps = plain.global_batch_ids(1, world)  # step s: batch s // workers of worker s % workers, every rank
    assert np.array_equal(steps[1].reshape(2, 2, 4), default[:, :, 1, 0])
