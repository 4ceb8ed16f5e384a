"""Writers that upload: MDSWriter with a remote ``out``, through shardflow-storage's uploader.

The writer finds the uploader through the one ``shardflow.format.uploaders`` entry point (``any``), which
serves every scheme of the storage registry, registered ones included; shards upload in parallel and
``index.json`` is published last (the writer waits for the shards before handing it over).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import BinaryIO

import pytest
from _storage_faults import FaultProxy
from _storage_targets import Target

from shardflow.storage import (
    Backend,
    ObjectNotFoundError,
    PermissionDeniedError,
    StorageError,
    UnsupportedURLError,
    from_url,
    register_backend,
)
from shardflow.storage.backend import Sink
from shardflow.storage.upload import Uploader, make_uploader

format_ = pytest.importorskip("shardflow.format")

COLUMNS = {"id": "int", "text": "str"}


def _samples(count: int) -> list[dict[str, object]]:
    return [{"id": i, "text": f"sample {i} " + "x" * (i % 50)} for i in range(count)]


@pytest.fixture
def s3_env(s3_target: Target, monkeypatch: pytest.MonkeyPatch) -> Target:
    """The environment a user would set to reach moto: writers pass no client options."""
    options = s3_target.options()
    monkeypatch.setenv("S3_ENDPOINT_URL", options["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_target


def _remote_files(target: Target, root: str) -> dict[str, bytes]:
    store = from_url(root, **target.options())
    return {name: store.get_bytes(name) for name in store.list()}


def test_one_uploader_entry_point_serves_every_scheme() -> None:
    found = {entry.name: entry.value for entry in entry_points(group="shardflow.format.uploaders")}
    assert found == {"any": "shardflow.storage.upload:make_uploader"}


def test_a_scheme_no_backend_serves_is_refused_with_the_known_ones() -> None:
    with pytest.raises(UnsupportedURLError, match=r"nofs://.*known schemes: .*s3.*register_backend"):
        make_uploader("nofs://bucket/data")
    with pytest.raises(ValueError, match="no storage backend serves nofs://"):
        format_.MDSWriter(out="nofs://bucket/data", columns=COLUMNS)


def test_mds_writer_to_s3_url(s3_env: Target, tmp_path: Path) -> None:
    root = s3_env.fresh_prefix()
    with format_.MDSWriter(out=root, columns=COLUMNS, size_limit=2000) as writer:
        for sample in _samples(200):
            writer.write(sample)
    remote = _remote_files(s3_env, root)
    index = json.loads(remote["index.json"])
    shard_names = [shard["raw_data"]["basename"] for shard in index["shards"]]
    assert len(shard_names) > 5
    assert sorted(remote) == sorted(["index.json", *shard_names])
    local = tmp_path / "copy"
    store = from_url(root, **s3_env.options())
    for name in remote:
        store.download(name, local / name)
    dataset = format_.LocalDataset(local)
    assert [dataset[i] for i in range(len(dataset))] == _samples(200)


@pytest.mark.parametrize("keep_local", [True, False])
def test_mds_writer_to_local_and_remote(s3_env: Target, tmp_path: Path, keep_local: bool) -> None:
    root = s3_env.fresh_prefix()
    local = tmp_path / "local"
    with format_.MDSWriter(
        out=(str(local), root), columns=COLUMNS, size_limit=2000, keep_local=keep_local, compression="zstd"
    ) as writer:
        for sample in _samples(120):
            writer.write(sample)
    remote = _remote_files(s3_env, root)
    assert "index.json" in remote and len(remote) > 3
    if keep_local:
        assert {path.name: path.read_bytes() for path in local.iterdir()} == remote
    else:
        assert not local.exists() or list(local.iterdir()) == []


def test_index_is_uploaded_after_every_shard(s3_env: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    root = s3_env.fresh_prefix()
    with FaultProxy(s3_env.port) as proxy:  # type: ignore[arg-type]
        monkeypatch.setenv("S3_ENDPOINT_URL", proxy.endpoint)
        with format_.MDSWriter(out=root, columns=COLUMNS, size_limit=800, max_workers=4) as writer:
            for sample in _samples(200):
                writer.write(sample)
    puts = [
        (path, received, answered)
        for method, path, _, received, answered in proxy.timeline
        if method == "PUT"
    ]
    index_received = [received for path, received, _ in puts if path.endswith("/index.json")]
    shards_answered = [answered for path, _, answered in puts if not path.endswith("/index.json")]
    assert len(index_received) == 1 and len(shards_answered) > 10
    assert index_received[0] > max(shards_answered)


def test_a_failed_shard_upload_keeps_the_index_unpublished(
    s3_env: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = s3_env.fresh_prefix()
    local = tmp_path / "local"
    with FaultProxy(s3_env.port, rate=1.0, faults=("403",), only="shard.00002") as proxy:  # type: ignore
        monkeypatch.setenv("S3_ENDPOINT_URL", proxy.endpoint)
        # The failure surfaces at a later write (the uploader fails fast) or at the latest in finish().
        with pytest.raises(PermissionDeniedError, match="shard.00002.mds"):
            with format_.MDSWriter(out=(str(local), root), columns=COLUMNS, size_limit=1500) as writer:
                for sample in _samples(100):
                    writer.write(sample)
    remote = _remote_files(s3_env, root)
    assert "index.json" not in remote
    assert "shard.00001.mds" in remote and "shard.00002.mds" not in remote
    assert (local / "shard.00002.mds").exists()  # kept for another try


def test_wait_returns_once_every_file_handed_over_is_uploaded(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    uploader = make_uploader(f"file://{remote}", max_workers=3, retry=0)
    assert isinstance(uploader, Uploader)
    for i in range(20):
        path = tmp_path / f"part-{i}.bin"
        path.write_bytes(os.urandom(1000))
        uploader.upload(path, f"sub/part-{i}.bin")
    uploader.wait()
    assert uploader.list_objects("sub/") == sorted(f"sub/part-{i}.bin" for i in range(20))
    (tmp_path / "index.json").write_text("{}")
    uploader.upload(tmp_path / "index.json", "sub/index.json")
    uploader.finish()
    assert "sub/index.json" in uploader.list_objects("sub/")
    assert (
        uploader.download("sub/part-3.bin", tmp_path / "back.bin").read_bytes()
        == (tmp_path / "part-3.bin").read_bytes()
    )
    with pytest.raises(ValueError, match="relative"):
        make_uploader(f"file://{remote}").upload(tmp_path / "index.json", "../escape.json")


def test_after_a_failure_wait_raises_and_no_file_is_uploaded_any_more(tmp_path: Path) -> None:
    uploader = make_uploader(f"file://{tmp_path / 'remote'}", retry=0)
    uploader.upload(tmp_path / "missing.bin", "missing.bin")
    with pytest.raises(FileNotFoundError):
        uploader.wait()
    (tmp_path / "index.json").write_text("{}")
    with pytest.raises(FileNotFoundError):  # the first failure again; nothing is queued
        uploader.upload(tmp_path / "index.json", "index.json")
    with pytest.raises(FileNotFoundError):
        uploader.finish()
    assert not (tmp_path / "remote" / "index.json").exists()


def test_uploader_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    uploader = make_uploader(f"file://{tmp_path / 'remote'}", progress_bar=True)
    (tmp_path / "a.bin").write_bytes(b"x" * 5000)
    uploader.upload(tmp_path / "a.bin", "a.bin")
    uploader.finish()
    assert "uploading to file://" in capsys.readouterr().err


# -- merge_index on remote partitions --------------------------------------------------------------------


@pytest.fixture
def partitions(s3_env: Target, tmp_path: Path) -> tuple[Path, str]:
    """Two partitions written both to ``tmp_path/local/part<n>`` and to a fresh remote root."""
    local, root = tmp_path / "local", s3_env.fresh_prefix()
    for number, part in enumerate(("part0", "part1")):
        out = (str(local / part), f"{root}/{part}")
        with format_.MDSWriter(
            out=out, columns=COLUMNS, size_limit=2000, compression="zstd", keep_local=True
        ) as writer:
            for sample in _samples(40 + 30 * number):
                writer.write(sample)
    return local, root


def _merged_locally(local: Path) -> bytes:
    format_.merge_index(str(local))
    return (local / "index.json").read_bytes()


def test_merge_index_on_a_remote_root(s3_env: Target, partitions: tuple[Path, str]) -> None:
    local, root = partitions
    format_.merge_index(root, keep_local=False)
    remote = _remote_files(s3_env, root)
    assert remote["index.json"] == _merged_locally(local)
    merged = json.loads(remote["index.json"])
    names = [shard["zip_data"]["basename"] for shard in merged["shards"]]
    assert {name.split("/")[0] for name in names} == {"part0", "part1"}
    assert set(names) <= set(remote)  # every uploaded (compressed) shard the merged index names is there


@pytest.mark.parametrize("form", ["root pair", "urls", "folder urls", "pairs"])
def test_merge_index_forms_match_a_local_merge(
    s3_env: Target, partitions: tuple[Path, str], tmp_path: Path, form: str
) -> None:
    local, root = partitions
    empty = tmp_path / "empty"  # no local copy of any partition: every index is downloaded
    urls = [f"{root}/part0/index.json", f"{root}/part1/index.json"]
    if form == "root pair":
        format_.merge_index((str(empty), root))
    elif form == "urls":
        format_.merge_index(urls, root)
    elif form == "folder urls":
        format_.merge_index([f"{root}/part0/", f"{root}/part1"], (str(empty), root), download_timeout=30)
    else:
        pairs = [
            (str(empty / "part0" / "index.json"), urls[0]),
            (str(local / "part1" / "index.json"), urls[1]),
        ]
        format_.merge_index(index_file_urls=pairs, out=(str(empty), root), keep_local=True)
    expected = _merged_locally(local)
    assert _remote_files(s3_env, root)["index.json"] == expected
    if form in ("root pair", "folder urls", "pairs"):
        # The merged index is kept locally; the downloaded partition indexes are not.
        assert [path.name for path in empty.iterdir()] == ["index.json"]
        assert (empty / "index.json").read_bytes() == expected


@pytest.mark.parametrize("keep_local", [True, False])
def test_merge_index_keep_local(
    s3_env: Target, partitions: tuple[Path, str], tmp_path: Path, keep_local: bool
) -> None:
    local, root = partitions
    format_.merge_index((str(local), root), keep_local=keep_local)
    assert "index.json" in _remote_files(s3_env, root)
    assert (local / "index.json").exists() == keep_local
    assert (local / "part0" / "index.json").exists()  # the partitions stay


def test_merge_index_names_a_corrupt_remote_partition(s3_env: Target, partitions: tuple[Path, str]) -> None:
    _, root = partitions
    from_url(root, **s3_env.options()).put_bytes("part1/index.json", b'{"version": 2, "shards": [')
    with pytest.raises(format_.IndexFormatError, match=f"{root}/part1/index.json: not valid JSON"):
        format_.merge_index(root)
    assert "index.json" not in _remote_files(s3_env, root)


def test_merge_index_download_timeout(
    s3_env: Target, partitions: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, root = partitions
    port: int = s3_env.port  # type: ignore[assignment]
    with FaultProxy(port, rate=1.0, faults=("stall",), stall_seconds=2, only="part1/index.json") as proxy:
        monkeypatch.setenv("S3_ENDPOINT_URL", proxy.endpoint)
        with pytest.raises(TimeoutError, match="part1/index.json.*download_timeout"):
            format_.merge_index(root, download_timeout=0.3)


# -- a third-party scheme registered in this process ------------------------------------------------------


class FolderBackend(Backend):
    """``testfs://<path>``: objects are files under a folder; every write is logged with its sequence."""

    scheme = "testfs"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.clock = itertools.count()
        self.lock = threading.Lock()
        self.writes: list[tuple[str, int, int]] = []  # (object path, started, ended)

    def path(self, url: str) -> Path:
        return self.folder / url.removeprefix("testfs://")

    def read_into(self, url: str, sink: Sink, start: int = 0, end: int | None = None) -> int | None:
        data = self.path(url).read_bytes()[start:end]
        sink.write(data)
        return len(data)

    def write_from(self, url: str, source: BinaryIO, size: int) -> None:
        with self.lock:
            started = next(self.clock)
        target = self.path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            shutil.copyfileobj(source, out)
        with self.lock:
            self.writes.append((url.removeprefix("testfs://"), started, next(self.clock)))

    def size(self, url: str) -> int:
        return self.path(url).stat().st_size

    def list(self, prefix: str, page_size: int | None = None) -> Iterator[str]:
        for path in sorted(self.folder.rglob("*")):
            url = f"testfs://{path.relative_to(self.folder).as_posix()}"
            if path.is_file() and url.startswith(prefix):
                yield url

    def delete(self, url: str) -> None:
        self.path(url).unlink(missing_ok=True)

    def translate(self, exc: BaseException, url: str) -> StorageError | None:
        if isinstance(exc, FileNotFoundError):
            return ObjectNotFoundError(f"{url} does not exist", url)
        return None


@pytest.fixture
def testfs(tmp_path: Path) -> FolderBackend:
    """The scheme ``testfs://``, registered with register_backend, served from ``tmp_path/testfs``."""
    backend = FolderBackend(tmp_path / "testfs")
    backend.folder.mkdir()
    register_backend("testfs", lambda **options: backend)
    return backend


def test_a_registered_scheme_is_a_writers_out(testfs: FolderBackend, tmp_path: Path) -> None:
    with format_.MDSWriter(out="testfs://ds", columns=COLUMNS, size_limit=1500, max_workers=4) as writer:
        for sample in _samples(150):
            writer.write(sample)
    names = {name for name, _, _ in testfs.writes}
    index = json.loads((testfs.folder / "ds" / "index.json").read_bytes())
    shards = [f"ds/{shard['raw_data']['basename']}" for shard in index["shards"]]
    assert len(shards) > 5 and names == {"ds/index.json", *shards}
    (index_started,) = [started for name, started, _ in testfs.writes if name == "ds/index.json"]
    assert index_started > max(ended for name, _, ended in testfs.writes if name != "ds/index.json")
    dataset = format_.LocalDataset(testfs.folder / "ds")
    assert [dataset[i] for i in range(len(dataset))] == _samples(150)


def test_merge_index_over_a_registered_scheme(testfs: FolderBackend, tmp_path: Path) -> None:
    local = tmp_path / "local"
    for number, part in enumerate(("part0", "part1")):
        out = (str(local / part), f"testfs://root/{part}")
        with format_.MDSWriter(out=out, columns=COLUMNS, size_limit=2000, keep_local=True) as writer:
            for sample in _samples(40 + 30 * number):
                writer.write(sample)
    format_.merge_index("testfs://root")
    assert (testfs.folder / "root" / "index.json").read_bytes() == _merged_locally(local)
    dataset = format_.LocalDataset(testfs.folder / "root")
    assert len(dataset) == 110 and dataset[40 + 29] == _samples(70)[29]
