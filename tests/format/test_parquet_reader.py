"""The ``parquet`` and ``files`` formats: indexes built from footers (ranged reads only) and listings,
shards of row groups read from their fetched bytes or in place, columns as arrays, nulls never numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shardflow.format import Capability, LocalDataset, ShardFormatError, ShardReader, read_shards
from shardflow.format._parts import Spliced
from shardflow.format._read_parquet import parquet_entries, read_parquet_footer
from shardflow.format._read_plain import files_entries
from shardflow.format.index import write_index

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def table(start: int, rows: int, **extra: object) -> object:
    ids = np.arange(start, start + rows)
    columns = {
        "id": ids,
        "text": [f"row {i}" for i in ids],
        "vec": pa.FixedSizeListArray.from_arrays(pa.array(np.repeat(ids, 3).astype(np.float32)), 3),
        "toks": pa.array([list(range(i, i + 1 + i % 3)) for i in ids], pa.list_(pa.int32())),
        **extra,
    }
    return pa.table(columns)


class CountingReader:
    """``read(start, end)`` over a local file, recording every range asked for."""

    def __init__(self, path: Path) -> None:
        self.path, self.ranges = path, []

    def __call__(self, start: int, end: int) -> bytes:
        self.ranges.append((start, end))
        with open(self.path, "rb") as file:
            file.seek(start)
            return file.read(end - start)


def index_folder(folder: Path, names: list[str], shard_bytes: int) -> list[dict]:
    footers = []
    for name in names:
        path = folder / name
        footers.append(read_parquet_footer(name, path.stat().st_size, CountingReader(path)))
    entries = parquet_entries(footers, shard_bytes)
    write_index(folder, entries)
    return entries


def fetch(folder: Path, cache: Path, entry: dict) -> None:
    """What the dataset's cache does for a shard: its parts joined, or the file whole."""
    target = cache / entry["raw_data"]["basename"]
    target.parent.mkdir(parents=True, exist_ok=True)
    data = b""
    for name, start, end in entry.get("parts") or [[entry["file"], 0, entry["file_bytes"]]]:
        data += (folder / name).read_bytes()[start:end]
    target.write_bytes(data)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    pq.write_table(table(0, 250), folder / "a.parquet", row_group_size=100)
    pq.write_table(table(250, 70), folder / "sub" / "b.parquet", row_group_size=100)
    return folder


def test_the_index_comes_from_the_footer_alone(folder: Path) -> None:
    path = folder / "a.parquet"
    reader = CountingReader(path)
    footer = read_parquet_footer("a.parquet", path.stat().st_size, reader)
    assert reader.ranges == [(max(0, path.stat().st_size - 65536), path.stat().st_size)]
    assert footer.metadata.num_rows == 250 and footer.metadata.num_row_groups == 3
    big = folder / "big.parquet"
    pq.write_table(pa.table({f"c{k}": np.arange(200) for k in range(300)}), big, row_group_size=20)
    reader = CountingReader(big)
    footer = read_parquet_footer("big.parquet", big.stat().st_size, reader)
    assert len(reader.ranges) == 2 and footer.metadata.num_row_groups == 10  # a footer over 64 KiB
    assert sum(end - start for start, end in reader.ranges) < big.stat().st_size


def test_row_group_shards_read_from_their_fetched_bytes(folder: Path, tmp_path: Path) -> None:
    entries = index_folder(folder, ["a.parquet", "sub/b.parquet"], shard_bytes=1)
    assert [e["row_groups"] for e in entries] == [[0], [1], [2], [0]]
    assert [e["raw_data"]["basename"] for e in entries] == ["a.parquet.rg0", "a.parquet.rg1", "a.parquet.rg2",
                                                            "sub/b.parquet"]  # fmt: skip
    cache = tmp_path / "cache"
    (cache / "index.json").parent.mkdir()
    (cache / "index.json").write_text((folder / "index.json").read_text())
    for entry in entries:
        fetch(folder, cache, entry)
    assert (cache / "a.parquet.rg1").stat().st_size < (folder / "a.parquet").stat().st_size  # not the file
    shards = read_shards(cache)
    assert shards[0].columns == {
        "id": "int64",
        "text": "str",
        "vec": "ndarray:float32:3",
        "toks": "ndarray:int32",
    }
    assert Capability.ARRAYS in shards[0].capabilities
    assert shards[0].array_columns == {"id": (np.dtype("int64"), ()), "vec": (np.dtype("float32"), (3,))}
    dataset = LocalDataset(cache)
    assert len(dataset) == 320
    for i in (0, 99, 100, 249, 250, 319):
        sample = dataset[i]
        assert sample["id"] == i and sample["text"] == f"row {i}"
        assert sample["vec"].tolist() == [i] * 3 and sample["toks"].tolist() == list(range(i, i + 1 + i % 3))
    reader = ShardReader(cache, shards[1])
    got = reader.read_columns([5, 0, 99], ["id", "vec"], ["text", "toks"])
    assert got.arrays["id"].tolist() == [105, 100, 199] and got.arrays["vec"].shape == (3, 3)
    assert got.values["text"] == ["row 105", "row 100", "row 199"]
    reader.close()


def test_a_folder_read_in_place_reads_row_groups_from_the_files(folder: Path) -> None:
    index_folder(folder, ["a.parquet", "sub/b.parquet"], shard_bytes=1)
    dataset = LocalDataset(folder)
    assert [int(dataset[i]["id"]) for i in range(320)] == list(range(320))


def test_small_row_groups_join_and_a_small_file_is_one_shard(folder: Path) -> None:
    entries = index_folder(folder, ["a.parquet", "sub/b.parquet"], shard_bytes=1 << 30)
    assert [e["raw_data"]["basename"] for e in entries] == ["a.parquet", "sub/b.parquet"]
    assert all("parts" not in e for e in entries)
    one_rg = entries[0]["raw_data"]["bytes"]
    entries = index_folder(folder, ["a.parquet"], shard_bytes=one_rg // 3)
    assert [e["row_groups"] for e in entries] in ([[0, 1], [2]], [[0], [1], [2]], [[0, 1, 2]])


def test_a_changed_file_is_never_read_with_the_old_index(folder: Path) -> None:
    index_folder(folder, ["a.parquet"], shard_bytes=1)
    pq.write_table(table(1000, 250), folder / "a.parquet", row_group_size=100)
    with pytest.raises(ShardFormatError, match="changed since it was indexed"):
        LocalDataset(folder)[0]


def test_nulls_are_values_or_errors_never_numbers(tmp_path: Path) -> None:
    folder = tmp_path / "nulls"
    folder.mkdir()
    extra = {
        "maybe": pa.array([None if i % 7 == 0 else i for i in range(50)], pa.int64()),
        "name": pa.array([None if i == 3 else "x" for i in range(50)]),
    }
    pq.write_table(table(0, 50, **extra), folder / "n.parquet", row_group_size=20)
    entries = index_folder(folder, ["n.parquet"], shard_bytes=1)
    columns = dict(zip(entries[0]["column_names"], entries[0]["column_encodings"], strict=True))
    assert columns["maybe"] == "arrow:int64" and columns["id"] == "int64"
    dataset = LocalDataset(folder)
    assert dataset[7]["maybe"] is None and dataset[8]["maybe"] == 8 and dataset[3]["name"] is None
    assert "maybe" not in read_shards(folder)[0].array_columns
    reader = ShardReader(folder, read_shards(folder)[0])  # a batch's values: converted for its rows only
    got = reader.read_columns(np.array([7, 8, 3]), [], ["maybe", "name", "text"]).values
    assert got == {"maybe": [None, 8, 3], "name": ["x", "x", None], "text": ["row 7", "row 8", "row 3"]}
    assert [reader.get(i)["name"] for i in (7, 3)] == ["x", None]  # then whole columns, the same values
    assert reader.read_columns([3], [], ["name"]).values == {"name": [None]}
    reader.close()

    # Statistics that claim no null where there is one: the column is refused, not read as numbers.
    pq.write_table(
        pa.table({"x": pa.array([1, None, 3], pa.int64())}), folder / "n.parquet", write_statistics=False
    )
    entries = index_folder(folder, ["n.parquet"], shard_bytes=1)
    assert entries[0]["column_encodings"] == ["arrow:int64"]  # no statistics: may hold nulls
    entries[0]["column_encodings"] = ["int64"]
    write_index(folder, entries)
    with pytest.raises(ShardFormatError, match="column 'x' has a null in row 1"):
        LocalDataset(folder)[0]


def test_files_of_different_columns_are_refused_by_name(folder: Path) -> None:
    pq.write_table(pa.table({"id": np.arange(3)}), folder / "c.parquet")
    with pytest.raises(ShardFormatError, match="c.parquet has columns .* need the same columns"):
        index_folder(folder, ["a.parquet", "c.parquet"], shard_bytes=1)


def test_spliced_refuses_bytes_that_were_not_fetched(tmp_path: Path) -> None:
    path = tmp_path / "spliced"
    path.write_bytes(b"abcdefgh")
    file = Spliced(path, 100, [(10, 14), (96, 100)])
    file.seek(11)
    assert file.read(3) == b"bcd"
    file.seek(-4, 2)
    assert file.read(4) == b"efgh"
    file.seek(50)
    with pytest.raises(OSError, match="were not fetched"):
        file.read(2)


def test_plain_files_in_packs_with_labels(tmp_path: Path) -> None:
    folder = tmp_path / "files"
    names = [f"{kind}/{k:03d}.bin" for kind in ("cat", "dog") for k in range(5)]
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode() * 3)
    entries = files_entries([(n, (folder / n).stat().st_size) for n in names], labels=True, pack_files=4)
    assert [e["samples"] for e in entries] == [4, 4, 2]
    write_index(folder, entries)
    in_place = LocalDataset(folder)
    assert in_place[6] == {
        "path": "dog/001.bin",
        "bytes": b"dog/001.bin" * 3,
        "label": 1,
        "label_name": "dog",
    }
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index.json").write_text(json.dumps({"version": 2, "shards": entries}))
    for entry in entries:
        target = cache / entry["raw_data"]["basename"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"".join((folder / name).read_bytes() for name, _, _ in entry["parts"]))
    fetched = LocalDataset(cache)
    assert [fetched[i] for i in range(10)] == [in_place[i] for i in range(10)]
    reader = ShardReader(cache, read_shards(cache)[1])
    got = reader.read_columns([3, 0], ["label"], ["path", "bytes"])
    assert got.arrays["label"].tolist() == [1, 0] and got.values["path"] == ["dog/002.bin", "cat/004.bin"]
