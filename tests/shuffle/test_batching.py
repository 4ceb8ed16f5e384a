"""Batching methods: what every global and device batch is made of, determinism, resume, refusals.

That the values are mosaicml-streaming 0.13's is tested in tests/compat/test_reference_order.py.
"""

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
    """The global batches without padding (as the reference, a batch may hold some partition padding)."""
    return batches[(batches >= 0).all(axis=1)]


def stripped(batches: np.ndarray) -> np.ndarray:
    """The global batches up to the last one holding a sample (the trailing padding for the workers off)."""
    holding = np.flatnonzero((batches >= 0).any(axis=1))
    return batches[: holding[-1] + 1 if holding.size else 0]


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
    batches = real_rows(order.global_batch_ids(1, world))
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
    world = WorldShape([1, 2, 4][shape[0] - 1], shape[1], shape[2])  # the partition needs them to divide 4
    order = make_order(streams, "per_stream", batch_size=batch, shuffle=shuffle)
    try:
        batches = order.global_batch_ids(0, world)
    except ShuffleError as error:  # a stream without a global batch free of partition padding (the
        assert "does not fill one global batch" in str(error)  # partition may repeat samples to fill one,
        return  # so a stream smaller than a global batch is not always refused: as in the reference)
    for row in batches:
        origin = stream_of(order, row[row >= 0])
        assert (origin == origin[:1]).all(), "a global batch mixes streams"
    real = real_rows(batches)
    assert set(stream_of(order, real[:, 0]).tolist()) == set(range(len(streams))), "a stream is missing"


@FAST
@given(streams=streams_strategy, shape=world_strategy, batch=st.integers(1, 4), shuffle=st.booleans())
def test_device_per_stream_device_batches_come_from_one_stream(
    streams: list[list[int]], shape: tuple[int, int, int], batch: int, shuffle: bool
) -> None:
    nodes = [1, 2, 4][shape[0] - 1]  # divides the 4 canonical nodes
    world = WorldShape(nodes, shape[1], shape[2])
    order = make_order(streams, "device_per_stream", batch_size=batch, shuffle=shuffle)
    try:
        epoch = order.epoch_sample_ids(2, world)
    except ShuffleError as error:  # a stream without a whole device batch on a node
        assert "less than one device batch" in str(error)
        return
    devices = epoch.reshape(-1, batch)
    assert ((devices >= 0).all(axis=1) | (devices < 0).all(axis=1)).all(), "a device batch is partly padding"
    origin = stream_of(order, devices[(devices >= 0).all(axis=1)])
    assert (origin == origin[:, :1]).all(), "a device batch mixes streams"
    assert set(origin[:, 0].tolist()) == set(range(len(streams))), "every stream gives device batches"


@pytest.mark.parametrize("method", PER_STREAM_METHODS)
def test_worker_ids_are_the_epochs_slice(method: str) -> None:
    order = make_order([[30, 25, 40], [17, 60], [33, 33]], method)
    world = WorldShape(2, 2, 3)
    for sample_in_epoch in (0, 16 * 3):
        epoch = order.epoch_sample_ids(1, world, sample_in_epoch)
        for node in range(2):
            for rank in range(2):
                for worker in range(3):
                    ids = order.worker_sample_ids(1, world, node, rank, worker, sample_in_epoch)
                    assert np.array_equal(ids, epoch[node, rank, worker].ravel())


def test_per_stream_locality_each_node_reads_its_canonical_nodes() -> None:
    # Unshuffled, one stream of 96 samples over 8 canonical nodes: sample i is on canonical node i // 12.
    world = WorldShape(2, 3, 2)
    order = make_order([[48, 48]], "per_stream", num_canonical_nodes=8, batch_size=2, shuffle=False)
    epoch = order.epoch_sample_ids(0, world)
    for node in range(2):  # as the partition: node p reads canonical nodes p, p + 2, ...
        ids = epoch[node][epoch[node] >= 0]
        assert set((ids // 12 % 2).tolist()) == {node}


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
        return stream_of(order, real_rows(order.global_batch_ids(epoch, world))[:, 0]).tolist()

    fixed = make_order(streams, method, shuffle=False)
    assert origins(fixed, 0) == origins(fixed, 1)
    assert len(set(origins(fixed, 0))) == 3
    assert origins(fixed, 0) != sorted(origins(fixed, 0)), "the streams' batches are interleaved"
    fixed = make_order(streams, method, sampling_method="fixed")
    assert origins(fixed, 0) == origins(fixed, 1)
    balanced = make_order(streams, method)
    assert origins(balanced, 0) != origins(balanced, 1)


@pytest.mark.parametrize("method", PER_STREAM_METHODS)
def test_resume_at_global_batch_boundaries_and_round_down(method: str) -> None:
    streams = [[30, 25, 40], [17, 60], [33, 33]]
    world = WorldShape(2, 2, 3)
    order = make_order(streams, method, batch_size=2)
    full = stripped(order.global_batch_ids(0, world))
    for step in (0, 1, 5, full.shape[0] - 1, min(full.shape[0], (order.epoch_size + 8) // 8)):
        resumed = stripped(order.global_batch_ids(0, world, sample_in_epoch=step * 8))
        assert np.array_equal(resumed, full[step:])
    with pytest.warns(UserWarning, match="resumes on whole global batches"):
        rounded = stripped(order.global_batch_ids(0, world, sample_in_epoch=5 * 8 + 3))
    assert np.array_equal(rounded, full[5:])
    with pytest.raises(ShuffleError, match="sample_in_epoch"):
        order.global_batch_ids(0, world, sample_in_epoch=10**6)


def test_too_small_streams_are_errors_naming_the_stream() -> None:
    world = WorldShape(2, 2, 1)
    with pytest.raises(
        ShuffleError, match=r"stream 1 \(10 samples this epoch\) does not fill one global batch"
    ):
        make_order([[50], [4, 6]], "per_stream").global_batch_ids(0, world)
    with pytest.raises(
        ShuffleError, match=r"stream 1 \(6 samples this epoch\) has .* less than one device batch"
    ):
        make_order([[50], [6]], "device_per_stream", batch_size=5).global_batch_ids(0, world)
    with pytest.raises(ShuffleError, match=r"stream 1 gets 0 samples of every global batch of 16"):
        make_order([[500], [8]], "stratified").global_batch_ids(0, world)
    with pytest.raises(ShuffleError, match=r"stream 1 draws no samples per epoch"):
        make_order([[50], [60]], "per_stream", choose_per_stream=[50, 0]).global_batch_ids(0, world)
    with pytest.raises(ShuffleError, match=r"stream 1 \(3 samples this epoch\) cannot be ordered alone"):
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
    assert any("drops 1 global batch(s) of stream" in r.getMessage() for r in caplog.records)


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
