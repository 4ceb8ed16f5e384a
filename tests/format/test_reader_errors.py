"""LocalDataset refuses bad datasets with a clear FormatError naming the file, and checks hashes."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shardflow.format.errors import (
    FormatError,
    IndexFormatError,
    ShardFormatError,
    ShardHashError,
    UnknownNameError,
)
from shardflow.format.reader import LocalDataset

CopyFixture = Callable[[str], Path]


def edit_index(folder: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    index = json.loads((folder / "index.json").read_text())
    edit(index)
    (folder / "index.json").write_text(json.dumps(index, sort_keys=True))


def patch(path: Path, offset: int, data: bytes) -> None:
    content = bytearray(path.read_bytes())
    content[offset : offset + len(data)] = data
    path.write_bytes(bytes(content))


def read_all(folder: Path, **kwargs: Any) -> list[dict[str, Any]]:
    return list(LocalDataset(folder, **kwargs))


# index.json


def test_corrupt_index(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/uncompressed")
    text = (folder / "index.json").read_text()
    (folder / "index.json").write_text(text[: len(text) // 2])
    with pytest.raises(IndexFormatError, match="index.json"):
        LocalDataset(folder)


def test_unsupported_index_version(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/uncompressed")
    edit_index(folder, lambda index: index.update(version=3))
    with pytest.raises(IndexFormatError, match="index.json"):
        LocalDataset(folder)


@pytest.mark.parametrize("basename", ["../escape.mds", "/etc/passwd", "a/../../b.mds"])
def test_shard_outside_the_dataset_folder(copy_fixture: CopyFixture, basename: str) -> None:
    folder = copy_fixture("mds/uncompressed")
    edit_index(folder, lambda index: index["shards"][1]["raw_data"].update(basename=basename))
    with pytest.raises(IndexFormatError, match="index.json"):
        LocalDataset(folder)


def test_missing_index(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="index.json"):
        LocalDataset(tmp_path)


def test_unknown_encoding(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/tiny")
    edit_index(folder, lambda index: index["shards"][0].update(column_encodings=["int128", "str"]))
    with pytest.raises(IndexFormatError, match="int128"):
        LocalDataset(folder)


def test_column_size_disagrees_with_encoding(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/tiny")
    edit_index(folder, lambda index: index["shards"][0].update(column_sizes=[4, None]))
    with pytest.raises(IndexFormatError, match="number"):
        LocalDataset(folder)


# MDS shards

SHARD = "shard.00001.mds"  # of mds/uncompressed: 147 samples, 8165 bytes, samples 147..293


def open_shard(folder: Path) -> None:
    LocalDataset(folder)[147]


def test_truncated_shard(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/uncompressed")
    (folder / SHARD).write_bytes((folder / SHARD).read_bytes()[:-10])
    with pytest.raises(ShardFormatError, match=rf"{SHARD} is 8155 bytes but its index says 8165"):
        open_shard(folder)
    edit_index(folder, lambda index: index["shards"][1]["raw_data"].update(bytes=8155))
    with pytest.raises(ShardFormatError, match=rf"{SHARD} is corrupt.*last sample offset 8165"):
        open_shard(folder)


def test_offsets_that_decrease(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/uncompressed")
    offsets = struct.unpack_from("<4I", (folder / SHARD).read_bytes(), 4 + 4 * 10)
    patch(folder / SHARD, 4 + 4 * 10, struct.pack("<4I", offsets[0], offsets[2], offsets[1], offsets[3]))
    with pytest.raises(ShardFormatError, match=rf"{SHARD}.*decrease at sample 11"):
        open_shard(folder)


def test_sample_count_disagrees_with_index(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/uncompressed")
    edit_index(folder, lambda index: index["shards"][1].update(samples=146))
    with pytest.raises(ShardFormatError, match=rf"{SHARD}.*147 samples but its index says 146"):
        open_shard(folder)


def test_offsets_table_larger_than_file(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/uncompressed")
    patch(folder / SHARD, 0, struct.pack("<I", 100_000))
    edit_index(folder, lambda index: index["shards"][1].update(samples=100_000))
    with pytest.raises(ShardFormatError, match=rf"{SHARD}.*offsets table needs 400008 bytes"):
        open_shard(folder)


def test_first_offset_inside_header(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/uncompressed")
    patch(folder / SHARD, 4, struct.pack("<I", 12))
    with pytest.raises(ShardFormatError, match=rf"{SHARD}.*first sample offset 12 points into the header"):
        open_shard(folder)


def test_header_disagrees_with_index(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/uncompressed")
    edit_index(folder, lambda index: index["shards"][1].update(column_names=["ident", "number", "payload"]))
    with pytest.raises(ShardFormatError, match=rf"{SHARD}.*column_names"):
        open_shard(folder)


def first_sample_offset(path: Path) -> int:
    return struct.unpack_from("<I", path.read_bytes(), 4)[0]


def test_sample_sizes_that_do_not_add_up(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/uncompressed")
    patch(folder / SHARD, first_sample_offset(folder / SHARD), struct.pack("<I", 7))  # 'id' size 6 -> 7
    dataset = LocalDataset(folder)
    assert dataset[148]["id"] == "000148"  # the other samples still read
    with pytest.raises(ShardFormatError, match=rf"{SHARD}.*sample 0 spans"):
        dataset[147]


def test_undecodable_column(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/uncompressed")
    patch(folder / SHARD, first_sample_offset(folder / SHARD) + 4, b"\xff\xfe")  # 'id' is no longer UTF-8
    with pytest.raises(ShardFormatError, match=rf"{SHARD}: column 'id' of sample 0 cannot be decoded"):
        open_shard(folder)


@pytest.mark.parametrize(("width", "height"), [(1 << 20, 1 << 20), (8, 1 << 30), (1 << 24, 6)])
def test_image_cell_claiming_a_huge_size(
    copy_fixture: CopyFixture, mds_cells: Callable[..., Any], capped_memory: None, width: int, height: int
) -> None:
    folder = copy_fixture("mds/all_encodings")
    cell = mds_cells(folder, 0)["pil"]  # raw pixels: width, height, len(mode), mode, pixels
    patch(cell.path, cell.offset, struct.pack("<2I", width, height))
    with pytest.raises(ShardFormatError, match=r"shard\.00000\.mds: column 'pil' of sample 0"):
        LocalDataset(folder)[0]


def test_missing_shard_file(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/uncompressed")
    (folder / SHARD).unlink()
    dataset = LocalDataset(folder)
    assert dataset[0]["id"] == "000000"
    with pytest.raises(ShardFormatError, match=rf"{SHARD} does not exist"):
        dataset[147]


def test_corrupt_compressed_shard(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/compressed/zstd")
    zipped = folder / "shard.00001.mds.zstd"
    patch(zipped, 0, b"\x00\x00\x00\x00")  # no longer a zstd frame
    with pytest.raises(ShardFormatError, match=r"cannot decompress .*shard\.00001\.mds\.zstd"):
        open_shard(folder)
    assert sorted(path.name for path in folder.iterdir()) == [
        "index.json",
        "shard.00000.mds.zstd",
        "shard.00001.mds.zstd",
        "shard.00002.mds.zstd",
        "shard.00003.mds.zstd",
    ]


def test_unsafe_column_names_column_and_file(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/unsafe_pkl")
    with pytest.raises(
        FormatError, match=r"column 'obj' of .*unsafe_pkl/shard\.00000\.mds.*allow_unsafe_types"
    ):
        LocalDataset(folder)


# text shards


def test_truncated_meta(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("csv/plain")
    meta = folder / "shard.00000.csv.meta"
    meta.write_bytes(meta.read_bytes()[:100])
    with pytest.raises(ShardFormatError, match=r"shard\.00000\.csv\.meta is corrupt or truncated"):
        LocalDataset(folder)[0]


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [(b"000003,9,", b"000003,x,", "invalid literal"), (b"000003,9,", b"000003;9,", "2 fields, not 3")],
)
def test_bad_csv_line(copy_fixture: CopyFixture, old: bytes, new: bytes, problem: str) -> None:
    folder = copy_fixture("csv/plain")
    data = folder / "shard.00000.csv"
    data.write_bytes(data.read_bytes().replace(old, new))
    dataset = LocalDataset(folder)
    assert dataset[2]["id"] == "000002"
    with pytest.raises(ShardFormatError, match=rf"shard\.00000\.csv: line of sample 3 .*{problem}"):
        dataset[3]


def test_json_line_that_is_not_an_object(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("json/plain")
    data = folder / "shard.00000.json"
    line = data.read_bytes().split(b"\n")[0]
    data.write_bytes(data.read_bytes().replace(line, b"[1, 2]".ljust(len(line)), 1))
    with pytest.raises(ShardFormatError, match=r"line of sample 0 .*a list, not an object"):
        LocalDataset(folder)[0]


# hashes


@pytest.mark.parametrize("algorithm", ["sha1", "xxh64"])
def test_good_hashes(copy_fixture: CopyFixture, algorithm: str) -> None:
    assert len(read_all(copy_fixture("mds/all_encodings"), validate_hash=algorithm)) == 60


@pytest.mark.parametrize("algorithm", ["sha1", "xxh64"])
def test_corrupt_raw_shard_fails_its_hash(copy_fixture: CopyFixture, algorithm: str) -> None:
    folder = copy_fixture("mds/all_encodings")
    shard = folder / "shard.00002.mds"
    content = bytearray(shard.read_bytes())
    content[-1] ^= 0xFF
    shard.write_bytes(bytes(content))
    index = json.loads((folder / "index.json").read_text())
    expected = index["shards"][2]["raw_data"]["hashes"][algorithm]
    actual = r"[0-9a-f]+" if algorithm == "xxh64" else hashlib.sha1(content).hexdigest()
    dataset = LocalDataset(folder, validate_hash=algorithm)
    assert dataset[0]["int"] == -25_000_075  # shards that are intact still read
    with pytest.raises(
        ShardHashError, match=rf"shard\.00002\.mds.*{algorithm} digest is {actual} .*{expected}"
    ):
        list(dataset)
    list(LocalDataset(folder))  # without validation the flipped byte goes unnoticed


def test_corrupt_compressed_shard_fails_its_hash(copy_fixture: CopyFixture) -> None:
    folder = copy_fixture("mds/compressed/zstd")
    zipped = folder / "shard.00000.mds.zstd"
    content = bytearray(zipped.read_bytes())
    content[len(content) // 2] ^= 0x01
    zipped.write_bytes(bytes(content))
    with pytest.raises(
        ShardHashError, match=rf"shard\.00000\.mds\.zstd.*{hashlib.sha1(content).hexdigest()}"
    ):
        LocalDataset(folder, validate_hash="sha1")[0]
    assert not (folder / "shard.00000.mds").exists()


def test_hash_the_index_does_not_record(copy_fixture: CopyFixture) -> None:
    with pytest.raises(ShardHashError, match=r"records only \['sha1', 'xxh64'\]"):
        LocalDataset(copy_fixture("mds/all_encodings"), validate_hash="md5")[0]


def test_unknown_hash_name(copy_fixture: CopyFixture) -> None:
    with pytest.raises(UnknownNameError, match="sha1"):
        LocalDataset(copy_fixture("mds/tiny"), validate_hash="sha-one")


def test_errors_are_value_errors() -> None:
    for error in (IndexFormatError, ShardFormatError, ShardHashError, UnknownNameError):
        assert issubclass(error, FormatError) and issubclass(error, ValueError)
