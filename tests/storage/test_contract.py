"""One contract, every store: the same cases against local files and real servers on 127.0.0.1.

The servers are moto (S3), gcp-storage-emulator (GCS), Azurite (Azure), the loopback stand-ins of OCI,
the Hugging Face Hub and a Databricks workspace (volumes and DBFS), and an SSH server speaking SFTP, each
reached through its real SDK.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _storage_faults import FaultProxy
from _storage_targets import Target
from _storage_workers import download_after_barrier

from shardflow.storage import ObjectChangedError, ObjectNotFoundError, ObjectStat, StorageClient, from_url
from shardflow.storage.backend import ReadPin

MIB = 1 << 20


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name not in keep)


class StoreContract:
    """The cases every backend must pass. A subclass provides the ``target`` fixture."""

    @pytest.fixture
    def target(self) -> Target:
        raise NotImplementedError

    @pytest.fixture
    def client(self, target: Target) -> StorageClient:
        return target.client()

    @pytest.fixture
    def prefix(self, target: Target) -> str:
        return target.fresh_prefix()

    @pytest.mark.parametrize("size", [0, 1, 1000])
    def test_round_trip_small(self, client: StorageClient, prefix: str, tmp_path: Path, size: int) -> None:
        data = os.urandom(size)
        url = f"{prefix}/object.bin"
        client.put_bytes(url, data)
        assert client.get_bytes(url) == data
        assert client.size(url) == size
        assert client.exists(url)
        dest = tmp_path / "deep" / "down" / "object.bin"
        assert client.download(url, dest) == dest
        assert dest.read_bytes() == data
        assert _leftovers(dest.parent, {"object.bin"}) == []

    @pytest.mark.slow
    def test_round_trip_64_mib(self, client: StorageClient, prefix: str, tmp_path: Path) -> None:
        data = os.urandom(64 * MIB)
        source = tmp_path / "source.bin"
        source.write_bytes(data)
        url = f"{prefix}/large.bin"
        client.upload(source, url)
        assert client.size(url) == len(data)
        dest = tmp_path / "dest.bin"
        client.download(url, dest)
        assert _digest(dest.read_bytes()) == _digest(data)
        middle = 64 * MIB // 2
        assert client.get_bytes(url, middle - 10, middle + MIB) == data[middle - 10 : middle + MIB]
        assert _leftovers(tmp_path, {"source.bin", "dest.bin"}) == []

    def test_nested_keys(self, client: StorageClient, prefix: str, target: Target) -> None:
        names = ["a.bin", "dir/b.bin", "dir/sub/c.bin", "dir/sub/deeper/d.bin", "dirx/e.bin"]
        for name in names:
            client.put_bytes(f"{prefix}/{name}", name.encode())
        assert client.list(f"{prefix}/") == [f"{prefix}/{name}" for name in sorted(names)]
        assert client.list(f"{prefix}/dir/") == [
            f"{prefix}/{n}" for n in sorted(names) if n.startswith("dir/")
        ]
        assert client.list(f"{prefix}/dir") == [f"{prefix}/{n}" for n in sorted(names) if n.startswith("dir")]
        store = from_url(prefix, **target.options())
        assert store.list() == sorted(names)
        assert store.list("dir/sub/") == ["dir/sub/c.bin", "dir/sub/deeper/d.bin"]
        assert store.get_bytes("dir/sub/deeper/d.bin") == b"dir/sub/deeper/d.bin"

    def test_listing_many_objects_pages(self, target: Target, prefix: str) -> None:
        client = target.client(list_page_size=40)
        names = [f"many/{i:04d}.bin" for i in range(130)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: client.put_bytes(f"{prefix}/{name}", name.encode()), names))
        client.put_bytes(f"{prefix}/other.bin", b"x")
        assert client.list(f"{prefix}/many/") == [f"{prefix}/{name}" for name in names]
        assert client.list(f"{prefix}/many/001") == [f"{prefix}/many/{i:04d}.bin" for i in range(10, 20)]
        assert len(target.client().list(f"{prefix}/")) == 131
        if target.port is not None and target.paginates:  # count the listing requests on the wire
            with FaultProxy(target.port) as proxy:
                assert len(target.client(proxy.endpoint, list_page_size=40).list(f"{prefix}/many/")) == 130
            assert proxy.store_requests == 4  # 40 + 40 + 40 + 10

    @pytest.mark.parametrize(
        "start, end",
        [
            (0, 1),
            (3, 17),
            (0, 100),
            (99, 100),
            (50, None),
            (0, None),
            (90, 500),
            (100, 200),
            (150, None),
            (20, 20),
        ],
    )
    def test_ranges(self, client: StorageClient, prefix: str, start: int, end: int | None) -> None:
        data = bytes(range(100))
        url = f"{prefix}/range.bin"
        client.put_bytes(url, data)
        assert client.get_bytes(url, start, end) == data[start:end]

    def test_range_arguments_are_checked(self, client: StorageClient, prefix: str) -> None:
        with pytest.raises(ValueError, match="start <= end"):
            client.get_bytes(f"{prefix}/x", 5, 2)
        with pytest.raises(ValueError, match="start"):
            client.get_bytes(f"{prefix}/x", -1)

    def test_missing_object(self, client: StorageClient, prefix: str, tmp_path: Path) -> None:
        url = f"{prefix}/missing.bin"
        dest = tmp_path / "missing.bin"
        with pytest.raises(ObjectNotFoundError, match="missing.bin") as caught:
            client.download(url, dest)
        assert isinstance(caught.value, FileNotFoundError)
        assert caught.value.url == url
        assert os.listdir(tmp_path) == []
        with pytest.raises(ObjectNotFoundError):
            client.get_bytes(url)
        with pytest.raises(ObjectNotFoundError):
            client.get_bytes(url, 1, 5)
        with pytest.raises(ObjectNotFoundError):
            client.size(url)
        assert not client.exists(url)
        client.delete(url)
        assert client.list(f"{prefix}/") == []

    def test_overwrite(self, client: StorageClient, prefix: str, tmp_path: Path) -> None:
        url = f"{prefix}/over.bin"
        dest = tmp_path / "over.bin"
        client.put_bytes(url, b"first version, longer")
        client.download(url, dest)
        source = tmp_path / "second.bin"
        source.write_bytes(b"second")
        client.upload(source, url)
        assert client.get_bytes(url) == b"second"
        client.download(url, dest)
        assert dest.read_bytes() == b"second"

    def test_stat_gives_a_version_that_every_write_changes(
        self, client: StorageClient, prefix: str, target: Target
    ) -> None:
        url = f"{prefix}/versioned.bin"
        client.put_bytes(url, b"same bytes")
        first = client.stat(url)
        assert isinstance(first, ObjectStat) and first.size == 10 and first.version
        assert client.stat(url) == first, "an unchanged object keeps its version"
        store = from_url(prefix, **target.options())
        assert store.stat("versioned.bin") == first
        if target.name in ("s3", "oci", "sftp", "volumes"):
            time.sleep(1.1)  # their modification times count seconds: same bytes within one share a version
        client.put_bytes(url, b"same bytes")
        second = client.stat(url)
        if target.name == "hf":  # the Hub makes no commit for the bytes a file already has: nothing changed
            assert second == first
        else:
            assert second.size == 10 and second.version != first.version, "a rewrite with the same bytes"
        client.put_bytes(url, b"other bytes!")
        third = client.stat(url)
        assert third.size == 12 and third.version not in (first.version, second.version)
        with pytest.raises(ObjectNotFoundError, match="missing.bin"):
            client.stat(f"{prefix}/missing.bin")
        with pytest.raises(ObjectNotFoundError):
            store.stat("missing.bin")

    def test_a_pinned_read_continues_only_the_same_version(
        self, client: StorageClient, prefix: str, target: Target
    ) -> None:
        """What resuming a broken read relies on: the version of the first answer, required by the next."""
        backend = client.backend
        if not backend.resumes:
            pytest.skip(f"{target.name}: reads broken off start over (Backend.resumes is off)")
        url = f"{prefix}/pinned.bin"
        client.put_bytes(url, b"first version")
        pin, out = ReadPin(), io.BytesIO()
        backend.read_into(url, out, 0, 5, pin=pin)  # type: ignore[call-arg]
        assert pin.version
        backend.read_into(url, out, 5, None, pin=pin)  # type: ignore[call-arg]
        assert out.getvalue() == b"first version"
        client.put_bytes(url, b"second version")
        with pytest.raises(Exception) as caught:
            backend.read_into(url, io.BytesIO(), 5, None, pin=pin)  # type: ignore[call-arg]
        assert isinstance(backend.translate(caught.value, url), ObjectChangedError)

    def test_delete(self, client: StorageClient, prefix: str) -> None:
        url = f"{prefix}/gone.bin"
        client.put_bytes(url, b"x")
        client.delete(url)
        assert not client.exists(url)
        assert client.list(prefix) == []

    @pytest.mark.slow
    def test_eight_processes_download_one_object_to_one_path(
        self, target: Target, prefix: str, tmp_path: Path
    ) -> None:
        data = os.urandom(8 * MIB)
        url = f"{prefix}/shared.bin"
        target.client().put_bytes(url, data)
        dest = tmp_path / "cache" / "shared.bin"
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(8)
        workers = [
            context.Process(target=download_after_barrier, args=(url, target.options(), str(dest), barrier))
            for _ in range(8)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert [worker.exitcode for worker in workers] == [0] * 8
        assert _digest(dest.read_bytes()) == _digest(data)
        assert os.listdir(dest.parent) == ["shared.bin"]


class TestLocal(StoreContract):
    @pytest.fixture
    def target(self, local_target: Target) -> Target:
        return local_target


class TestS3(StoreContract):
    @pytest.fixture
    def target(self, s3_target: Target) -> Target:
        return s3_target


class TestGCS(StoreContract):
    @pytest.fixture
    def target(self, gcs_target: Target) -> Target:
        return gcs_target


class TestAzure(StoreContract):
    @pytest.fixture
    def target(self, azure_target: Target) -> Target:
        return azure_target


class TestOCI(StoreContract):
    @pytest.fixture
    def target(self, oci_target: Target) -> Target:
        return oci_target


class TestHub(StoreContract):
    @pytest.fixture
    def target(self, hf_target: Target) -> Target:
        return hf_target


class TestDatabricksVolumes(StoreContract):
    @pytest.fixture
    def target(self, volumes_target: Target) -> Target:
        return volumes_target


class TestDBFS(StoreContract):
    @pytest.fixture
    def target(self, dbfs_target: Target) -> Target:
        return dbfs_target


class TestSFTP(StoreContract):
    @pytest.fixture
    def target(self, sftp_target: Target) -> Target:
        return sftp_target
