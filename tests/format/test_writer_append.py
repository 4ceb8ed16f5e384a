"""mode='append' adds shards to an existing dataset: numbering continues, columns must match."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from shardflow.format import CSVWriter, FormatError, JSONWriter, LocalDataset, MDSWriter

TEXT_COLUMNS = {"id": "str", "number": "int", "ratio": "float"}


def seq(values: ModuleType, out: Path, start: int, count: int, **kwargs: Any) -> None:
    with MDSWriter(out=out, columns=values.SEQ_COLUMNS, size_limit=1 << 12, **kwargs) as writer:
        for i in range(start, start + count):
            writer.write(values.seq_sample(i))


def shard_names(folder: Path) -> list[str]:
    shards = json.loads((folder / "index.json").read_text())["shards"]
    return [(shard["zip_data"] or shard["raw_data"])["basename"] for shard in shards]


def test_append_continues_the_dataset(tmp_path: Path, values: ModuleType) -> None:
    seq(values, tmp_path, 0, 100)
    first = shard_names(tmp_path)
    old_bytes = {name: (tmp_path / name).read_bytes() for name in first}
    seq(values, tmp_path, 100, 90, mode="append", compression="zstd", hashes=["sha1"])
    names = shard_names(tmp_path)
    assert names[: len(first)] == first
    assert names[len(first) :] == [f"shard.{k:05}.mds.zstd" for k in range(len(first), len(names))]
    assert {name: (tmp_path / name).read_bytes() for name in first} == old_bytes
    with LocalDataset(tmp_path) as dataset:
        assert len(dataset) == 190
        for i in (0, 99, 100, 189):
            assert dataset[i]["id"] == f"{i:06}"
            np.testing.assert_array_equal(dataset[i]["payload"], values.seq_sample(i)["payload"])


def test_append_to_nothing_creates(tmp_path: Path, values: ModuleType) -> None:
    seq(values, tmp_path / "new", 0, 10, mode="append")
    seq(values, tmp_path / "plain", 0, 10)
    assert (tmp_path / "new" / "index.json").read_bytes() == (tmp_path / "plain" / "index.json").read_bytes()


def test_append_skips_names_already_taken(tmp_path: Path, values: ModuleType) -> None:
    seq(values, tmp_path, 0, 150)
    index = json.loads((tmp_path / "index.json").read_text())
    assert len(index["shards"]) == 3
    del index["shards"][0]  # two shards left, named shard.00001 and shard.00002
    (tmp_path / "index.json").write_text(json.dumps(index, sort_keys=True))
    seq(values, tmp_path, 150, 10, mode="append")
    assert shard_names(tmp_path) == ["shard.00001.mds", "shard.00002.mds", "shard.00003.mds"]


def test_append_with_other_columns_is_refused(tmp_path: Path, values: ModuleType) -> None:
    seq(values, tmp_path, 0, 20)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    columns = dict(values.SEQ_COLUMNS, payload="ndarray:uint16:17")
    with pytest.raises(FormatError, match=r"ndarray:uint16:16.*this writer has .*ndarray:uint16:17"):
        MDSWriter(out=tmp_path, columns=columns, mode="append")
    with pytest.raises(FormatError, match=r"'format': 'mds'.*'format': 'csv'"):
        CSVWriter(out=tmp_path, columns=TEXT_COLUMNS, mode="append")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


@pytest.mark.parametrize("writer", [JSONWriter, CSVWriter])
def test_append_text_formats(tmp_path: Path, values: ModuleType, writer: Any) -> None:
    for start, mode in ((0, "create"), (60, "append")):
        with writer(out=tmp_path, columns=TEXT_COLUMNS, size_limit=1 << 10, mode=mode) as out:
            for i in range(start, start + 60):
                out.write(values.xsv_sample(i))
    with LocalDataset(tmp_path) as dataset:
        assert [dataset[i] for i in range(120)] == [values.xsv_sample(i) for i in range(120)]


def test_append_needs_a_local_copy(tmp_path: Path, values: ModuleType) -> None:
    with pytest.raises(ValueError, match="local copy"):
        MDSWriter(out="s3://bucket/data", columns=values.SEQ_COLUMNS, mode="append")
