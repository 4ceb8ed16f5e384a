"""cache_limit in one process: the folder stays within it, every sample is right, and nothing that the cache
did not download is ever deleted. (Several processes and kills: ``test_cache_processes.py``.)"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from shardflow.dataset import DatasetConfigError, ShardWaitTimeout, StreamingDataset
from shardflow.dataset.cache import (
    CACHE_FOLDER,
    LOCK_FOLDER,
    acquire,
    limit_status,
    lock_path,
    read_entries,
    try_lock,
)
from shardflow.format import TEMP_NAME

from .conftest import token_sample

BOOKKEEPING = {LOCK_FOLDER, CACHE_FOLDER}


def shard_bytes(root: Path) -> int:
    """Bytes of every file in a cache folder but the index and the cache's own bookkeeping."""
    total = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if name not in BOOKKEEPING]
        for name in files:
            if name != "index.json":
                try:
                    total += os.stat(os.path.join(folder, name)).st_size
                except FileNotFoundError:  # renamed or evicted since it was listed
                    pass
    return total


def remote_bytes(remote: Path) -> int:
    return sum(p.stat().st_size for p in remote.glob("shard.*"))


def index_bytes(remote: Path) -> int:
    """The index.json bytes that cache_limit counts (as the reference does), besides the shards."""
    return (remote / "index.json").stat().st_size


def check_sample(sample: dict) -> None:
    want = token_sample(int(sample["id"]))
    assert sample["text"] == want["text"]
    assert np.array_equal(sample["tokens"], want["tokens"])


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's (inode, modification time) under ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_an_epoch_within_a_quarter_of_the_dataset(tokens_remote: Path, tmp_path: Path) -> None:
    limit = remote_bytes(tokens_remote) // 4 + index_bytes(tokens_remote)
    ds = StreamingDataset(
        remote=str(tokens_remote),
        local=str(tmp_path),
        cache_limit=limit,
        shuffle=True,
        shuffle_block_size=100,
    )
    seen, worst = [], 0
    for sample in ds:
        check_sample(sample)
        seen.append(int(sample["id"]))
        worst = max(worst, shard_bytes(tmp_path))
    assert sorted(seen) == list(range(1000))
    assert 0 < worst <= limit
    stats = ds.cache_stats()
    assert stats["downloads"] >= len(ds.shards) and stats["evictions"] > 0
    assert sum(entry.bytes for entry in read_entries(tmp_path)) <= limit
    assert limit_status(tmp_path) == {"bytes": limit, "pid": os.getpid(), "pid_alive": True}


def test_a_second_epoch_downloads_evicted_shards_again_and_counts_them(
    tokens_remote: Path, tmp_path: Path
) -> None:
    limit = remote_bytes(tokens_remote) // 4 + index_bytes(tokens_remote)
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit=limit, shuffle=True)
    for _ in range(2):
        assert sorted(int(s["id"]) for s in ds) == list(range(1000))
    stats = ds.cache_stats()
    assert stats["redownloads"] > 0
    assert stats["downloads"] == len(ds.shards) + stats["redownloads"]
    assert shard_bytes(tmp_path) <= limit


def test_compressed_shards_count_both_files_while_they_arrive(zstd_remote: Path, tmp_path: Path) -> None:
    ds0 = StreamingDataset(remote=str(zstd_remote), local=str(tmp_path / "probe"))
    largest = max(sum(f.bytes for f in (*s.raw_files, *s.zip_files)) for s in ds0.shards)
    limit = 4 * largest + index_bytes(zstd_remote)
    for keep_zip in (False, True):
        local = tmp_path / f"keep-{keep_zip}"
        ds = StreamingDataset(
            remote=str(zstd_remote), local=str(local), cache_limit=limit, keep_zip=keep_zip, predownload=8
        )
        for sample in ds:
            check_sample(sample)
            assert shard_bytes(local) <= limit
        assert bool(list(local.glob("*.zstd"))) is keep_zip


def test_a_limit_too_small_names_the_smallest_workable_one(tokens_remote: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DatasetConfigError, match=r"cache_limit='1kb'.*smallest workable limit is ([\d,]+) bytes"
    ) as e:
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit="1kb")
    smallest = int(str(e.value).split("smallest workable limit is ")[1].split(" bytes")[0].replace(",", ""))
    with pytest.raises(DatasetConfigError, match="smallest workable"):
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit=smallest - 1)
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit=smallest, shuffle=True)
    assert sorted(int(s["id"]) for s in ds) == list(range(1000))
    assert shard_bytes(tmp_path) <= smallest


def test_local_only_streams_are_never_evicted(tokens_remote: Path, tmp_path: Path) -> None:
    local = tmp_path / "local"
    shutil.copytree(tokens_remote, local)
    before = snapshot(local)
    ds = StreamingDataset(
        local=str(local),
        cache_limit=remote_bytes(tokens_remote) // 4 + index_bytes(tokens_remote),
        shuffle=True,
    )
    assert sorted(int(s["id"]) for s in ds) == list(range(1000))
    assert {k: v for k, v in snapshot(local).items() if not BOOKKEEPING & set(Path(k).parts)} == before
    assert ds.cache_stats() == {"downloads": 0, "redownloads": 0, "evictions": 0}


def test_files_in_local_before_the_run_are_never_evicted(tokens_remote: Path, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    mine = sorted(tokens_remote.glob("shard.*"))[::2]
    for path in mine:
        shutil.copy2(path, local / path.name)
    before = snapshot(local)
    limit = remote_bytes(tokens_remote) // 4 + index_bytes(tokens_remote)
    ds = StreamingDataset(remote=str(tokens_remote), local=str(local), cache_limit=limit, shuffle=True)
    assert sorted(int(s["id"]) for s in ds) == list(range(1000))
    after = snapshot(local)
    assert {name: after[name] for name in before} == before, "a file that was there before was touched"
    assert ds.cache_stats()["downloads"] == len(ds.shards) - len(mine)
    downloaded = shard_bytes(local) - sum(p.stat().st_size for p in mine)
    assert downloaded <= limit


def test_what_a_killed_download_left_is_cleaned_and_recounted(tokens_remote: Path, tmp_path: Path) -> None:
    """A crash after a reservation leaves an entry without its files and a temporary file: the next run
    evicts the entry (its bytes were only reserved), removes the temporary file and reads every sample."""
    ds0 = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path))
    shard = ds0.shards[3]
    (tmp_path / f".{shard.basename}.999999-0badf00d.tmp").write_bytes(b"half a shard")
    entries = tmp_path / CACHE_FOLDER
    entries.mkdir(exist_ok=True)
    (entries / f"{shard.basename}.json").write_text(
        json.dumps({"name": shard.basename, "files": [shard.basename], "bytes": 10**6})
    )
    (entries / f".{shard.basename}.json.999999-0badf00d.tmp").write_text("{")
    limit = remote_bytes(tokens_remote) // 4 + index_bytes(tokens_remote)
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit=limit, shuffle=True)
    for sample in ds:
        check_sample(sample)
    assert not [p for p in tmp_path.rglob("*") if TEMP_NAME.match(p.name)]
    assert sum(entry.bytes for entry in read_entries(tmp_path)) <= limit


def test_a_lock_wait_times_out_naming_the_lock_what_it_guards_and_its_holder(
    tmp_path: Path, held_lock: Callable[[Path], int]
) -> None:
    path = lock_path(tmp_path, "shard.00007.mds")
    pid = held_lock(path)
    started = time.monotonic()
    with pytest.raises(ShardWaitTimeout) as caught:
        acquire(path, 0.3, "s3://bucket/ds/shard.00007.mds")
    assert 0.3 <= time.monotonic() - started < 5
    message = str(caught.value)
    assert str(path) in message and "s3://bucket/ds/shard.00007.mds" in message and f"pid {pid}" in message
    shared = try_lock(path, shared=True)
    assert shared is None, "a shared lock is refused while another process holds it exclusively"


@pytest.mark.slow
def test_a_shard_another_process_keeps_downloading_times_out_naming_it(
    tokens_remote: Path, tmp_path: Path, held_lock: Callable[[Path], int]
) -> None:
    ds = StreamingDataset(
        remote=str(tokens_remote),
        local=str(tmp_path),
        download_timeout=0.25,
        download_retry=0,
        cache_limit="1mb",
    )
    pid = held_lock(lock_path(tmp_path, ds.shards[2].basename))
    started = time.monotonic()
    with pytest.raises(ShardWaitTimeout, match=f"held by pid {pid}") as caught:
        ds[ds._starts[2]]
    assert ds.streams[0].wait_timeout <= time.monotonic() - started < 2 * ds.streams[0].wait_timeout
    assert str(tokens_remote / ds.shards[2].basename) in str(caught.value)
    assert ds[ds._starts[3]]["id"] == ds._starts[3], "other shards are not held up"


def test_a_shard_evicted_while_open_is_unmapped_once_its_stretch_of_samples_is_read(
    tokens_remote: Path, tmp_path: Path
) -> None:
    """The disk holds the folder plus the evicted shards a reader still maps: those are released as soon
    as the rest of the reader's window has no sample of theirs, not at the window's end."""
    total = remote_bytes(tokens_remote)
    ds = StreamingDataset(
        remote=str(tokens_remote),
        local=str(tmp_path),
        cache_limit=total // 4 + index_bytes(tokens_remote),
        shuffle=True,
        shuffle_block_size=200,
        predownload=8,
    )
    # py1e spreads a shard's samples over about a block, so about a block's worth of shards are in use at once
    per_block = math.ceil(200 / min(s.samples for s in ds.shards)) + 2
    largest = max(s.raw_files[0].bytes for s in ds.shards)
    worst_mapped, seen = 0, 0
    for sample in ds:
        check_sample(sample)
        seen += 1
        gone = [k for k in ds.open_shards() if not (tmp_path / ds.shards[k].basename).exists()]
        worst_mapped = max(worst_mapped, len(gone))
        assert shard_bytes(tmp_path) + len(gone) * largest <= total // 4 + per_block * largest
    assert seen == 1000 and 0 < worst_mapped <= per_block


def test_a_shuffle_that_reads_more_shards_at_once_than_the_limit_holds_is_warned_of(
    tokens_remote: Path, tmp_path: Path
) -> None:
    limit = remote_bytes(tokens_remote) // 4 + index_bytes(tokens_remote)
    with pytest.warns(UserWarning, match="reads at once") as caught:
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit=limit, shuffle=True)
    (warning,) = [str(w.message) for w in caught if "reads at once" in str(w.message)]
    assert (
        "shuffle_block_size=4000000" in warning and "lower shuffle_block_size or raise cache_limit" in warning
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StreamingDataset(
            remote=str(tokens_remote),
            local=str(tmp_path),
            cache_limit=2 * limit,  # 5.5 shards and the index; a block of 100 samples spans 3
            shuffle=True,
            shuffle_block_size=100,
        )
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit=limit)  # in order: 2


def test_random_access_under_a_limit_keeps_only_what_the_limit_holds_open(
    tokens_remote: Path, tmp_path: Path
) -> None:
    total = remote_bytes(tokens_remote)
    ds = StreamingDataset(
        remote=str(tokens_remote), local=str(tmp_path), cache_limit=total // 4 + index_bytes(tokens_remote)
    )
    largest = max(s.raw_files[0].bytes for s in ds.shards)
    holds = total // 4 // largest
    for i in np.random.default_rng(3).permutation(1000).tolist():
        check_sample(ds[i])
        assert len(ds.open_shards()) <= holds
        assert shard_bytes(tmp_path) <= total // 4
    assert ds.cache_stats()["redownloads"] > 0, "random reads of 4x the limit download shards again"
