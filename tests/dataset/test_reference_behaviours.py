"""Behaviours shardflow shares with mosaicml-streaming 0.13: ``cache_limit`` counts ``index.json`` and
refuses a limit that cannot hold it, and what the reference warns of with ``warnings.warn`` is a
``UserWarning`` here too."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

from shardflow.dataset import DatasetConfigError, StreamingDataset
from shardflow.dataset.cache import CACHE_FOLDER

from ._dataset_rank import free_port

sys.path.insert(0, str(Path(__file__).parent.parent / "storage"))  # the storage tests' server helpers
from _storage_servers import BUCKET, MOTO_CREDENTIALS, moto_bucket, upload_folder  # noqa: E402


def folder_bytes(root: Path) -> int:
    """Bytes of the index and the shard files in a cache folder (not the cache's bookkeeping)."""
    total = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if not name.startswith(".shardflow-")]
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # evicted since it was listed
                pass
    return total


def shards_of(remote: Path) -> tuple:
    """The shards of ``remote``'s index, read without a cache limit."""
    return StreamingDataset(local=str(remote)).shards


def test_cache_limit_counts_index_json_and_the_folder_stays_within_it(
    tokens_remote: Path, tmp_path: Path
) -> None:
    index = (tokens_remote / "index.json").stat().st_size
    shards = sum(p.stat().st_size for p in tokens_remote.glob("shard.*"))
    limit = index + shards // 4
    ds = StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit=limit, predownload=8)
    assert ds.cache_usage == index  # nothing downloaded yet: the index alone
    worst = 0
    for k, _ in enumerate(ds):
        if k % 10 == 0:
            worst = max(worst, folder_bytes(tmp_path))
    assert 0 < worst <= limit
    assert (tmp_path / CACHE_FOLDER).is_dir() and ds.cache_stats()["evictions"] > 0


def test_a_limit_that_the_index_leaves_no_room_in_is_refused(tokens_remote: Path, tmp_path: Path) -> None:
    index = (tokens_remote / "index.json").stat().st_size
    with pytest.raises(ValueError, match=r"index\.json files \([\d,]+ bytes") as caught:
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit=index)
    assert isinstance(caught.value, DatasetConfigError)
    message = str(caught.value)
    smallest = int(message.split("smallest workable limit is ")[1].split(" bytes")[0].replace(",", ""))
    largest = max(sum(f.bytes for f in (*s.raw_files, *s.zip_files)) for s in shards_of(tokens_remote))
    assert smallest >= index + 2 * largest  # the index, one shard read and one fetched ahead
    with pytest.raises(DatasetConfigError):
        StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit=smallest - 1)
    StreamingDataset(remote=str(tokens_remote), local=str(tmp_path), cache_limit=smallest)


def test_a_limit_below_what_the_shuffle_reads_at_once_is_a_user_warning(
    tokens_remote: Path, tmp_path: Path
) -> None:
    index = (tokens_remote / "index.json").stat().st_size
    shards = sum(p.stat().st_size for p in tokens_remote.glob("shard.*"))
    with pytest.warns(UserWarning, match=r"below what this node reads at once.*index\.json"):
        StreamingDataset(
            remote=str(tokens_remote), local=str(tmp_path), cache_limit=index + shards // 4, shuffle=True
        )


def test_predownload_below_batch_size_is_a_user_warning(tokens_remote: Path) -> None:
    with pytest.warns(UserWarning, match=r"predownload=2 is below batch_size=4"):
        StreamingDataset(local=str(tokens_remote), batch_size=4, predownload=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StreamingDataset(local=str(tokens_remote), batch_size=4, predownload=4)
        StreamingDataset(local=str(tokens_remote), batch_size=4)


def test_an_unreachable_remote_falls_back_to_the_index_an_earlier_run_downloaded(
    tokens_remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed loopback port is unreachable (after the store's retries): the earlier copy is used, with a
    UserWarning naming the remote; without such a copy, or for a missing index, the error stays."""
    (tmp_path / "moto").mkdir()
    with moto_bucket(tmp_path / "moto") as (server, client):
        upload_folder(client, tokens_remote, "ds")
        for name, value in MOTO_CREDENTIALS.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("S3_ENDPOINT_URL", server.endpoint)
        remote, local = f"s3://{BUCKET}/ds", tmp_path / "cache"
        first = StreamingDataset(remote=remote, local=str(local))
        expected = [first[k]["id"] for k in (0, 5)]
        version = first.streams[0]._index_version
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.warns(UserWarning, match=rf"s3://{BUCKET}/ds.*cannot be reached") as caught:
        again = StreamingDataset(remote=remote, local=str(local), download_retry=1, download_timeout=2)
    assert len([w for w in caught if "cannot be reached" in str(w.message)]) == 1
    assert again.streams[0]._index_version == version  # the cached shards keep their identity
    assert [again[k]["id"] for k in (0, 5)] == expected  # cached shards
    with pytest.raises(ConnectionError):
        again[999]  # a shard not cached needs the remote
    # No earlier copy: the connection error itself.
    with pytest.raises(ConnectionError):
        StreamingDataset(remote=remote, local=str(tmp_path / "empty"), download_retry=0, download_timeout=2)
    # A copy changed since it was downloaded is not used.
    index = local / "index.json"
    index.write_bytes(index.read_bytes().replace(b'"version"', b'"version" '))
    with pytest.raises(ConnectionError):
        StreamingDataset(remote=remote, local=str(local), download_retry=0, download_timeout=2)
