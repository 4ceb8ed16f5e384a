"""The public shard API: read_shards, ShardInfo.files, ShardReader (one shard alone), ShardLocator."""

from __future__ import annotations

import bisect
import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardflow.format import (
    LocalDataset,
    MDSWriter,
    ShardFormatError,
    ShardInfo,
    ShardLocator,
    ShardMissingError,
    ShardReader,
    UnsafeEncodingError,
    UnsupportedColumnError,
    mds_decode,
    read_shards,
)
from shardflow.format.hashing import hash_file

CopyFixture = Callable[[str], Path]

# Fixture folder, the values.py function of its samples.
FORMATS = {
    "mds/uncompressed": "seq_sample",
    "mds/compressed/zstd": "seq_sample",
    "json/plain": "xsv_sample",
    "json/zstd": "xsv_sample",
    "csv/plain": "xsv_sample",
    "tsv/zstd": "xsv_sample",
}
ALL_ARRAY_COLUMNS = [
    "int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "nd_static",
]  # fmt: skip


def same_sample(actual: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether two samples hold equal values (arrays by dtype, shape and content)."""
    if actual.keys() != expected.keys():
        return False
    for name, value in expected.items():
        if isinstance(value, np.ndarray):
            got = actual[name]
            if got.dtype != value.dtype or got.shape != value.shape or not np.array_equal(got, value):
                return False
        elif actual[name] != value:
            return False
    return True


def mapped(path: Path) -> bool:
    """Whether ``path`` is memory-mapped by this process (Linux)."""
    with open("/proc/self/maps") as maps:
        return any(line.rstrip("\n").endswith(str(path.resolve())) for line in maps)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_one_shard_opens_reads_and_closes_alone(
    copy_fixture: CopyFixture, values: ModuleType, name: str
) -> None:
    folder = copy_fixture(name)
    shards = read_shards(folder)
    sample_of = getattr(values, FORMATS[name])
    first, second = (ShardReader(folder, shard) for shard in shards[:2])
    assert not first.is_open and not second.is_open
    for reader in (first, second):
        for i in (0, reader.samples - 1):
            assert same_sample(reader.get(i), sample_of(reader.shard.start + i))
    assert first.is_open and second.is_open
    first.close()
    assert not first.is_open and second.is_open
    assert same_sample(second.get(1), sample_of(second.shard.start + 1))
    batch = second.get_batch([2, 0])
    assert same_sample(batch[0], sample_of(second.shard.start + 2))
    assert same_sample(batch[1], sample_of(second.shard.start))
    assert same_sample(first.get(1), sample_of(1))  # reopens on use
    assert first.is_open
    first.close()
    first.close()  # idempotent
    second.close()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_release_unmaps_one_shard_of_a_dataset(copy_fixture: CopyFixture, values: ModuleType) -> None:
    folder = copy_fixture("mds/uncompressed")
    dataset = LocalDataset(folder)
    paths = [folder / shard.basename for shard in dataset.shards]
    ends = [shard.start + shard.samples - 1 for shard in dataset.shards]

    def read(i: int) -> None:
        assert same_sample(dataset[i], values.seq_sample(i))  # the sample (a view of the map) dies here

    read(0)
    read(ends[1])
    assert mapped(paths[0]) and mapped(paths[1])
    dataset.release(0)
    assert not mapped(paths[0]) and mapped(paths[1])
    read(ends[1] - 1)
    read(ends[0])
    assert mapped(paths[0])
    dataset.close()
    assert not mapped(paths[0]) and not mapped(paths[1])


def test_release_keeps_other_shards_open(copy_fixture: CopyFixture, values: ModuleType) -> None:
    folder = copy_fixture("csv/plain")
    with LocalDataset(folder) as dataset:
        last = len(dataset) - 1
        assert dataset[0] == values.xsv_sample(0) and dataset[last] == values.xsv_sample(last)
        dataset.release(0)
        assert [reader.is_open for reader in dataset._readers] == [False, True]
        assert dataset[last] == values.xsv_sample(last)
        assert dataset.get_batch([last, 0]) == [values.xsv_sample(last), values.xsv_sample(0)]


def test_constructing_a_reader_does_no_io(tmp_path: Path, fixtures_dir: Path) -> None:
    shard = read_shards(fixtures_dir / "mds" / "uncompressed")[0]
    reader = ShardReader(tmp_path / "nowhere", shard)  # nothing there, and nothing is touched yet
    assert not reader.is_open
    with pytest.raises(ShardMissingError, match="nowhere"):
        reader.get(0)


@pytest.mark.parametrize(
    ("name", "gone"),
    [
        ("mds/uncompressed", ["shard.00001.mds"]),
        ("mds/compressed/zstd", ["shard.00001.mds.zstd"]),
        ("csv/plain", ["shard.00001.csv.meta"]),
        ("json/zstd", ["shard.00001.json.zstd"]),
    ],
)
def test_a_missing_file_is_a_shard_missing_error(
    copy_fixture: CopyFixture, name: str, gone: list[str]
) -> None:
    folder = copy_fixture(name)
    for basename in gone:
        (folder / basename).unlink()
    shard = read_shards(folder)[1]
    reader = ShardReader(folder, shard)
    with pytest.raises(ShardMissingError) as caught:
        reader.open()
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, ShardFormatError)
    assert isinstance(caught.value, ValueError)
    raw = gone[0].removesuffix(".zstd")
    assert str(folder / raw) in str(caught.value)
    if gone[0].endswith(".zstd"):
        assert str(folder / gone[0]) in str(caught.value)  # both forms are named
    with pytest.raises(FileNotFoundError):
        LocalDataset(folder)[shard.start]
    assert ShardReader(folder, read_shards(folder)[0]).get(0)  # the other shards still read


@pytest.mark.parametrize(
    ("name", "basename"),
    [
        ("mds/uncompressed", "shard.00001.mds"),
        ("mds/compressed/zstd", "shard.00001.mds.zstd"),
        ("csv/plain", "shard.00001.csv.meta"),
        ("json/plain", "shard.00001.json"),
    ],
)
def test_a_truncated_file_is_a_format_error_not_a_missing_one(
    copy_fixture: CopyFixture, name: str, basename: str
) -> None:
    folder = copy_fixture(name)
    path = folder / basename
    path.write_bytes(path.read_bytes()[:-10])
    reader = ShardReader(folder, read_shards(folder)[1])
    with pytest.raises(ShardFormatError) as caught:
        reader.get(0)
    assert not isinstance(caught.value, FileNotFoundError)
    assert basename in str(caught.value)


def test_get_checks_its_bounds(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "mds" / "uncompressed"
    reader = ShardReader(folder, read_shards(folder)[0])
    for bad in (-1, reader.samples):
        with pytest.raises(IndexError, match=f"sample {bad} is out of range"):
            reader.get(bad)
        with pytest.raises(IndexError, match=f"sample {bad} is out of range"):
            reader.get_batch([0, bad])
        with pytest.raises(IndexError):
            reader.get_columns([bad], ["number"])
    with pytest.raises(TypeError):
        reader.get_batch([[0, 1]])
    assert reader.get_batch([]) == []


def stacked(samples: list[dict[str, Any]], name: str) -> np.ndarray:
    return np.stack([np.asarray(sample[name]) for sample in samples])


def assert_columns_match(reader: ShardReader, ids: list[int], names: list[str]) -> None:
    columns = reader.get_columns(ids, names)
    samples = reader.get_batch(ids)
    assert list(columns) == names
    for name in names:
        expected = stacked(samples, name) if ids else None
        got = columns[name]
        dtype, shape = reader.array_columns[name]
        assert got.dtype == dtype and got.shape == (len(ids), *shape), name
        if expected is not None:
            assert got.dtype == expected.dtype and got.shape == expected.shape, name
            np.testing.assert_array_equal(got, expected, err_msg=name)
        assert got.flags.owndata or got.base is not None and got.base.flags.owndata  # a copy, not the map


def test_get_columns_equals_stacked_samples_among_variable_columns(fixtures_dir: Path) -> None:
    """all_encodings: every fixed-size column sits behind variable-size ones (bytes sorts first)."""
    folder = fixtures_dir / "mds" / "all_encodings"
    for shard in read_shards(folder):
        reader = ShardReader(folder, shard)
        assert sorted(reader.array_columns) == sorted(ALL_ARRAY_COLUMNS)
        ids = [shard.samples - 1, 0, 0, *range(shard.samples)]
        assert_columns_match(reader, ids, ALL_ARRAY_COLUMNS)
        assert_columns_match(reader, [], ["int", "nd_static"])
        reader.close()


def test_get_columns_of_a_fixed_size_shard(tmp_path: Path) -> None:
    columns = {
        "a": "int8", "b": "ndarray:float32:2,3", "c": "uint64", "d": "float16", "e": "int",
        "f": "ndarray:int16:5", "g": "ndarray:uint8:3,1,2",
    }  # fmt: skip
    rng = np.random.default_rng(7)
    with MDSWriter(out=str(tmp_path), columns=columns, size_limit=2000) as writer:
        for i in range(100):
            writer.write({
                "a": i - 50, "b": rng.standard_normal((2, 3)).astype(np.float32), "c": 2**64 - 1 - i,
                "d": i / 4, "e": -(10**15) * i, "f": np.arange(5, dtype=np.int16) * i,
                "g": rng.integers(0, 256, (3, 1, 2)).astype(np.uint8),
            })  # fmt: skip
    shards = read_shards(tmp_path)
    assert len(shards) > 2
    for shard in shards:
        reader = ShardReader(tmp_path, shard)
        assert_columns_match(reader, list(range(shard.samples))[::-1] + [1, 1], sorted(columns))
    with LocalDataset(tmp_path) as dataset:
        ids = [99, 0, -1, 37, 12, 12, 64]
        got = dataset.get_columns(ids)
        for name in columns:
            np.testing.assert_array_equal(got[name], stacked(dataset.get_batch(ids), name))
        assert dataset.get_columns(np.array([], np.int64), ["e"])["e"].shape == (0,)
        with pytest.raises(IndexError, match="100"):
            dataset.get_columns([100], ["a"])


def test_get_columns_refuses_other_columns_clearly(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "mds" / "all_encodings"
    reader = ShardReader(folder, read_shards(folder)[0])
    for name, encoding in [("str", "str"), ("bytes", "bytes"), ("nd_dyn", "ndarray"), ("str_int", "str_int")]:
        with pytest.raises(UnsupportedColumnError, match=rf"column '{name}' \({encoding}\)"):
            reader.get_columns([0], ["int", name])
    with pytest.raises(UnsupportedColumnError, match="column 'bytes'"):
        reader.get_columns([0])  # None is every column, and some are not arrays
    with pytest.raises(KeyError, match="no column 'nope'"):
        reader.get_columns([0], ["nope"])
    text = fixtures_dir / "csv" / "plain"
    with pytest.raises(UnsupportedColumnError, match=r"column 'number' \(int\) of a csv shard"):
        ShardReader(text, read_shards(text)[0]).get_columns([0], ["number"])
    seq = fixtures_dir / "mds" / "uncompressed"
    with pytest.raises(UnsupportedColumnError, match=r"column 'id' \(str\)"):
        LocalDataset(seq).get_columns([0, 1])
    np.testing.assert_array_equal(LocalDataset(seq).get_columns([3, 1], ["number"])["number"], [9, 3])


@settings(deadline=None)  # a loaded shared machine must not fail a pure function
@given(
    counts=st.lists(st.integers(0, 6), max_size=8),
    picks=st.lists(st.integers(0, 10**6), max_size=30),
)
def test_locator_matches_a_brute_force_map(counts: list[int], picks: list[int]) -> None:
    brute = [(k, i) for k, count in enumerate(counts) for i in range(count)]
    locator = ShardLocator(counts)
    assert locator.num_samples == len(brute)
    assert locator.starts.tolist() == [sum(counts[:k]) for k in range(len(counts))]
    ids = [pick % len(brute) for pick in picks] if brute else []
    shard_ids, local_ids = locator.locate(np.array(ids, dtype=np.int64))
    assert list(zip(shard_ids.tolist(), local_ids.tolist(), strict=True)) == [brute[i] for i in ids]
    for i in ids[:5]:
        assert locator.locate_one(i) == brute[i]
    for bad in (-1, len(brute)):
        with pytest.raises(IndexError, match=f"sample id {bad} is out of range"):
            locator.locate(np.array([*ids, bad]))
        with pytest.raises(IndexError, match=f"sample id {bad} is out of range"):
            locator.locate_one(bad)


def test_locator_from_shards(fixtures_dir: Path) -> None:
    shards = read_shards(fixtures_dir / "mds" / "uncompressed")
    locator = ShardLocator.from_shards(shards)
    assert locator.starts.tolist() == [shard.start for shard in shards]
    assert locator.num_samples == sum(shard.samples for shard in shards) == 500
    k, i = locator.locate_one(499)
    assert (k, i) == (len(shards) - 1, shards[-1].samples - 1)
    assert bisect.bisect_right(locator.starts.tolist(), 499) - 1 == k


@pytest.mark.parametrize(
    "name", ["mds/all_encodings", "mds/compressed/zstd", "mds/uncompressed", "json/zstd", "csv/plain"]
)
def test_shard_files_agree_with_the_disk(copy_fixture: CopyFixture, name: str) -> None:
    folder = copy_fixture(name)
    shards = read_shards(folder)
    for shard in shards:
        kinds = [file.kind for file in shard.files]
        split = shard.format != "mds"
        assert [file.kind for file in shard.raw_files] == ["raw_data", "raw_meta"][: 1 + split]
        if shard.compression:
            assert kinds == ["raw_data", "zip_data", "raw_meta", "zip_meta"][: 2 + 2 * split]
            assert [file.kind for file in shard.zip_files] == ["zip_data", "zip_meta"][: 1 + split]
            assert all(file.basename.endswith(".zstd") for file in shard.zip_files)
        else:
            assert kinds == ["raw_data", "raw_meta"][: 1 + split] and shard.zip_files == ()
        assert shard.raw_files[0].basename == shard.basename
        ShardReader(folder, shard).open()  # decompresses what only exists compressed
        for file in shard.files:
            path = folder / file.basename
            assert path.stat().st_size == file.bytes, file
            for algo, digest in file.hashes.items():
                assert hash_file(algo, path) == digest, file
    hashed = [file for shard in shards for file in shard.files if file.hashes]
    assert bool(hashed) == (name != "mds/uncompressed" and name != "csv/plain")


def test_shard_info_stays_compatible(fixtures_dir: Path) -> None:
    shard = read_shards(fixtures_dir / "mds" / "tiny")[0]
    old_style = ShardInfo(0, "shard.00000.mds", "mds", 2, 0, None, {"number": "int", "words": "str"})
    assert old_style.files == () and old_style.entry == {}
    assert (shard.index, shard.basename, shard.format, shard.samples, shard.start, shard.compression) == (
        0,
        "shard.00000.mds",
        "mds",
        2,
        0,
        None,
    )
    assert shard.files[0].bytes == 232 and shard.files[0].basename == "shard.00000.mds"
    assert "entry" not in repr(shard) and shard.entry["samples"] == 2
    assert hash(shard) == hash(pickle.loads(pickle.dumps(shard)))
    assert shard.array_columns == {"number": (np.dtype("<i8"), ())}
    with pytest.raises(ValueError, match="read_shards"):
        ShardReader(fixtures_dir / "mds" / "tiny", old_style)


def test_read_shards_forms_and_refusals(fixtures_dir: Path) -> None:
    root = fixtures_dir / "mds" / "splits"
    train = read_shards(root, "train")
    assert train == read_shards(root / "train") == read_shards(root / "train" / "index.json")
    assert sum(shard.samples for shard in train) == 300
    assert [shard.start for shard in train] == np.cumsum([0] + [s.samples for s in train[:-1]]).tolist()
    with pytest.raises(ValueError, match="split"):
        read_shards(root / "train" / "index.json", "val")
    with pytest.raises(FileNotFoundError):
        read_shards(root, "test")
    with pytest.raises(UnsafeEncodingError, match="'obj'"):
        read_shards(fixtures_dir / "mds" / "unsafe_pkl")
    assert read_shards(fixtures_dir / "mds" / "unsafe_pkl", allow_unsafe_types=True)[0].samples == 10
    merged = read_shards(fixtures_dir / "mds" / "merged")
    assert merged[0].basename.startswith("part0/")
    reader = ShardReader(fixtures_dir / "mds" / "merged" / "index.json", merged[-1])
    assert reader.get(reader.samples - 1)["number"] == 3 * 199


def test_a_reader_pickles_and_is_shared_by_threads(copy_fixture: CopyFixture, values: ModuleType) -> None:
    folder = copy_fixture("mds/compressed/zstd")
    shard = read_shards(folder)[2]
    reader = ShardReader(folder, shard, validate_hash="sha1")
    results: list[bool] = []

    def work() -> None:
        ok = all(same_sample(reader.get(i), values.seq_sample(shard.start + i)) for i in range(shard.samples))
        results.append(ok)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 4
    copy = pickle.loads(pickle.dumps(reader))
    assert reader.is_open and not copy.is_open
    assert copy.validate_hash == "sha1" and copy.shard == shard
    assert same_sample(copy.get(3), values.seq_sample(shard.start + 3))
    with copy:
        assert copy.is_open
    assert not copy.is_open


@pytest.mark.parametrize("fixture", ["mds/compressed/zstd", "csv/plain"])
def test_a_populated_reader_reads_the_same(copy_fixture: CopyFixture, fixture: str) -> None:
    """populate maps every page at open (MAP_POPULATE); what the reader reads is unchanged."""
    folder = copy_fixture(fixture)  # a copy: opening decompresses next to the compressed file
    shard = read_shards(folder)[0]
    plain, populated = ShardReader(folder, shard), ShardReader(folder, shard, populate=True)
    ids = list(range(shard.samples))
    pairs = zip(populated.get_batch(ids), plain.get_batch(ids), strict=True)
    assert all(same_sample(a, b) for a, b in pairs)
    assert pickle.loads(pickle.dumps(populated)).populate


def assert_values_match(reader: ShardReader, ids: list[int]) -> None:
    """get_values gives, column by column, what get_batch decodes, of the same types."""
    names = list(reader.shard.columns)
    columns = reader.get_values(ids, names)
    samples = reader.get_batch(ids)
    assert list(columns) == names
    for name in names:
        assert len(columns[name]) == len(ids), name
        for got, sample in zip(columns[name], samples, strict=True):
            assert type(got) is type(sample[name]), name
            assert same_sample({name: got}, {name: sample[name]}), name


@pytest.mark.parametrize("name", ["mds/all_encodings", *sorted(FORMATS)])
def test_get_values_equals_the_samples_columns(copy_fixture: CopyFixture, name: str) -> None:
    folder = copy_fixture(name)
    for shard in read_shards(folder)[:3]:
        reader = ShardReader(folder, shard)
        assert_values_match(reader, [shard.samples - 1, 0, 0, *range(shard.samples)])
        assert_values_match(reader, [])
        reader.close()


def test_get_values_of_some_columns_and_its_errors(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "mds" / "all_encodings"
    reader = ShardReader(folder, read_shards(folder)[0])
    got = reader.get_values(np.array([2, 0], np.int64), ["str", "int"])
    assert list(got) == ["str", "int"]
    assert got == {name: [reader.get(2)[name], reader.get(0)[name]] for name in ("str", "int")}
    assert reader.get_values([1], "bytes") == {"bytes": [reader.get(1)["bytes"]]}
    with pytest.raises(KeyError, match="no column 'nope'"):
        reader.get_values([0], ["nope"])
    with pytest.raises(IndexError, match=f"sample {reader.samples} is out of range"):
        reader.get_values([0, reader.samples], ["str"])
    with pytest.raises(TypeError):
        reader.get_values([[0, 1]], ["str"])


def test_get_values_names_the_sample_that_fails_to_decode(tmp_path: Path) -> None:
    with MDSWriter(out=str(tmp_path), columns={"n": "int", "s": "str"}) as writer:
        for i in range(10):
            writer.write({"n": i, "s": f"value-{i}"})
    shard = read_shards(tmp_path)[0]
    path = tmp_path / shard.basename
    data = path.read_bytes()
    path.write_bytes(data.replace(b"value-7", b"value-\xff"))  # not UTF-8
    reader = ShardReader(tmp_path, shard)
    assert reader.get_values([9, 1], ["s"]) == {"s": ["value-9", "value-1"]}
    with pytest.raises(ShardFormatError, match="column 's' of sample 7"):
        reader.get_values([1, 7, 3], ["s"])


def test_read_columns_is_get_columns_and_get_values_at_once(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "mds" / "all_encodings"
    reader = ShardReader(folder, read_shards(folder)[0])
    ids = [3, 0, 3, 1]
    arrays, values, spans = reader.read_columns(ids, ["int", "nd_static"], ["bytes", "int"])
    assert spans == {}
    expected = reader.get_columns(ids, ["int", "nd_static"])
    assert list(arrays) == ["int", "nd_static"]
    for name in arrays:
        np.testing.assert_array_equal(arrays[name], expected[name])
    assert values == reader.get_values(ids, ["bytes", "int"])
    with pytest.raises(UnsupportedColumnError, match="column 'bytes'"):
        reader.read_columns(ids, ["bytes"], [])
    text = fixtures_dir / "csv" / "plain"
    lines = ShardReader(text, read_shards(text)[0])
    assert lines.read_columns([1, 0], [], ["number"]) == ({}, lines.get_values([1, 0], ["number"]), {})


def test_value_spans_hold_each_stored_value(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "mds" / "all_encodings"
    shard = read_shards(folder)[0]
    reader = ShardReader(folder, shard)
    ids = [3, 0, 3, 1]
    names = list(shard.columns)
    spans = reader.read_columns(ids, [], [], names).spans
    expected = reader.get_values(ids, names)
    assert list(spans) == names
    for name, (starts, ends) in spans.items():
        assert starts.dtype == ends.dtype == np.int64 and len(starts) == len(ids)
        stored = reader.read_spans(starts, ends)
        assert all(type(raw) is bytes for raw in stored)
        for raw, value in zip(stored, expected[name], strict=True):
            decoded = mds_decode(shard.columns[name], raw)
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(decoded, value)
            else:
                assert decoded == value, name
    assert reader.read_spans(*spans["bytes"]) == expected["bytes"]
    starts, ends = spans["bytes"]
    with pytest.raises(ValueError, match="is not within"):
        reader.read_spans(starts, ends + (1 << 40))
    with pytest.raises(ValueError, match="3 span starts but 4 ends"):
        reader.read_spans(starts[:3], ends)
    text = fixtures_dir / "csv" / "plain"
    lines = ShardReader(text, read_shards(text)[0])
    with pytest.raises(UnsupportedColumnError, match="no value spans"):
        lines.read_columns([0], [], [], ["number"])
    with pytest.raises(UnsupportedColumnError, match="text shard"):
        lines.read_spans(np.zeros(1, np.int64), np.ones(1, np.int64))
