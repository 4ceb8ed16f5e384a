"""Remote ``out``: uploaders come from the ``shardflow.format.uploaders`` entry points; index.json last."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from shardflow.format import JSONWriter, MDSWriter, MissingDependencyError
from shardflow.format.upload import ANY_SCHEME, ENTRY_POINT_GROUP, ShardUploader, get_uploader, split_out


class MemoryUploader:
    """A stand-in remote store: keeps the bytes of every uploaded file, checks the writer's promises.

    Uploads are deferred, as a real uploader's run in the background: a file handed over is only queued,
    and it lands when :meth:`wait` or :meth:`finish` is called. ``index.json`` must be handed over with
    nothing queued, i.e. after a :meth:`wait` that followed every other file.
    """

    def __init__(self, remote: str, **options: Any) -> None:
        self.remote = remote
        self.options = options
        self.files: dict[str, bytes] = {}
        self.order: list[str] = []
        self.queued: list[tuple[Path, str]] = []
        self.waits = 0
        self.finished = False

    def upload(self, local_path: Path, relative_name: str) -> None:
        assert not self.finished and relative_name not in self.files
        if relative_name == "index.json":
            assert not self.queued, f"index.json handed over before {[n for _, n in self.queued]} landed"
        self.queued.append((Path(local_path), relative_name))

    def wait(self) -> None:
        self.waits += 1
        for path, name in self.queued:
            self.files[name] = path.read_bytes()
            self.order.append(name)
        self.queued.clear()

    def finish(self) -> None:
        self.wait()
        self.finished = True


class FakeEntryPoint:
    def __init__(self, name: str, factory: Any) -> None:
        self.name, self.value, self.factory = name, f"tests:{name}", factory

    def load(self) -> Any:
        return self.factory


@pytest.fixture
def uploaders(monkeypatch: pytest.MonkeyPatch) -> list[MemoryUploader]:
    """Install a 'mem' uploader as the only entry point; the list collects every uploader made."""
    made: list[MemoryUploader] = []

    def factory(remote: str, **options: Any) -> MemoryUploader:
        made.append(MemoryUploader(remote, **options))
        return made[-1]

    def entry_points(group: str) -> list[FakeEntryPoint]:
        assert group == ENTRY_POINT_GROUP
        return [FakeEntryPoint("mem", factory)]

    monkeypatch.setattr("shardflow.format.upload.entry_points", entry_points)
    return made


def write_numbers(out: Any, count: int = 300, **kwargs: Any) -> Path:
    """Write a small dataset; return the writer's local folder."""
    with MDSWriter(out=out, columns={"n": "int"}, size_limit=1 << 10, **kwargs) as writer:
        for i in range(count):
            writer.write({"n": i})
    return writer._local


def test_remote_only_uploads_everything_and_cleans_up(
    uploaders: list[MemoryUploader], tmp_path: Path
) -> None:
    staging = write_numbers(
        "mem://bucket/data", compression="zstd", progress_bar=False, max_workers=3, retry=5
    )
    (uploader,) = uploaders
    assert uploader.remote == "mem://bucket/data" and uploader.finished
    assert uploader.options == {"progress_bar": False, "max_workers": 3, "retry": 5}
    assert uploader.order[-1] == "index.json" and uploader.waits >= 2
    assert all(name.endswith(".mds.zstd") for name in uploader.order[:-1]) and len(uploader.order) > 2
    write_numbers(tmp_path, compression="zstd")  # the same dataset written locally
    assert uploader.files == {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert not staging.exists()  # the temporary local folder is gone


@pytest.mark.parametrize("keep_local", [True, False])
def test_local_and_remote(uploaders: list[MemoryUploader], tmp_path: Path, keep_local: bool) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with JSONWriter(
        out=(str(tmp_path), "mem://bucket/text"),
        columns={"n": "int"},
        size_limit=100,
        keep_local=keep_local,
        exist_ok=True,
    ) as writer:
        for i in range(50):
            writer.write({"n": i})
    (uploader,) = uploaders
    assert uploader.order[-1] == "index.json" and len(uploader.order) > 3
    local = sorted(path.name for path in tmp_path.iterdir())
    assert local == (sorted([*uploader.files, "notes.txt"]) if keep_local else ["notes.txt"])


def test_without_uploaders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("shardflow.format.upload.entry_points", lambda group: [])
    with pytest.raises(MissingDependencyError, match="pip install shardflow-storage"):
        write_numbers("s3://bucket/data")
    with pytest.raises(ImportError):  # MissingDependencyError is also an ImportError
        write_numbers((str(tmp_path / "local"), "gs://bucket/data"))
    assert not (tmp_path / "local").exists()


def test_scheme_without_uploader(uploaders: list[MemoryUploader]) -> None:
    with pytest.raises(ValueError, match=r"no uploader handles s3:// URLs; installed schemes: \['mem'\]"):
        get_uploader("s3://bucket/data")
    assert get_uploader("/local/folder") is None


def test_the_any_entry_serves_every_scheme_and_a_scheme_entry_comes_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[tuple[str, str]] = []

    def factory(name: str) -> Any:
        def make(remote: str, **options: Any) -> MemoryUploader:
            made.append((name, remote))
            return MemoryUploader(remote, **options)

        return make

    entries = [FakeEntryPoint(ANY_SCHEME, factory("any")), FakeEntryPoint("mem", factory("mem"))]
    monkeypatch.setattr("shardflow.format.upload.entry_points", lambda group: entries)
    get_uploader("s3://bucket/data")
    get_uploader(("local", "myfs://x/y"))
    get_uploader("mem://bucket/data")
    assert made == [("any", "s3://bucket/data"), ("any", "myfs://x/y"), ("mem", "mem://bucket/data")]


def test_uploader_is_a_deprecated_alias_of_shard_uploader() -> None:
    with pytest.warns(DeprecationWarning, match="ShardUploader"):
        from shardflow.format.upload import Uploader
    assert Uploader is ShardUploader


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        ("data/train", ("data/train", None)),
        (Path("/abs/path"), ("/abs/path", None)),
        ("C:\\data\\train", ("C:\\data\\train", None)),
        ("s3://bucket/x", (None, "s3://bucket/x")),
        ("file:///tmp/remote", (None, "file:///tmp/remote")),
        (("local", "gs://b/x"), ("local", "gs://b/x")),
        ("~/data", (os.path.expanduser("~/data"), None)),
    ],
)
def test_split_out(out: Any, expected: tuple[str | None, str | None]) -> None:
    assert split_out(out) == expected


@pytest.mark.parametrize("out", [("s3://a/b", "local"), ("a", "b"), ("a", "s3://b", "c")])
def test_bad_pairs(out: Any) -> None:
    with pytest.raises(ValueError, match="local folder, remote URL"):
        split_out(out)
