"""cache_limit across real processes on one host: eviction under pressure, and many jobs at once.

(The S3 runs with ranks, workers, torchrun and ``kill -9`` are in ``test_s3.py``.)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

import pytest

from shardflow.format import TEMP_NAME, read_shards

from ._dataset_rank import clean_env, run_ranks
from .conftest import write_tokens
from .test_cache import index_bytes, shard_bytes

NUM_SAMPLES = 2000
TIMEOUT = 300  # seconds for every process of a test; only a hang gets near it


class FolderSampler:
    """Measures a cache folder's shard bytes every 50 ms in a thread; ``peak`` is the largest seen."""

    def __init__(self, *folders: Path) -> None:
        self.folders = folders
        self.peak = dict.fromkeys(folders, 0)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for folder in self.folders:
                self.peak[folder] = max(self.peak[folder], shard_bytes(folder))
            self.samples += 1

    def __enter__(self) -> FolderSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


def largest_shard(folder: Path) -> int:
    return max(sum(f.bytes for f in (*s.raw_files, *s.zip_files)) for s in read_shards(folder))


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 token samples in about 50 shards, in a local folder that plays the remote."""
    return write_tokens(tmp_path_factory.mktemp("pressure") / "remote", NUM_SAMPLES)


def reader_config(remote: Path, local: Path, seed: int, **extra: object) -> dict:
    return {
        "remote": str(remote),
        "local": str(local),
        "batch_size": 8,
        "workers": 0,
        "mode": "env",
        "check_values": True,
        "shuffle_seed": seed,
        **extra,
    }


@pytest.mark.slow
def test_four_processes_share_a_cache_that_holds_three_shards(remote: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    largest = largest_shard(remote)
    limit = 3 * largest + index_bytes(remote)  # the index counts too, as in the reference
    configs = [reader_config(remote, cache, 100 + k, cache_limit=limit, predownload=8) for k in range(4)]
    with FolderSampler(cache) as sampler:
        reports = run_ranks(configs, [clean_env()] * 4, tmp_path, TIMEOUT)
    for report in reports:
        assert sorted(i for batch in report["batches"] for i in batch) == list(range(NUM_SAMPLES))
        assert report["bad"] == []
    shards = len(read_shards(remote))
    downloads = sum(report["cache"]["downloads"] for report in reports)
    redownloads = sum(report["cache"]["redownloads"] for report in reports)
    print(f"4 processes, a cache of 3 shards: {downloads} downloads of {shards} shards, {redownloads} again")
    assert downloads == shards + redownloads and redownloads > 0
    # The folder holds at most the limit, or the downloads in flight when they alone need more (each of
    # the 4 processes fetches at most predownload=8 shards ahead).
    assert sampler.samples > 10 and sampler.peak[cache] <= max(limit, 4 * 8 * largest)
    assert not [p for p in cache.rglob("*") if TEMP_NAME.match(p.name)]


@pytest.mark.slow
def test_twenty_processes_at_once_ten_sharing_a_folder(remote: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    limit = NUM_SAMPLES // 2 * 60 + index_bytes(remote)  # about half the dataset (60 bytes a sample)
    configs = [
        reader_config(remote, shared, k, cache_limit=limit, predownload=8)
        if k < 10
        else reader_config(remote, tmp_path / f"own-{k}", k)
        for k in range(20)
    ]
    reports = run_ranks(configs, [clean_env()] * 20, tmp_path, TIMEOUT)
    for report in reports:
        assert sorted(i for batch in report["batches"] for i in batch) == list(range(NUM_SAMPLES))
        assert report["bad"] == []
    for k in range(10, 20):  # the private folders hold the whole dataset, downloaded once
        assert (
            reports[k]["cache"]["downloads"] == len(read_shards(remote))
            and reports[k]["cache"]["evictions"] == 0
        )
    assert shard_bytes(shared) <= limit
    assert not [p for p in tmp_path.rglob("*") if TEMP_NAME.match(p.name)]
    assert os.listdir(shared / ".shardflow-cache")
