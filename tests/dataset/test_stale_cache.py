"""A cached shard is read only when it is the file the current index describes (issue: no silent wrong data).

The remote is rewritten with new content under the same shard names and byte sizes; a dataset reading it
through the cache the old content filled must yield only new samples, whatever ``validate_hash`` says and
whether ``local`` is given or chosen per remote. Files that are not what they should be (a damaged cached
file, a symlink out of the folder) are downloaded again, never read; a remote copy that fails its own
digest is the error, naming the remote.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardflow.dataset import DatasetConfigError, StreamingDataset
from shardflow.dataset.cache import CACHE_FOLDER, NodeCache, read_entries
from shardflow.format import MDSWriter, ShardHashError

sys.path.insert(0, str(Path(__file__).parent.parent / "storage"))  # the storage tests' server helpers

from _storage_faults import FaultProxy  # noqa: E402
from _storage_servers import BUCKET, MOTO_CREDENTIALS, ServerProcess, moto_bucket, moto_client, upload_folder  # noqa: E402

SAMPLES = 600
COLUMNS = {"id": "int", "value": "int", "tag": "str"}


def write_version(folder: Path, version: int, hashes: list[str] | None = ("sha1", "xxh64")) -> Path:
    """The dataset of ``version``: the same names, shard sizes and ids for every version, other values."""
    if folder.exists():
        shutil.rmtree(folder)
    with MDSWriter(out=str(folder), columns=COLUMNS, size_limit=1024, hashes=list(hashes or [])) as writer:
        for i in range(SAMPLES):
            writer.write({"id": i, "value": i * 10 + version, "tag": f"v{version}"})
    return folder


def versions_read(ds: StreamingDataset) -> set[int]:
    """The versions of the samples an epoch yields (checking every sample against its id)."""
    seen = set()
    for sample in ds:
        version = int(sample["value"]) - 10 * int(sample["id"])
        assert sample["tag"] == f"v{version}", sample
        seen.add(version)
    return seen


def sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.glob("shard.*")}


@pytest.mark.parametrize("validate_hash", [None, "sha1", "xxh64"])
@pytest.mark.parametrize("local_given", [True, False], ids=["local", "local=None"])
def test_a_rewritten_remote_is_read_anew_through_the_old_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validate_hash: str | None, local_given: bool
) -> None:
    monkeypatch.setenv("SHARDFLOW_CACHE_DIR", str(tmp_path / "default-cache"))
    remote = write_version(tmp_path / "remote", 1)
    old_sizes = sizes(remote)
    local = str(tmp_path / "cache") if local_given else None

    def dataset() -> StreamingDataset:
        return StreamingDataset(remote=str(remote), local=local, validate_hash=validate_hash, shuffle=True)

    assert versions_read(dataset()) == {1}
    write_version(remote, 2)
    assert sizes(remote) == old_sizes, "the rewrite must keep every shard's name and size"
    ds = dataset()
    assert versions_read(ds) == {2}
    assert ds.cache_stats()["downloads"] == len(ds.shards)
    again = dataset()
    assert versions_read(again) == {2}
    assert again.cache_stats()["downloads"] == 0, "an unchanged remote is read from the cache"


def test_a_rewrite_without_digests_that_leaves_the_index_as_it_was_is_noticed(tmp_path: Path) -> None:
    """No digests and the same sizes: the new index.json has the very bytes of the old one; the store's
    version of the index (here the file's modification) tells the rewrite apart."""
    remote = write_version(tmp_path / "remote", 1, hashes=None)
    index = (remote / "index.json").read_bytes()
    local = str(tmp_path / "cache")
    assert versions_read(StreamingDataset(remote=str(remote), local=local)) == {1}
    write_version(remote, 2, hashes=None)
    assert (remote / "index.json").read_bytes() == index
    assert versions_read(StreamingDataset(remote=str(remote), local=local)) == {2}


def test_digests_keep_cached_shards_across_a_new_index(tmp_path: Path) -> None:
    """Appending shards changes the index; shards whose recorded digests are unchanged stay cached."""
    remote = write_version(tmp_path / "remote", 1)
    local = tmp_path / "cache"
    first = StreamingDataset(remote=str(remote), local=str(local))
    versions_read(first)
    with MDSWriter(out=str(remote), columns=COLUMNS, size_limit=1024, hashes=["sha1"], mode="append") as w:
        for i in range(SAMPLES, SAMPLES + 50):
            w.write({"id": i, "value": i * 10 + 1, "tag": "v1"})
    ds = StreamingDataset(remote=str(remote), local=str(local))
    assert versions_read(ds) == {1}
    assert ds.cache_stats()["downloads"] == len(ds.shards) - len(first.shards)


def test_a_folder_caching_another_remote_is_refused_naming_both(tmp_path: Path) -> None:
    one = write_version(tmp_path / "one", 1)
    two = write_version(tmp_path / "two", 2)
    local = tmp_path / "cache"
    versions_read(StreamingDataset(remote=str(one), local=str(local)))
    with pytest.raises(DatasetConfigError) as caught:
        StreamingDataset(remote=str(two), local=str(local))
    assert str(one) in str(caught.value) and str(two) in str(caught.value)
    assert versions_read(StreamingDataset(remote=str(one), local=str(local))) == {1}


def test_a_damaged_cached_shard_is_downloaded_again(tmp_path: Path) -> None:
    remote = write_version(tmp_path / "remote", 1)
    local = tmp_path / "cache"
    versions_read(StreamingDataset(remote=str(remote), local=str(local), validate_hash="sha1"))
    victim = local / "shard.00001.mds"
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0xFF  # bit rot inside a value
    victim.write_bytes(bytes(data))
    ds = StreamingDataset(remote=str(remote), local=str(local), validate_hash="sha1")
    assert versions_read(ds) == {1}
    assert ds.cache_stats()["downloads"] == 1
    assert victim.read_bytes() == (remote / victim.name).read_bytes()


def test_a_remote_copy_that_fails_its_digest_is_corrupt_naming_the_remote(tmp_path: Path) -> None:
    remote = write_version(tmp_path / "remote", 1)
    victim = remote / "shard.00002.mds"
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0xFF
    victim.write_bytes(bytes(data))
    ds = StreamingDataset(remote=str(remote), local=str(tmp_path / "cache"), validate_hash="xxh64")
    with pytest.raises(ShardHashError, match="remote copy of " + str(victim)):
        versions_read(ds)
    assert not (tmp_path / "cache" / victim.name).exists(), "a corrupt download is not kept"


def test_a_cached_shard_that_is_a_symlink_out_of_the_folder_is_never_read(tmp_path: Path) -> None:
    remote = write_version(tmp_path / "remote", 1)
    local = tmp_path / "cache"
    versions_read(StreamingDataset(remote=str(remote), local=str(local)))
    outside = write_version(tmp_path / "outside", 3)
    victim = local / "shard.00000.mds"
    victim.unlink()
    victim.symlink_to(outside / victim.name)
    before = (outside / victim.name).read_bytes()
    ds = StreamingDataset(remote=str(remote), local=str(local))
    assert versions_read(ds) == {1}
    assert not victim.is_symlink() and (outside / victim.name).read_bytes() == before


def test_eviction_never_deletes_through_a_symlinked_folder(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shard.mds").write_bytes(b"not the cache's")
    root.mkdir()
    (root / "sub").symlink_to(outside)
    (root / "mine.mds").write_bytes(b"x" * 100)
    NodeCache.record(root, "sub/shard.mds", ["sub/shard.mds"], 10, {})
    NodeCache.record(root, "mine.mds", ["mine.mds"], 100, {})
    cache = NodeCache([root], limit=1, timeout=5)
    cache._make_room(exclude=(root, "nothing"))
    assert (outside / "shard.mds").read_bytes() == b"not the cache's"
    assert not (root / "mine.mds").exists()
    assert list(read_entries(root)) == []


# -- S3: the unchanged remote costs no request per shard ----------------------------------------------


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with moto_bucket(tmp_path_factory.mktemp("moto-stale")) as (server, _):
        yield server


def test_s3_rewritten_remote_and_requests_when_nothing_changed(
    moto: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in MOTO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    local = str(tmp_path / "cache")
    remote = f"s3://{BUCKET}/stale"
    client = moto_client(moto.endpoint)
    upload_folder(client, write_version(tmp_path / "v1", 1), "stale")
    with FaultProxy(moto.port) as proxy:
        monkeypatch.setenv("S3_ENDPOINT_URL", proxy.endpoint)
        assert versions_read(StreamingDataset(remote=remote, local=local, shuffle=True)) == {1}
        cold = proxy.total_requests
        ds = StreamingDataset(remote=remote, local=local, shuffle=True)
        assert versions_read(ds) == {1}
        warm = proxy.total_requests - cold
    assert len(ds.shards) > 10
    assert warm <= 3, f"a second run over an unchanged remote made {warm} requests: {dict(proxy.requests)}"
    upload_folder(client, write_version(tmp_path / "v2", 2), "stale")
    monkeypatch.setenv("S3_ENDPOINT_URL", moto.endpoint)
    for validate_hash in (None, "sha1"):
        assert versions_read(StreamingDataset(remote=remote, local=local, validate_hash=validate_hash)) == {2}
    assert all(entry.files for entry in read_entries(Path(local))), os.listdir(Path(local) / CACHE_FOLDER)
