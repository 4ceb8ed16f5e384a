"""ShardPool: shards open while some user holds them, shared safely by threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from shardflow.dataset import StreamingDataset
from shardflow.dataset.pool import ShardPool
from shardflow.dataset.world import WorkerSlot


def _pool(remote: Path, local: Path) -> tuple[StreamingDataset, ShardPool]:
    dataset = StreamingDataset(remote=str(remote), local=str(local))
    return dataset, dataset.pool


def test_a_shard_stays_open_until_its_last_user_lets_go(tokens_remote: Path, tmp_path: Path) -> None:
    _, pool = _pool(tokens_remote, tmp_path)
    first, second = pool.lease(), pool.lease()
    first.request(0)
    second.request(0)
    assert pool.reader(0).get(0)["id"] == 0
    first.close()
    assert pool.open_shards() == [0], "the other lease still reads it"
    second.close()
    assert pool.open_shards() == []


def test_random_reads_hold_their_shards_apart_from_iterations(tokens_remote: Path, tmp_path: Path) -> None:
    dataset, pool = _pool(tokens_remote, tmp_path)
    lease = pool.lease()
    lease.request(1)
    start = int(dataset.sample_offset_per_shard[1])
    assert dataset[start]["id"] == start
    lease.close()
    assert pool.open_shards() == [1], "the random read keeps it"
    pool.release(1)
    assert pool.open_shards() == []


def test_a_read_without_a_hold_is_refused(tokens_remote: Path, tmp_path: Path) -> None:
    _, pool = _pool(tokens_remote, tmp_path)
    with pytest.raises(RuntimeError, match="without a hold"):
        pool.reader(2)


def test_threads_iterating_one_pool_read_what_each_reads_alone(tokens_remote: Path, tmp_path: Path) -> None:
    """Eight threads read their slots of an epoch at once through one pool, as they would alone."""
    dataset, pool = _pool(tokens_remote, tmp_path)
    slots = [WorkerSlot(k, 8) for k in range(8)]
    expected = [dataset.worker_sample_ids(0, slot=slot).tolist() for slot in slots]
    got: list[list[int]] = [[] for _ in slots]

    def read(k: int) -> None:
        for _ in range(3):
            got[k] = [sample["id"] for sample in dataset.iter_worker(slots[k], 0)]

    threads = [threading.Thread(target=read, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == expected
    assert sorted(np.concatenate(got).tolist()) == list(range(dataset.num_samples))
    assert pool.open_shards() == []


def test_worker_slots_are_checked() -> None:
    with pytest.raises(ValueError, match="index an int in"):
        WorkerSlot(2, 2)
