"""The registry of shard formats: built-in formats, run-time registration, entry points, and a new format
(one class below) read end to end by LocalDataset and StreamingDataset through its capabilities alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shardflow.format import (
    Capability,
    IndexFormatError,
    LocalDataset,
    ShardFormat,
    ShardFormatError,
    ShardReader,
    UnknownFormatError,
    UnknownNameError,
    UnsupportedColumnError,
    get_format,
    known_formats,
    read_shards,
    register_format,
)
from shardflow.format.index import IndexChecker, write_index

BUILT_IN = {"mds", "json", "csv", "tsv", "xsv"}


# -- two toy formats: a text file with one sample per line, and one integer per line read as columns ---------


class LinesShard:
    """An open ``lines`` shard: the file's lines, each a sample ``{column: line}``."""

    def __init__(self, path: Path, column: str, samples: int) -> None:
        self.path = path
        self.lines = path.read_text("utf-8").splitlines()
        if len(self.lines) != samples:
            raise ShardFormatError(f"{path} holds {len(self.lines)} lines, its index says {samples}")
        self.column = column

    def get(self, i: int) -> dict[str, Any]:
        return {self.column: self.lines[i]}

    def close(self) -> None:
        self.lines = []


class LinesPlan:
    """A ``lines`` shard's plan: one ``str`` column, named by the entry's ``column``."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        self.columns = {entry["column"]: "str"}
        self.unsafe_columns: list[str] = []

    def open(self, root: Path, validate_hash: str | None, populate: bool = False) -> Any:
        return self.make(
            root / self.entry["raw_data"]["basename"], self.entry["column"], self.entry["samples"]
        )

    make = LinesShard


class LinesFormat(ShardFormat):
    """Text files, one sample per line; no capabilities."""

    name = "lines"

    def check_entry(self, entry: dict[str, Any], check: IndexChecker, where: str) -> None:
        check.field(entry, "column", where, (str,))

    def plan(self, entry: dict[str, Any], index_path: Path) -> Any:
        return LinesPlan(entry)


class NumbersShard(LinesShard):
    """An open ``numbers`` shard: one integer per line, served as whole columns too."""

    def __init__(self, path: Path, column: str, samples: int) -> None:
        super().__init__(path, column, samples)
        self.values = np.array([int(line) for line in self.lines], np.int64)

    def get(self, i: int) -> dict[str, Any]:
        return {self.column: self.values[i]}

    def read(
        self, ids: np.ndarray, arrays: list[str], values: list[str], spans: list[str]
    ) -> tuple[dict[str, np.ndarray], dict[str, list[Any]], dict[str, Any]]:
        assert not spans  # no capability 'spans': the reader refuses them first
        return (
            {name: self.values[ids] for name in arrays},
            {name: list(self.values[ids]) for name in values},
            {},
        )


class NumbersPlan(LinesPlan):
    make = NumbersShard

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(entry)
        self.columns = {entry["column"]: "int64"}


class NumbersFormat(LinesFormat):
    """One integer per line: whole columns, and the column as an int64 array."""

    name = "numbers"
    capabilities = frozenset({Capability.COLUMNS, Capability.ARRAYS})

    def plan(self, entry: dict[str, Any], index_path: Path) -> Any:
        return NumbersPlan(entry)

    def array_columns(self, shard: Any) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        return {name: (np.dtype(np.int64), ()) for name in shard.columns}


def write_dataset(folder: Path, fmt: str, shards: list[list[str]], column: str = "text") -> Path:
    """A dataset of ``fmt`` shards, one file per list of lines, with its ``index.json``."""
    entries = []
    for k, lines in enumerate(shards):
        name = f"shard.{k:05d}.txt"
        data = "".join(f"{line}\n" for line in lines).encode("utf-8")
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        entries.append(
            {
                "version": 2,
                "format": fmt,
                "samples": len(lines),
                "column": column,
                "raw_data": {"basename": name, "bytes": len(data), "hashes": {}},
            }
        )
    write_index(folder, entries)
    return folder


@pytest.fixture(scope="module", autouse=True)
def toy_formats() -> None:
    register_format(LinesFormat())
    register_format(NumbersFormat())


# -- the registry --------------------------------------------------------------------------------------------


def test_built_in_formats_are_listed_with_their_capabilities() -> None:
    assert BUILT_IN <= set(known_formats())
    for name in BUILT_IN:
        assert get_format(name).name == name
    assert get_format("mds").capabilities == {Capability.COLUMNS, Capability.ARRAYS, Capability.SPANS}
    assert all(not get_format(name).capabilities for name in BUILT_IN - {"mds"})
    assert get_format("mds").file_keys == ("raw_data", "zip_data")
    assert get_format("csv").file_keys == ("raw_data", "zip_data", "raw_meta", "zip_meta")
    assert {"lines", "numbers"} <= set(known_formats())


def test_unknown_format_names_fail_naming_the_format_and_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownFormatError, match="no shard format is named 'parquetish'") as info:
        get_format("parquetish")
    assert isinstance(info.value, UnknownNameError) and isinstance(info.value, ValueError)
    assert all(name in str(info.value) for name in (*BUILT_IN, "lines"))
    write_dataset(tmp_path, "parquetish", [["a"]])
    with pytest.raises(IndexFormatError, match="format 'parquetish' is unknown; known formats: .*'mds'"):
        read_shards(tmp_path)


def test_registration_refuses_what_is_not_a_well_formed_format() -> None:
    with pytest.raises(TypeError, match="expected a ShardFormat"):
        register_format(object())  # type: ignore[arg-type]

    class Nameless(ShardFormat):
        name = "Bad Name"

    class SpansAlone(ShardFormat):
        name = "spansalone"
        capabilities = frozenset({Capability.SPANS})

    class Unknown(ShardFormat):
        name = "unknowncap"
        capabilities = frozenset({"teleport"})

    class MetaOnly(ShardFormat):
        name = "metaonly"
        file_keys = ("raw_meta",)

    with pytest.raises(ValueError, match="must start with 'raw_data'"):
        register_format(MetaOnly())
    with pytest.raises(ValueError, match="format name 'Bad Name'"):
        register_format(Nameless())
    with pytest.raises(ValueError, match="need 'columns'"):
        register_format(SpansAlone())
    with pytest.raises(ValueError, match=r"unknown capabilities \['teleport'\]"):
        register_format(Unknown())
    assert not {"spansalone", "unknowncap", "metaonly"} & set(known_formats())


def test_a_format_checks_its_own_index_fields(tmp_path: Path) -> None:
    write_dataset(tmp_path, "lines", [["a", "b"]], column=7)  # type: ignore[arg-type]
    with pytest.raises(IndexFormatError, match="shard 0: field 'column' is 7, expected str"):
        read_shards(tmp_path)


# -- a new format read end to end ----------------------------------------------------------------------------


def test_a_registered_format_reads_through_the_shard_api_and_local_dataset(tmp_path: Path) -> None:
    shards = [[f"line {k}.{i}" for i in range(n)] for k, n in enumerate([5, 0, 3])]
    write_dataset(tmp_path, "lines", shards)
    infos = read_shards(tmp_path)
    assert [(s.format, s.samples, s.start, s.columns) for s in infos] == [
        ("lines", 5, 0, {"text": "str"}),
        ("lines", 0, 5, {"text": "str"}),
        ("lines", 3, 5, {"text": "str"}),
    ]
    assert infos[0].capabilities == frozenset() and infos[0].array_columns == infos[0].byte_columns == {}
    with LocalDataset(tmp_path) as dataset:
        assert [sample["text"] for sample in dataset] == [line for lines in shards for line in lines]
        assert dataset.get_batch([6, 0]) == [{"text": "line 2.1"}, {"text": "line 0.0"}]
    reader = ShardReader(tmp_path, infos[2])
    assert reader.get_values([2, 0], ["text"]) == {"text": ["line 2.2", "line 2.0"]}
    with pytest.raises(UnsupportedColumnError, match="of a lines shard shard.00002.txt cannot be read as an"):
        reader.get_columns([0], ["text"])
    with pytest.raises(UnsupportedColumnError, match="is a lines shard: it has no value spans"):
        reader.read_spans(np.zeros(1, np.int64), np.ones(1, np.int64))
    reader.close()
    (tmp_path / "shard.00002.txt").write_text("only one line\n")
    with pytest.raises(ShardFormatError, match="holds 1 lines, its index says 3"):
        ShardReader(tmp_path, infos[2]).get(0)


def test_streaming_dataset_reads_a_registered_format_shuffled(tmp_path: Path) -> None:
    from shardflow.dataset import StreamingDataset

    shards = [[f"s{k}-{i}" for i in range(40)] for k in range(4)]
    write_dataset(tmp_path / "data", "lines", shards)

    def epoch(shuffle: bool) -> list[str]:
        dataset = StreamingDataset(
            local=str(tmp_path / "data"), shuffle=shuffle, shuffle_seed=7, batch_size=4
        )
        return [sample["text"] for sample in dataset]

    ordered, shuffled = epoch(False), epoch(True)
    assert ordered == [line for lines in shards for line in lines]
    assert sorted(shuffled) == sorted(ordered) and shuffled != ordered
    assert epoch(True) == shuffled  # the same seed, the same order


def test_streaming_dataset_uses_a_formats_column_capabilities(tmp_path: Path) -> None:
    import torch

    from shardflow.dataset import StreamingDataLoader, StreamingDataset

    shards = [[str(k * 100 + i) for i in range(30)] for k in range(3)]
    write_dataset(tmp_path / "data", "numbers", shards, column="x")
    expected = sorted(int(line) for lines in shards for line in lines)

    def dataset() -> StreamingDataset:
        return StreamingDataset(local=str(tmp_path / "data"), shuffle=True, shuffle_seed=3, batch_size=8)

    samples = list(dataset())  # cut from whole columns (Capability.COLUMNS)
    assert all(type(sample["x"]) is np.int64 for sample in samples)
    assert sorted(int(sample["x"]) for sample in samples) == expected
    batches = {
        reads: list(StreamingDataLoader(dataset(), batch_size=8, batch_reads=reads))
        for reads in (True, False)
    }
    assert len(batches[True]) == len(batches[False]) == 12
    for fast, slow in zip(batches[True], batches[False], strict=True):
        assert fast["x"].dtype == slow["x"].dtype == torch.int64 and torch.equal(fast["x"], slow["x"])
    assert torch.cat([batch["x"] for batch in batches[True]]).tolist() == [int(s["x"]) for s in samples]


# -- entry points --------------------------------------------------------------------------------------------


def test_formats_are_found_through_entry_points(tmp_path: Path) -> None:
    dist = tmp_path / "lines_format-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lines-format\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[shardflow.format.formats]\n"
        "lines = test_formats_registry:LinesFormat\n"
        "misnamed = test_formats_registry:LinesFormat\n"
    )
    write_dataset(tmp_path / "data", "lines", [["one", "two"], ["three"]])
    script = textwrap.dedent(f"""
        import shardflow.format as f
        assert "lines" in f.known_formats() and "misnamed" in f.known_formats()
        print(type(f.get_format("lines")).__name__)
        print(",".join(sample["text"] for sample in f.LocalDataset({str(tmp_path / "data")!r})))
        try:
            f.get_format("misnamed")
        except ValueError as error:
            print(error)
    """)
    path = os.pathsep.join([str(tmp_path), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["LinesFormat", "one,two,three"]
    assert (
        "misnamed = test_formats_registry:LinesFormat: the format is named 'lines', not 'misnamed'"
        in lines[2]
    )
