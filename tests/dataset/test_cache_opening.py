"""Making room under a limit passes over a shard that a process waits to open (its ``open`` lock), and
makes room again when a download lands.

Found by benchmarks/plan_bench.py: with 2 ranks x 2 workers under a tight limit, a worker's download of the
next shard evicted the shard that had just arrived while the other processes were still waiting for its
download lock, and each of them downloaded it again.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from shardflow.dataset.cache import (
    NodeCache,
    Origin,
    acquire,
    footprint,
    lock_path,
    open_cached,
    probe,
    release,
    tombstone_path,
)
from shardflow.dataset.cache.fill import identity
from shardflow.format import read_shards

from .conftest import token_sample


def test_a_shard_that_arrives_while_another_process_waits_for_it_is_not_evicted_before_it_opens(
    tokens_remote: Path, tmp_path: Path
) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    shutil.copy(tokens_remote / "index.json", root / "index.json")
    shards = read_shards(root)
    fetched: list[str] = []

    def download(name: str, path: Path) -> None:
        fetched.append(name)
        shutil.copy(tokens_remote / name, path)

    origin = Origin(root, str(tokens_remote), "v1", download)
    first, second = shards[:2]
    one_shard = max(footprint(shard) for shard in shards[:2])
    cache = NodeCache([root], limit=one_shard + one_shard // 2, timeout=10)  # room for one shard

    # "Another process" downloads the first shard: it holds the shard's download lock meanwhile.
    downloading = acquire(lock_path(root, first.basename), 10, "the test's download")
    opened: list = []
    waiter = threading.Thread(target=lambda: opened.append(open_cached(origin, first, cache)))
    waiter.start()  # finds the shard missing and waits for the download lock, marked as opening it
    deadline = time.monotonic() + 10
    while not probe(lock_path(root, first.basename, "open")).held:
        assert time.monotonic() < deadline, "open_cached never marked the shard as being opened"
        time.sleep(0.01)
    time.sleep(0.3)  # the waiter now polls the lock every 50 ms
    files = [file.basename for file in first.raw_files]
    cache.reserve(root, first.basename, files, footprint(first), identity(origin, first))
    download(first.basename, root / first.basename)
    cache.record(root, first.basename, files, footprint(first), identity(origin, first))
    release(downloading)

    # at once, the downloader's next shard needs room: the first one is the only shard to evict
    downloading = acquire(lock_path(root, second.basename), 10, "the test's second download")
    files = [file.basename for file in second.raw_files]
    cache.reserve(root, second.basename, files, footprint(second), identity(origin, second))
    assert (root / first.basename).exists(), "the shard was evicted while a process waited to open it"
    assert not tombstone_path(root, first.basename).exists()

    waiter.join(10)
    assert opened and opened[0].get(0)["id"] == token_sample(0)["id"]
    assert fetched == [first.basename], "the waiting process downloaded the shard again"
    assert cache.redownloads == 0
    opened[0].close()

    # when the second shard lands, the first (opened meanwhile) is evicted: the folder is within the limit
    download(second.basename, root / second.basename)
    cache.record(root, second.basename, files, footprint(second), identity(origin, second))
    cache.landed(root, second.basename)
    release(downloading)
    assert not (root / first.basename).exists() and tombstone_path(root, first.basename).exists()
    assert (root / second.basename).exists()
