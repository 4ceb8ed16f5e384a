"""A writer killed at any moment leaves no index or a complete one; exist_ok replaces only dataset files."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shardflow.format import MDSWriter
from shardflow.format._atomic import TEMP_NAME
from shardflow.format.index import read_index, shard_files

# Writes `count` samples in many small shards, printing "ready" once the writer exists.
CHILD = """
import sys
from shardflow.format import MDSWriter
out, count, mode, compression = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] or None
writer = MDSWriter(out=out, columns={"n": "int", "text": "str"}, size_limit=1 << 14, hashes=["sha1"],
                   compression=compression, mode=mode, exist_ok=True)
print("ready", flush=True)
for i in range(count):
    writer.write({"n": i, "text": "sample %d " % i * 20})
writer.finish()
print("done", flush=True)
"""


def run_child(folder: Path, count: int, mode: str, compression: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", CHILD, str(folder), str(count), mode, compression]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def check_dataset(folder: Path) -> int | None:
    """Validate the folder after a kill: no index, or one whose every file is present and complete.

    Returns:
        The sample count of the index, or None without one.
    """
    if not (folder / "index.json").exists():
        return None
    index = read_index(folder)
    for shard in index["shards"]:
        for key in ("raw_data", "zip_data"):
            info = shard[key]
            if info is None:
                continue
            assert not TEMP_NAME.match(info["basename"]), info
            path = folder / info["basename"]
            if key == "raw_data" and shard["zip_data"] is not None:
                continue  # compressed datasets keep only the compressed file
            data = path.read_bytes()
            assert len(data) == info["bytes"], path
            assert hashlib.sha1(data).hexdigest() == info["hashes"]["sha1"], path
    return sum(shard["samples"] for shard in index["shards"])


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "compression"), [("create", ""), ("append", "zstd")])
def test_killed_writer_leaves_no_index_or_a_complete_one(tmp_path: Path, mode: str, compression: str) -> None:
    rng = random.Random(f"{mode}{compression}")
    count = 50_000
    folder = tmp_path / "dataset"
    base = 0
    if mode == "append":
        done = run_child(folder, 500, "create", compression)
        assert done.wait(60) == 0
        base = 500
    before = (folder / "index.json").read_bytes() if mode == "append" else None
    # One uninterrupted run, to know how long writing takes here; the kills fall within that time.
    timing = run_child(tmp_path / "timing", count, "create", compression)
    assert timing.stdout is not None and timing.stdout.readline().strip() == "ready"
    started = time.monotonic()
    assert timing.wait(60) == 0
    duration = time.monotonic() - started
    for _ in range(6):
        child = run_child(folder, count, mode, compression)
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, duration * 1.1))
        child.send_signal(signal.SIGKILL)
        child.wait(60)
        samples = check_dataset(folder)
        if mode == "append":
            # The previous complete index, untouched, or the new complete one.
            assert samples is not None
            assert samples == base + count or (folder / "index.json").read_bytes() == before
            if samples == base + count:
                before = (folder / "index.json").read_bytes()
                base = samples
        else:
            assert samples in (None, count)
    # A writer that runs to the end afterwards leaves a clean folder: stale temporary files are removed.
    assert run_child(folder, 100, "create", compression).wait(60) == 0
    assert check_dataset(folder) == 100
    assert not [path.name for path in folder.iterdir() if TEMP_NAME.match(path.name)]


def test_temporary_names_never_collide(tmp_path: Path) -> None:
    from shardflow.format._atomic import temp_path

    final = tmp_path / "shard.00000.mds"
    names = {temp_path(final).name for _ in range(200)}
    assert len(names) == 200
    assert all(TEMP_NAME.match(name) and name.startswith(".shard.00000.mds.") for name in names)
    assert not TEMP_NAME.match("shard.00000.mds") and not TEMP_NAME.match("index.json")


def write_numbers(folder: Path, count: int, **kwargs: object) -> None:
    options: dict[str, object] = {"size_limit": 200, **kwargs}
    with MDSWriter(out=folder, columns={"n": "int"}, **options) as writer:  # type: ignore[arg-type]
        for i in range(count):
            writer.write({"n": i})


def test_non_empty_folder_needs_exist_ok(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exist_ok=True"):
        MDSWriter(out=tmp_path, columns={"n": "int"})
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_exist_ok_replaces_only_the_dataset(tmp_path: Path) -> None:
    write_numbers(tmp_path, 100)
    old = read_index(tmp_path)["shards"]
    assert len(old) > 3
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "shard-notes.mds").write_text("not a shard name")
    (tmp_path / "part0").mkdir()
    (tmp_path / "part0" / "shard.00000.mds").write_text("another dataset's")
    (tmp_path / ".shard.00009.mds.123-0a1b2c3d.tmp").write_text("left by a killed writer")
    (tmp_path / "shard.00040.mds").write_text("a stray shard")
    write_numbers(tmp_path, 10, exist_ok=True)
    new = read_index(tmp_path)["shards"]
    assert sum(s["samples"] for s in new) == 10
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        ["index.json", "notes.txt", "shard-notes.mds", "part0", *(n for s in new for n in shard_files(s))]
    )
    assert (tmp_path / "part0" / "shard.00000.mds").read_text() == "another dataset's"


def test_invalid_arguments_touch_nothing(tmp_path: Path) -> None:
    write_numbers(tmp_path, 50)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for bad in ({"compression": "lzma"}, {"hashes": ["crc7"]}, {"size_limit": "lots"}, {"mode": "update"}):
        with pytest.raises(ValueError):
            write_numbers(tmp_path, 5, exist_ok=True, **bad)
    with pytest.raises(ValueError):
        MDSWriter(out=tmp_path, columns={"n": "integer"}, exist_ok=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_failed_shard_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = MDSWriter(out=tmp_path, columns={"n": "int"}, compression="zstd")
    writer.write({"n": 1})

    def broken(src: Path, dst: Path) -> None:
        Path(dst).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(writer._compressor, "compress_file", broken)
    with pytest.raises(OSError, match="disk full"):
        writer.finish()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("broken", ["write_at", "append_file"])
def test_failed_header_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """Filling the header's hole (full shards of same-size samples) or copying the samples behind the
    header (the last, short shard) fails: the error comes out, no temporary file and no index stay."""

    def fail(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(f"shardflow.format._write_files.HashingFile.{broken}", fail)
    writer = MDSWriter(out=tmp_path, columns={"n": "int"}, size_limit=1000, hashes=["sha1"])
    with pytest.raises(OSError, match="disk full"):
        for n in range(200):  # several full shards, then a short one
            writer.write({"n": n})
        writer.finish()
    left = os.listdir(tmp_path)
    assert not [name for name in left if TEMP_NAME.match(name)] and "index.json" not in left
