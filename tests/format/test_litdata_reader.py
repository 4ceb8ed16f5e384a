"""LitData optimised folders read directly: every sample of folders written by ``litdata.optimize`` (plain,
and zstd at each of its levels) equals what LitData itself reads; configurations shardflow cannot read are
refused by name when the index is built."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

from shardflow.format import (
    IndexFormatError,
    ShardFormatError,
    ShardReader,
    UnsafeEncodingError,
    read_shards,
)
from shardflow.format.index import write_index
from shardflow.format.litdata import LITDATA_FORMAT, is_litdata_index, litdata_entries

from ._litdata_inputs import SAMPLES, same, write_litdata_folders

VARIANTS = ("plain", "zstd_batch", "zstd_chunk", "zstd_sample")


@pytest.fixture(scope="module")
def litdata_folders(reference_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_litdata_folders(reference_python, tmp_path_factory.mktemp("litdata"))


def index_folder(source: Path, out: Path) -> Path:
    """A copy of ``source`` with an ``index.json`` of litdata entries beside the chunks."""
    shutil.copytree(source, out)
    obj = json.loads((source / "index.json").read_text())
    sizes = {path.name: path.stat().st_size for path in source.iterdir()}
    write_index(out, litdata_entries(obj, str(source / "index.json"), sizes))
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_sample_equals_what_litdata_reads(litdata_folders: Path, tmp_path: Path, variant: str) -> None:
    folder = index_folder(litdata_folders / variant, tmp_path / variant)
    shards = read_shards(folder)
    got = [ShardReader(folder, shard).get(i) for shard in shards for i in range(shard.samples)]
    expected = pickle.loads((litdata_folders / f"{variant}.pkl").read_bytes())
    assert len(got) == len(expected) == SAMPLES
    for i, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        assert same(mine, theirs), f"sample {i}: {mine!r} != {theirs!r}"
        assert mine["id"] == i and mine["text"].startswith(f"sample {i} ")
    assert set(shards[0].columns) == set(expected[0]) and shards[0].format == "litdata"


def test_whole_file_chunks_are_inflated_beside_themselves(litdata_folders: Path, tmp_path: Path) -> None:
    folder = index_folder(litdata_folders / "zstd_chunk", tmp_path / "c")
    shard = read_shards(folder)[0]
    assert shard.compression == "zstd" and shard.zip_files[0].basename.endswith(".zstd.bin")
    with ShardReader(folder, shard) as reader:
        assert reader.get(0)["id"] == 0
    assert (folder / shard.basename).stat().st_size == shard.raw_files[0].bytes


def test_whole_file_chunks_need_the_listing(litdata_folders: Path) -> None:
    obj = json.loads((litdata_folders / "zstd_chunk" / "index.json").read_text())
    with pytest.raises(IndexFormatError, match="compressed whole"):
        litdata_entries(obj, "x/index.json")


def test_a_corrupt_chunk_is_named(litdata_folders: Path, tmp_path: Path) -> None:
    folder = index_folder(litdata_folders / "plain", tmp_path / "p")
    shard = read_shards(folder)[0]
    path = folder / shard.basename
    data = bytearray(path.read_bytes())
    data[0:4] = (shard.samples + 1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ShardFormatError, match=str(path)):
        ShardReader(folder, shard).get(0)


def test_litdata_and_mds_indexes_are_told_apart(litdata_folders: Path) -> None:
    obj = json.loads((litdata_folders / "plain" / "index.json").read_text())
    assert is_litdata_index(obj)
    assert not is_litdata_index({"version": 2, "shards": []})
    with pytest.raises(IndexFormatError, match="not a LitData index"):
        litdata_entries({"version": 2, "shards": []}, "mds/index.json")


def config(**changes: Any) -> dict[str, Any]:
    """A LitData index of one uncompressed chunk of dict samples ``{"a": int, "b": str}``."""
    leaf = {"type": None, "context": None, "children_spec": []}
    spec = [1, {"type": "builtins.dict", "context": '["a", "b"]', "children_spec": [leaf, leaf]}]
    base = {"data_format": ["int", "str"], "data_spec": json.dumps(spec), "compression": None,
            "item_loader": "PyTreeLoader", "encryption": None}  # fmt: skip
    chunk = {"filename": "chunk-0-0.bin", "chunk_bytes": 10, "chunk_size": 1, "dim": None}
    return {"chunks": [chunk], "config": {**base, **changes}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"item_loader": "TokensLoader"}, "item_loader 'TokensLoader'"),
        ({"encryption": {"key": "x"}}, "encrypted"),
        ({"compression": "lz4"}, "compression 'lz4'"),
        ({"data_format": ["int", "video"]}, "leaf format 'video'"),
        ({"data_format": ["int"]}, "2 leaves but data_format names 1"),
        ({"data_spec": json.dumps([1, {"type": "builtins.tuple", "context": "null", "children_spec": []}])},
         "not dicts"),
    ],
)  # fmt: skip
def test_what_shardflow_cannot_read_is_refused_by_name(changes: dict, message: str) -> None:
    with pytest.raises(IndexFormatError, match=message):
        litdata_entries(config(**changes), "ld/index.json")


def test_pickled_leaves_need_allow_unsafe_types(tmp_path: Path) -> None:
    entries = litdata_entries(config(data_format=["int", "pickle"]), "ld/index.json")
    assert LITDATA_FORMAT.plan(entries[0], tmp_path / "index.json").unsafe_columns == ["b"]
    write_index(tmp_path, entries)
    with pytest.raises(UnsafeEncodingError, match="'b'"):
        read_shards(tmp_path)
    assert read_shards(tmp_path, allow_unsafe_types=True)[0].columns == {"a": "litdata", "b": "litdata"}
