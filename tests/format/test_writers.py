"""The writers reproduce every reference dataset byte for byte, and roll shards as the reference does."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardflow.format import CSVWriter, JSONWriter, LocalDataset, MDSWriter, TSVWriter, XSVWriter, merge_index
from shardflow.format.encodings import get_codec

LOSSY_COLUMNS = ("jpeg", "list_jpeg", "jpeg_array")
TEXT_COLUMNS = {"id": "str", "number": "int", "ratio": "float"}
TEXT_WRITERS = {"json": JSONWriter, "csv": CSVWriter, "tsv": TSVWriter}


def write(writer: Any, samples: Iterator[dict[str, Any]]) -> None:
    with writer as out:
        for sample in samples:
            out.write(sample)


def same_files(expected: Path, actual: Path) -> None:
    """Both folders hold the same file names with the same bytes."""
    names = sorted(p.name for p in expected.iterdir())
    assert sorted(p.name for p in actual.iterdir()) == names
    for name in names:
        assert (actual / name).read_bytes() == (expected / name).read_bytes(), name


def seq_dataset(values: ModuleType, out: Path, start: int, count: int, **kwargs: Any) -> None:
    samples = (values.seq_sample(start + i) for i in range(count))
    write(MDSWriter(out=str(out), columns=values.SEQ_COLUMNS, **kwargs), samples)


def test_tiny(fixtures_dir: Path, tmp_path: Path) -> None:
    samples = [{"number": 5, "words": "hi"}, {"number": -1, "words": ""}]
    write(MDSWriter(out=tmp_path, columns={"number": "int", "words": "str"}), iter(samples))
    same_files(fixtures_dir / "mds" / "tiny", tmp_path)
    shard = (tmp_path / "shard.00000.mds").read_bytes()
    assert len(shard) == 232
    assert hashlib.sha1(shard).hexdigest() == "6c23edcc4217cf384b4dd80022a617834e358bc7"


def test_uncompressed(fixtures_dir: Path, tmp_path: Path, values: ModuleType) -> None:
    seq_dataset(values, tmp_path, 0, 500, size_limit=1 << 13)
    same_files(fixtures_dir / "mds" / "uncompressed", tmp_path)


@pytest.mark.parametrize("family", ["zstd", "zstd_7", "bz2", "br_4", "snappy"])
def test_compressed(family: str, fixtures_dir: Path, tmp_path: Path, values: ModuleType) -> None:
    compression = family.replace("_", ":")
    seq_dataset(
        values, tmp_path, 0, 500, size_limit=1 << 13, hashes=["sha1", "xxh3_64"], compression=compression
    )
    same_files(fixtures_dir / "mds" / "compressed" / family, tmp_path)  # only the compressed shards exist


def test_gzip_differs_only_by_its_timestamp(fixtures_dir: Path, tmp_path: Path, values: ModuleType) -> None:
    seq_dataset(values, tmp_path, 0, 500, size_limit=1 << 13, hashes=["sha1", "xxh3_64"], compression="gz:5")
    reference = fixtures_dir / "mds" / "compressed" / "gz_5"
    ours, theirs = (
        json.loads((folder / "index.json").read_text())["shards"] for folder in (tmp_path, reference)
    )
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine["raw_data"] == ref["raw_data"]
        assert mine["zip_data"]["basename"] == ref["zip_data"]["basename"]
        assert {k: v for k, v in mine.items() if k != "zip_data"} == {
            k: v for k, v in ref.items() if k != "zip_data"
        }
        name = mine["zip_data"]["basename"]
        zipped = (tmp_path / name).read_bytes()
        assert gzip.decompress(zipped) == gzip.decompress((reference / name).read_bytes())
        assert hashlib.sha1(zipped).hexdigest() == mine["zip_data"]["hashes"]["sha1"]
        assert len(zipped) == mine["zip_data"]["bytes"]


def test_splits(fixtures_dir: Path, tmp_path: Path, values: ModuleType) -> None:
    seq_dataset(values, tmp_path / "train", 0, 300, size_limit=1 << 13)
    seq_dataset(values, tmp_path / "val", 1000, 50, size_limit=1 << 13)
    for split in ("train", "val"):
        same_files(fixtures_dir / "mds" / "splits" / split, tmp_path / split)


def test_merged(fixtures_dir: Path, tmp_path: Path, values: ModuleType) -> None:
    seq_dataset(values, tmp_path / "part0", 0, 120, size_limit=1 << 12)
    seq_dataset(values, tmp_path / "part1", 120, 80, size_limit=1 << 12)
    merge_index(str(tmp_path))
    reference = fixtures_dir / "mds" / "merged"
    assert (tmp_path / "index.json").read_bytes() == (reference / "index.json").read_bytes()
    for part in ("part0", "part1"):
        same_files(reference / part, tmp_path / part)


@pytest.mark.parametrize("fmt", ["json", "csv", "tsv"])
@pytest.mark.parametrize("variant", ["plain", "zstd"])
def test_text_formats(fmt: str, variant: str, fixtures_dir: Path, tmp_path: Path, values: ModuleType) -> None:
    options: dict[str, Any] = {"compression": "zstd", "hashes": ["sha1"]} if variant == "zstd" else {}
    writer = TEXT_WRITERS[fmt](out=tmp_path, columns=TEXT_COLUMNS, size_limit=1 << 11, **options)
    write(writer, (values.xsv_sample(i) for i in range(200)))
    same_files(fixtures_dir / fmt / variant, tmp_path)


def mds_cells(folder: Path) -> Iterator[dict[str, bytes]]:
    """Every sample of an MDS dataset as its columns' stored bytes, parsed without the reader."""
    for shard in json.loads((folder / "index.json").read_text())["shards"]:
        data = (folder / shard["raw_data"]["basename"]).read_bytes()
        sizes = shard["column_sizes"]
        variable = sizes.count(None)
        for i in range(shard["samples"]):
            begin = struct.unpack_from("<I", data, 4 + 4 * i)[0]
            lengths = iter(struct.unpack_from(f"<{variable}I", data, begin))
            position = begin + 4 * variable
            cells = {}
            for name, size in zip(shard["column_names"], sizes, strict=True):
                size = size if size is not None else next(lengths)
                cells[name] = data[position : position + size]
                position += size
            yield cells


def test_all_encodings(fixtures_dir: Path, tmp_path: Path, values: ModuleType) -> None:
    """Every encoding but pkl. JPEG bytes depend on the libjpeg build: where this Pillow's JPEG differs
    from the one that wrote the fixture, the lossy columns are left out of the comparison."""
    reference = fixtures_dir / "mds" / "all_encodings"
    writer = MDSWriter(out=tmp_path, columns=values.ALL_COLUMNS, size_limit=1 << 14, hashes=["xxh64", "sha1"])
    write(writer, (values.all_sample(i) for i in range(60)))
    theirs = list(mds_cells(reference))
    ours = list(mds_cells(tmp_path))
    assert len(ours) == len(theirs) == 60
    for i, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
        for name in values.ALL_COLUMNS:
            if name not in LOSSY_COLUMNS:
                assert mine[name] == ref[name], (i, name)
    if get_codec("jpeg").encode(values.image(0)) != theirs[0]["jpeg"]:
        pytest.skip(
            "this Pillow's JPEG encoder differs from the reference's: compared the other columns only"
        )
    same_files(reference, tmp_path)


# -- rolling ----------------------------------------------------------------------------------------------


def shard_entries(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "index.json").read_text())["shards"]


def test_a_first_sample_over_the_limit_gets_its_own_shard(tmp_path: Path) -> None:
    writer = MDSWriter(out=tmp_path, columns={"blob": "bytes"}, size_limit=1000)
    write(writer, iter([{"blob": b"x" * 5000}, {"blob": b"y" * 10}, {"blob": b"z" * 10}]))
    shards = shard_entries(tmp_path)
    assert [s["samples"] for s in shards] == [1, 2]  # the reference would start with an empty shard
    assert shards[0]["raw_data"]["bytes"] > 5000 and shards[1]["raw_data"]["bytes"] <= 1000
    with LocalDataset(tmp_path) as dataset:
        assert [sample["blob"][:1] for sample in dataset] == [b"x", b"y", b"z"]


def test_rolling_rule(tmp_path: Path) -> None:
    """A shard is finished when the next sample would push it past size_limit; shards never exceed it."""
    rng = np.random.default_rng(7)
    lengths = rng.integers(0, 300, size=400)
    limit = 2000
    writer = MDSWriter(out=tmp_path, columns={"text": "str"}, size_limit=limit)
    write(writer, ({"text": "a" * int(n)} for n in lengths))
    shards = shard_entries(tmp_path)
    config = len(
        json.dumps(
            {k: v for k, v in shards[0].items() if k not in ("samples", "raw_data", "zip_data")},
            sort_keys=True,
        )
    )
    start = 0
    for shard in shards:
        count = shard["samples"]
        size = 8 + config + sum(4 + 4 + int(n) for n in lengths[start : start + count])
        assert size == shard["raw_data"]["bytes"] <= limit
        if start + count < len(lengths):  # the next sample did not fit
            assert size + 8 + int(lengths[start + count]) > limit
        start += count
    assert start == len(lengths)


@pytest.mark.parametrize("size_limit", [None, 0])
def test_no_size_limit_is_one_shard(tmp_path: Path, size_limit: int | None) -> None:
    write(
        MDSWriter(out=tmp_path, columns={"n": "int"}, size_limit=size_limit), ({"n": i} for i in range(1000))
    )
    shards = shard_entries(tmp_path)
    assert len(shards) == 1 and shards[0]["size_limit"] is None and shards[0]["samples"] == 1000


def test_size_limit_strings(tmp_path: Path) -> None:
    write(
        MDSWriter(out=tmp_path / "a", columns={"n": "int"}, size_limit="1kb"), ({"n": i} for i in range(300))
    )
    write(
        MDSWriter(out=tmp_path / "b", columns={"n": "int"}, size_limit=1024), ({"n": i} for i in range(300))
    )
    same_files(tmp_path / "a", tmp_path / "b")
    assert shard_entries(tmp_path / "a")[0]["size_limit"] == 1024


def test_empty_dataset(tmp_path: Path) -> None:
    MDSWriter(out=tmp_path, columns={"n": "int"}).finish()
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]
    assert shard_entries(tmp_path) == []


def test_hashes_are_of_the_files(tmp_path: Path) -> None:
    writer = JSONWriter(
        out=tmp_path, columns={"n": "int"}, hashes=["sha256", "md5", "sha256"], size_limit=200
    )
    write(writer, ({"n": i} for i in range(100)))
    shards = shard_entries(tmp_path)
    assert len(shards) > 1
    for shard in shards:
        assert shard["hashes"] == ["md5", "sha256"]  # sorted, no repeats
        for key in ("raw_data", "raw_meta"):
            data = (tmp_path / shard[key]["basename"]).read_bytes()
            assert shard[key]["bytes"] == len(data)
            assert shard[key]["hashes"] == {
                "md5": hashlib.md5(data).hexdigest(),
                "sha256": hashlib.sha256(data).hexdigest(),
            }


def test_full_shards_get_their_header_in_place(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Same-size samples: every full shard's header fills the hole left in front of its samples, and only
    the last, shorter shard is copied behind its header; bytes and hashes are those of the final files."""
    columns = {"n": "int", "v": "ndarray:uint8:20"}
    with caplog.at_level("DEBUG", logger="shardflow.format.writers"):
        write(
            MDSWriter(out=tmp_path, columns=columns, size_limit=1000, hashes=["sha1", "xxh3_64"]),
            ({"n": i, "v": np.full(20, i % 256, np.uint8)} for i in range(100)),
        )
    shards = shard_entries(tmp_path)
    full, last = shards[0]["samples"], shards[-1]["samples"]
    assert len(shards) > 3 and {s["samples"] for s in shards[:-1]} == {full} and 0 < last < full
    copied = [r.getMessage() for r in caplog.records if "copying the samples" in r.getMessage()]
    assert len(copied) == 1 and copied[0].startswith(f"shard {len(shards) - 1}: ")
    for shard in shards:
        data = (tmp_path / shard["raw_data"]["basename"]).read_bytes()
        assert shard["raw_data"]["bytes"] == len(data) <= 1000
        assert shard["raw_data"]["hashes"]["sha1"] == hashlib.sha1(data).hexdigest()
    with LocalDataset(tmp_path, validate_hash="xxh3_64") as dataset:
        assert [int(sample["v"][0]) for sample in dataset] == [i % 256 for i in range(100)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    runs=st.lists(st.tuples(st.integers(0, 120), st.integers(1, 40)), min_size=1, max_size=6),
    size_limit=st.integers(60, 1500),
    hashed=st.booleans(),
)
def test_shards_are_built_right_whatever_the_sizes(
    tmp_path_factory: pytest.TempPathFactory, runs: list[tuple[int, int]], size_limit: int, hashed: bool
) -> None:
    """Runs of same-size samples (the header fills its hole) and size changes (the samples are copied
    behind the header) both give the shard bytes built here from the index, and the hashes of the files."""
    folder = tmp_path_factory.mktemp("ds")
    blobs = [bytes([k % 256]) * size for k, (size, repeat) in enumerate(runs) for _ in range(repeat)]
    hashes = ["sha1"] if hashed else None
    write(MDSWriter(out=folder, columns={"blob": "bytes"}, size_limit=size_limit, hashes=hashes),
          ({"blob": blob} for blob in blobs))
    start = 0
    for shard in shard_entries(folder):
        config = {k: v for k, v in shard.items() if k not in ("samples", "raw_data", "zip_data")}
        config_bytes = json.dumps(config, sort_keys=True).encode()
        samples = [struct.pack("<I", len(blob)) + blob for blob in blobs[start : start + shard["samples"]]]
        first = 4 + 4 * (len(samples) + 1) + len(config_bytes)
        ends = np.cumsum([first] + [len(sample) for sample in samples]).astype("<u4")
        expected = struct.pack("<I", len(samples)) + ends.tobytes() + config_bytes + b"".join(samples)
        data = (folder / shard["raw_data"]["basename"]).read_bytes()
        assert data == expected and shard["raw_data"]["bytes"] == len(data)
        assert shard["raw_data"]["hashes"] == ({"sha1": hashlib.sha1(data).hexdigest()} if hashed else {})
        start += shard["samples"]
    assert start == len(blobs)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_size_log_spills_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, values: ModuleType) -> None:
    """Offsets of a shard with more samples than one in-memory block come out the same."""
    seq_dataset(values, tmp_path / "memory", 0, 500, size_limit=None, hashes=["sha1"])
    monkeypatch.setattr("shardflow.format._write_files._SIZES_PER_BLOCK", 7)
    monkeypatch.setattr("shardflow.format._write_files.CHUNK_BYTES", 64)
    monkeypatch.setattr("shardflow.format._write_shard.CHUNK_BYTES", 100)
    seq_dataset(values, tmp_path / "spilled", 0, 500, size_limit=None, hashes=["sha1"])
    same_files(tmp_path / "memory", tmp_path / "spilled")
    write(CSVWriter(out=tmp_path / "csv", columns=TEXT_COLUMNS), (values.xsv_sample(i) for i in range(200)))
    with LocalDataset(tmp_path / "csv") as dataset:
        assert [dataset[i] for i in (0, 150, 199)] == [values.xsv_sample(i) for i in (0, 150, 199)]


def test_reads_back(tmp_path: Path, values: ModuleType) -> None:
    writer = MDSWriter(out=tmp_path, columns=values.SEQ_COLUMNS, size_limit=3000, compression="zstd")
    write(writer, (values.seq_sample(i) for i in range(333)))
    with LocalDataset(tmp_path) as dataset:
        assert len(dataset) == 333
        for i in (0, 1, 100, 332):
            sample = dataset[i]
            assert sample["id"] == f"{i:06}" and sample["number"] == 3 * i
            np.testing.assert_array_equal(sample["payload"], values.seq_sample(i)["payload"])


def test_context_manager_keeps_what_was_written(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError), MDSWriter(out=tmp_path, columns={"n": "int"}) as writer:
        writer.write({"n": 1})
        writer.write({"n": 2})
        raise ZeroDivisionError
    assert [s["samples"] for s in shard_entries(tmp_path)] == [2]
    writer.finish()  # a second finish does nothing
    with pytest.raises(RuntimeError, match="is finished"):
        writer.write({"n": 3})


def test_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str], values: ModuleType) -> None:
    seq_dataset(values, tmp_path, 0, 100, progress_bar=True)
    assert "writing" in capsys.readouterr().err


def test_progress_bar_without_tqdm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, values: ModuleType
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "tqdm.auto", None)  # as if tqdm were not installed
    seq_dataset(values, tmp_path, 0, 10, progress_bar=True)
    assert "needs tqdm" in caplog.text
    assert shard_entries(tmp_path)[0]["samples"] == 10


def test_xsv_with_any_separator(tmp_path: Path, values: ModuleType) -> None:
    writer = XSVWriter(out=tmp_path, columns=TEXT_COLUMNS, separator="|", newline="\r\n", size_limit=1 << 10)
    write(writer, (values.xsv_sample(i) for i in range(100)))
    shards = shard_entries(tmp_path)
    assert len(shards) > 1
    assert {(s["format"], s["separator"], s["newline"]) for s in shards} == {("xsv", "|", "\r\n")}
    first = (tmp_path / "shard.00000.xsv").read_bytes().split(b"\r\n")
    assert first[:2] == [b"id|number|ratio", b"000000|0|0.0"]
    with LocalDataset(tmp_path) as dataset:
        assert [dataset[i] for i in range(100)] == [values.xsv_sample(i) for i in range(100)]


def test_shards_compressed_at_once_stay_within_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """One compressing thread per usable CPU (at most 4), and at most 256 MiB of raw shards in flight."""
    from shardflow.format._write_shard import _shards_in_flight

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    limits = (None, 1 << 30, 1 << 27, 1 << 26, 1 << 10)
    assert [_shards_in_flight(limit) for limit in limits] == [1, 1, 2, 4, 4]
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [_shards_in_flight(limit) for limit in (None, 1 << 27, 1 << 26)] == [1, 2, 2]
