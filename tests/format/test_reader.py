"""LocalDataset reads every reference dataset to exactly the values that wrote it."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from shardflow.format.errors import UnsafeEncodingError
from shardflow.format.reader import LocalDataset

COMPRESSED_FAMILIES = ["zstd", "zstd_7", "gz_5", "bz2", "br_4", "snappy"]
LOSSY_COLUMNS = {"jpeg", "list_jpeg", "jpeg_array"}


def assert_same(actual: Any, expected: Any, where: str) -> None:
    """Compare a decoded value with the value that was written, exactly (arrays by dtype and shape too)."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), where
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), where
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    elif isinstance(expected, Image.Image):
        assert (actual.mode, actual.size) == (expected.mode, expected.size), where
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected), err_msg=where)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for k, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_same(got, want, f"{where}[{k}]")
    else:
        assert type(actual) is type(expected) or np.isscalar(actual), where
        assert actual == expected, where


def split_sized(data: bytes, skip: int) -> list[bytes]:
    """Split ``[skip bytes][uint32 count][uint32 sizes...][items...]`` into its items."""
    (count,) = struct.unpack_from("<I", data, skip)
    sizes = struct.unpack_from(f"<{count}I", data, skip + 4)
    pos, items = skip + 4 + 4 * count, []
    for size in sizes:
        items.append(data[pos : pos + size])
        pos += size
    return items


def assert_jpeg_like(actual: Any, source: Any, stored: list[bytes], where: str) -> None:
    """Lossy images: size and mode as written, pixels as Pillow decodes the stored bytes."""
    actual = actual if isinstance(actual, list) else [actual]
    source = source if isinstance(source, list) else [source]
    assert len(actual) == len(source) == len(stored), where
    for got, src, raw in zip(actual, source, stored, strict=True):
        if isinstance(src, bytes):  # jpeg_array is written as JPEG bytes
            src = Image.open(io.BytesIO(src))
        assert (got.mode, got.size) == (src.mode, src.size), where
        np.testing.assert_array_equal(np.asarray(got), np.asarray(Image.open(io.BytesIO(raw))), err_msg=where)


def test_all_encodings(
    copy_fixture: Callable[[str], Path], values: ModuleType, mds_cells: Callable[[Path, int], dict[str, Any]]
) -> None:
    folder = copy_fixture("mds/all_encodings")
    dataset = LocalDataset(folder)
    assert len(dataset) == 60 and len(dataset.shards) == 13
    for i, sample in enumerate(dataset):
        expected = values.all_sample(i)
        assert sample.keys() == expected.keys()
        cells = mds_cells(folder, i)
        stored = {
            "jpeg": [cells["jpeg"].data],
            "list_jpeg": split_sized(cells["list_jpeg"].data, 4),
            "jpeg_array": split_sized(cells["jpeg_array"].data, 0),
        }
        for column, value in expected.items():
            where = f"sample {i} column {column}"
            if column in LOSSY_COLUMNS:
                assert_jpeg_like(sample[column], value, stored[column], where)
            else:
                assert_same(sample[column], value, where)


def check_seq(dataset: LocalDataset, first: int = 0) -> None:
    samples = list(dataset)
    assert len(samples) == len(dataset)
    for i, sample in enumerate(samples):
        assert sample.keys() == {"id", "number", "payload"}
        expected = seq_value(first + i)
        assert sample["id"] == expected["id"] and sample["number"] == expected["number"]
        assert_same(sample["payload"], expected["payload"], f"sample {i}")


def seq_value(i: int) -> dict[str, Any]:
    return {"id": f"{i:06}", "number": 3 * i, "payload": ((np.arange(16) + i) % 65536).astype(np.uint16)}


def test_seq_value_matches_fixture_values(values: ModuleType) -> None:
    for i in (0, 7, 499, 1049):
        for column, value in values.seq_sample(i).items():
            assert_same(seq_value(i)[column], value, column)


def test_uncompressed(copy_fixture: Callable[[str], Path]) -> None:
    dataset = LocalDataset(copy_fixture("mds/uncompressed"))
    assert len(dataset) == dataset.num_samples == dataset.size == 500
    check_seq(dataset)


def sample_region(data: bytes) -> bytes:
    """An MDS shard's samples, without its header (which records the writer's compression and hashes)."""
    (first,) = struct.unpack_from("<I", data, 4)
    return data[first:]


def assert_decompressed(folder: Path, shard: dict[str, Any], raw_twin: Path) -> None:
    """The file decompressed on first use is the one the index describes, holding the raw twin's samples."""
    raw = shard["raw_data"]
    data = (folder / raw["basename"]).read_bytes()
    assert len(data) == raw["bytes"]
    assert hashlib.sha1(data).hexdigest() == raw["hashes"]["sha1"]
    assert sample_region(data) == sample_region((raw_twin / raw["basename"]).read_bytes())


@pytest.mark.parametrize("family", COMPRESSED_FAMILIES)
def test_compressed_family(family: str, copy_fixture: Callable[[str], Path], fixtures_dir: Path) -> None:
    folder = copy_fixture(f"mds/compressed/{family}")
    check_seq(LocalDataset(folder))
    for shard in json.loads((folder / "index.json").read_text())["shards"]:
        assert_decompressed(folder, shard, fixtures_dir / "mds" / "uncompressed")
    assert not list(folder.glob("*.tmp"))
    check_seq(LocalDataset(folder, validate_hash="xxh3_64"))  # now reads the decompressed files


def test_splits(copy_fixture: Callable[[str], Path]) -> None:
    root = copy_fixture("mds/splits")
    train, val = LocalDataset(root, split="train"), LocalDataset(root, split="val")
    assert (len(train), len(val)) == (300, 50)
    check_seq(train)
    check_seq(val, first=1000)


def test_merged_index_with_subfolders(copy_fixture: Callable[[str], Path]) -> None:
    dataset = LocalDataset(copy_fixture("mds/merged"))
    assert [shard.basename.split("/")[0] for shard in dataset.shards] == ["part0", "part0", "part1", "part1"]
    assert len(dataset) == 200
    check_seq(dataset)


def test_tiny(copy_fixture: Callable[[str], Path]) -> None:
    dataset = LocalDataset(copy_fixture("mds/tiny"))
    assert dataset[:] == [{"number": 5, "words": "hi"}, {"number": -1, "words": ""}]
    assert dataset.shards[0].columns == {"number": "int", "words": "str"}


def test_unsafe_pickle_needs_permission(copy_fixture: Callable[[str], Path]) -> None:
    folder = copy_fixture("mds/unsafe_pkl")
    with pytest.raises(UnsafeEncodingError, match=r"'obj'.*shard\.00000\.mds"):
        LocalDataset(folder)
    dataset = LocalDataset(folder, allow_unsafe_types=True)
    assert list(dataset) == [{"obj": {"i": i, "set": {i, i + 1}}, "n": i} for i in range(10)]


@pytest.mark.parametrize("fmt", ["json", "csv", "tsv"])
@pytest.mark.parametrize("variant", ["plain", "zstd"])
def test_text_formats(
    fmt: str, variant: str, copy_fixture: Callable[[str], Path], values: ModuleType
) -> None:
    folder = copy_fixture(f"{fmt}/{variant}")
    dataset = LocalDataset(folder, validate_hash="sha1" if variant == "zstd" else None)
    assert len(dataset) == 200
    for i, sample in enumerate(dataset):
        expected = values.xsv_sample(i)
        assert sample == expected
        assert [type(value) for value in sample.values()] == [type(value) for value in expected.values()]
    assert dataset.get_batch([199, 0, 57]) == [values.xsv_sample(i) for i in (199, 0, 57)]
    assert not list(folder.glob("*.tmp"))


@pytest.fixture
def seq_dataset(copy_fixture: Callable[[str], Path]) -> LocalDataset:
    return LocalDataset(copy_fixture("mds/uncompressed"))


def ids_of(samples: list[dict[str, Any]]) -> list[int]:
    return [int(sample["id"]) for sample in samples]


def test_indexing_forms(seq_dataset: LocalDataset) -> None:
    ds = seq_dataset
    assert ds[-1]["id"] == "000499" and ds[-500]["id"] == "000000"
    assert ds[np.int64(146)]["id"] == "000146" and ds[np.uint32(147)]["id"] == "000147"
    assert ids_of(ds[145:150]) == list(range(145, 150))
    assert ids_of(ds[::-97]) == list(range(499, -1, -97))
    assert ids_of(ds[-3:]) == [497, 498, 499]
    assert ds[10:5] == []
    assert ids_of(ds[[5, -2, 499, 5]]) == [5, 498, 499, 5]
    assert ids_of(ds[np.array([300, 2, 146, 147], dtype=np.int32)]) == [300, 2, 146, 147]
    nested = ds[np.array([[1, 2], [3, 4]])]
    assert [ids_of(row) for row in nested] == [[1, 2], [3, 4]]
    assert [ids_of(row) for row in ds[[[7], [8, 9]]]] == [[7], [8, 9]]
    assert ds[[]] == [] and ds.get_batch([]) == [] and ds.get_batch(np.array([], dtype=np.int64)) == []


def test_arrays_are_read_only_views(seq_dataset: LocalDataset) -> None:
    payload = seq_dataset[0]["payload"]
    assert not payload.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        payload[0] = 1


def test_get_batch_across_shards_in_any_order(seq_dataset: LocalDataset) -> None:
    ids = np.random.default_rng(0).permutation(500)[:300]
    batch = seq_dataset.get_batch(ids)
    assert ids_of(batch) == ids.tolist()
    for sample, i in zip(batch, ids.tolist(), strict=True):
        assert_same(sample["payload"], seq_value(i)["payload"], f"sample {i}")
    assert ids_of(seq_dataset.get_batch(range(140, 160))) == list(range(140, 160))


@pytest.mark.parametrize("bad", [500, -501, 10**12])
def test_index_out_of_range(seq_dataset: LocalDataset, bad: int) -> None:
    with pytest.raises(IndexError, match=f"{bad}.*500 samples"):
        seq_dataset[bad]
    with pytest.raises(IndexError, match=f"{bad}.*500 samples"):
        seq_dataset.get_batch([0, bad])


@pytest.mark.parametrize("bad", ["3", 1.5, None, np.array([1.0, 2.0]), (1, 2)])
def test_index_of_wrong_type(seq_dataset: LocalDataset, bad: Any) -> None:
    with pytest.raises(TypeError):
        seq_dataset[bad]


def test_shard_info(seq_dataset: LocalDataset) -> None:
    shards = seq_dataset.shards
    assert [shard.start for shard in shards] == [0, 147, 294, 441]
    assert sum(shard.samples for shard in shards) == 500
    assert {(shard.format, shard.compression) for shard in shards} == {("mds", None)}
    assert shards[1].basename == "shard.00001.mds" and shards[1].index == 1
    assert shards[0].columns == {"id": "str", "number": "int", "payload": "ndarray:uint16:16"}
    assert "samples=500" in repr(seq_dataset)


def test_close_and_context_manager(copy_fixture: Callable[[str], Path]) -> None:
    folder = copy_fixture("mds/uncompressed")
    with LocalDataset(folder) as dataset:
        kept = dataset[3]["payload"]  # a view of the mapped shard
        dataset[200]
    assert_same(kept, seq_value(3)["payload"], "a sample kept past close")
    assert dataset[4]["id"] == "000004"  # reopens on use
    dataset.close()
    dataset.close()


def test_pickles_into_another_process_state(copy_fixture: Callable[[str], Path]) -> None:
    dataset = LocalDataset(copy_fixture("mds/splits"), split="val", validate_hash=None)
    dataset[0]
    clone = pickle.loads(pickle.dumps(dataset))
    assert (clone.split, len(clone)) == ("val", 50)
    assert clone[-1]["id"] == "001049"


def _read_all(folder: str, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=30)
    try:
        ids = [sample["id"] for sample in LocalDataset(folder)]
        results.put(ids == [f"{i:06}" for i in range(500)])
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(repr(exc))


def test_concurrent_first_use_decompression(copy_fixture: Callable[[str], Path], fixtures_dir: Path) -> None:
    folder = copy_fixture("mds/compressed/bz2")
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_read_all, args=(str(folder), barrier, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert outcomes == [True] * 4
    for shard in json.loads((folder / "index.json").read_text())["shards"]:
        assert_decompressed(folder, shard, fixtures_dir / "mds" / "uncompressed")
    assert sorted(path.name for path in folder.iterdir() if not path.name.endswith(".bz2")) == [
        "index.json",
        "shard.00000.mds",
        "shard.00001.mds",
        "shard.00002.mds",
        "shard.00003.mds",
    ]
