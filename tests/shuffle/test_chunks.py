"""SampleOrder.worker_sample_id_chunks: exactly worker_sample_ids, whole batches, memory bounded per chunk."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shardflow.shuffle import SHUFFLE_ALGOS, SampleOrder, ShuffleError, WorldShape, batching

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def joined(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.empty(0, np.int64)


def check_chunks(order: SampleOrder, chunk_batches: int | None, *args: object) -> None:
    """The chunks of ``order`` for ``args`` join to ``worker_sample_ids(*args)`` and are whole batches."""
    expected = order.worker_sample_ids(*args)  # type: ignore[arg-type]
    chunks = list(order.worker_sample_id_chunks(*args, chunk_batches=chunk_batches))  # type: ignore[arg-type]
    assert np.array_equal(joined(chunks), expected)
    per_chunk = (chunk_batches or max(1, 65536 // order.batch_size)) * order.batch_size
    for k, chunk in enumerate(chunks):
        assert chunk.dtype == np.int64 and chunk.ndim == 1
        assert chunk.shape[0] % order.batch_size == 0 and chunk.shape[0] > 0, "a chunk of part of a batch"
        if k < len(chunks) - 1:
            assert chunk.shape[0] == per_chunk


@st.composite
def random_setups(draw: st.DrawFn) -> tuple[SampleOrder, tuple[object, ...], int | None]:
    nodes, ranks, workers = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    partition_algo = draw(st.sampled_from(["orig", "relaxed"]))
    if partition_algo == "orig":  # canonical and physical nodes divide one another
        canonical = draw(
            st.sampled_from([nodes * m for m in (1, 2, 3)] + [d for d in (1, 2) if nodes % d == 0])
        )
        initial = None
    else:
        canonical = draw(st.integers(1, 8))
        divides = canonical % nodes == 0 or nodes % canonical == 0
        initial = None if divides else 1  # the first run had 1 node: any global batch splits over its ranks
    sizes = draw(st.lists(st.integers(1, 80), min_size=8, max_size=24))
    streams = draw(st.integers(1, min(3, len(sizes))))
    shards_per_stream = [len(sizes) // streams] * (streams - 1)
    shards_per_stream.append(len(sizes) - sum(shards_per_stream))
    choose = None
    if draw(st.booleans()):  # resampled: partial repeats, ids that are not positions
        choose = [draw(st.integers(1, 150)) for _ in range(streams)]
    algo = draw(st.sampled_from((None, *SHUFFLE_ALGOS)))
    order = SampleOrder(
        np.asarray(sizes),
        canonical,
        draw(st.integers(1, 7)),
        shards_per_stream=shards_per_stream,
        choose_per_stream=choose,
        shuffle=algo is not None,
        shuffle_algo=algo or "py1e",
        shuffle_seed=draw(st.integers(0, 2**20)),
        shuffle_block_size=draw(st.sampled_from([2, 7, 64, 300, 600, 2048])),  # py1e_fast tiles of 1 and 2+
        partition_algo=partition_algo,
        sampling_method=draw(st.sampled_from(["balanced", "fixed"])),
    )
    assume(algo is None or order.epoch_size >= canonical)
    world = WorldShape(nodes, ranks, workers)
    resume = draw(st.integers(0, order.epoch_size))
    coordinates = (
        draw(st.integers(0, nodes - 1)),
        draw(st.integers(0, ranks - 1)),
        draw(st.integers(0, workers - 1)),
    )
    chunk_batches = draw(st.one_of(st.none(), st.integers(1, 6)))
    return order, (draw(st.integers(0, 3)), world, *coordinates, resume, initial), chunk_batches


@FAST
@given(setup=random_setups())
def test_chunks_join_to_worker_sample_ids(setup: tuple[SampleOrder, tuple[object, ...], int | None]) -> None:
    order, args, chunk_batches = setup
    check_chunks(order, chunk_batches, *args)


@pytest.mark.parametrize("method", ["stratified", "per_stream", "device_per_stream"])
@pytest.mark.parametrize("chunk_batches", [None, 1, 3])
def test_chunks_of_other_batching_methods(method: str, chunk_batches: int | None) -> None:
    batching._warned.clear()
    order = SampleOrder(
        np.array([40, 35, 50, 20, 60, 45], np.int64),
        4,
        3,
        shards_per_stream=[2, 1, 3],
        shuffle=True,
        shuffle_block_size=32,
        batching_method=method,
    )
    world = WorldShape(2, 2, 3)
    for node, rank, worker in [(0, 0, 0), (1, 1, 2), (0, 1, 1)]:
        for resume in (0, 12, 61):
            check_chunks(order, chunk_batches, 1, world, node, rank, worker, resume)


def test_large_chunks_and_many_batches() -> None:
    order = SampleOrder(np.full(50, 997), 8, 5, shuffle=True, shuffle_algo="py1br", shuffle_block_size=3000)
    world = WorldShape(2, 2, 2)
    check_chunks(order, None, 2, world, 1, 0, 1, 777)  # the default: one chunk of ~64k ids
    check_chunks(order, 1, 2, world, 1, 0, 1, 777)
    check_chunks(order, 10**9, 2, world, 0, 1, 0)


def test_arguments_are_checked_at_the_call() -> None:
    order = SampleOrder(np.full(10, 50), 2, 4, shuffle=True)
    world = WorldShape(1, 2, 2)
    for chunk_batches in (0, -3, 1.5, True, "2"):
        with pytest.raises(ShuffleError, match=rf"chunk_batches={chunk_batches!r}: give a positive number"):
            order.worker_sample_id_chunks(0, world, 0, 0, 0, chunk_batches=chunk_batches)  # type: ignore[arg-type]
    for kwargs, name in (
        ({"epoch": -1}, "epoch"),
        ({"node": 1}, "node=1"),
        ({"rank_of_node": 2}, "rank_of_node=2"),
        ({"worker_of_rank": 0.5}, "worker_of_rank=0.5"),
        ({"sample_in_epoch": 10**6}, "sample_in_epoch"),
    ):
        args: dict[str, object] = {
            "epoch": 0,
            "world": world,
            "node": 0,
            "rank_of_node": 0,
            "worker_of_rank": 0,
        }
        args.update(kwargs)
        with pytest.raises(ShuffleError, match=name):
            order.worker_sample_id_chunks(**args)  # type: ignore[arg-type]
    small = SampleOrder(np.full(2, 3), 8, 4, shuffle=True)  # more canonical nodes than samples
    with pytest.raises(ShuffleError, match="num_canonical_nodes=8"):
        small.worker_sample_id_chunks(0, world, 0, 0, 0)
    too_small = SampleOrder(np.array([100, 2]), 2, 4, shards_per_stream=[1, 1], batching_method="per_stream")
    with pytest.raises(ShuffleError, match="stream 1"):
        too_small.worker_sample_id_chunks(0, world, 0, 0, 0)


def _peak_traced(samples: int, algo: str) -> int:
    """Peak traced memory of iterating one worker's chunks (1000 shards, only their size changes)."""
    order = SampleOrder(np.full(1000, samples // 1000), 8, 32, shuffle=True, shuffle_algo=algo)
    world = WorldShape(1, 2, 2)
    gc.collect()
    tracemalloc.start()
    try:
        count = 0
        for chunk in order.worker_sample_id_chunks(1, world, 0, 1, 1, sample_in_epoch=12345):
            count += chunk.shape[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count >= (samples - 12345) // 4
    return peak


@pytest.mark.parametrize("algo", ["py1e_fast", "py1s_fast"])
def test_memory_does_not_grow_with_the_sample_count(algo: str) -> None:
    """2M vs 20M samples: the same peak, a few chunks' worth, where worker_sample_ids holds 120 MB at 20M.

    The fast variants only: the reference's orders hold the ids of the canonical nodes a worker reads.

    The margin is what numpy's stable argsort of a chunk's positions may take more (up to half a chunk),
    and py1s's shuffle chunk, a shard, 10 times larger. numba's own allocations (py1e's tile tables, 1 in
    about 1000 samples) are not traced.
    """
    _peak_traced(2_000_000, algo)  # load the kernels outside the measurement
    small, large = _peak_traced(2_000_000, algo), _peak_traced(20_000_000, algo)
    chunk_bytes = 65536 * 8
    assert large <= small + chunk_bytes // 2, f"peak {small} bytes at 2M samples, {large} at 20M"
    assert large < 6 * chunk_bytes, f"peak {large} bytes: more than a few chunks"
