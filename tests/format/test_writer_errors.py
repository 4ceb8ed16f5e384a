"""Bad writer input fails early and clearly: names, columns, sample numbers, and the 4 GiB shard cap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shardflow.format import CSVWriter, JSONWriter, MDSWriter, TSVWriter, XSVWriter
from shardflow.format import _write_shard as shard_writer
from shardflow.format.errors import EncodingError, ShardTooLargeError, UnknownNameError


@pytest.mark.parametrize(
    ("kwargs", "listed"),
    [
        ({"columns": {"x": "integer"}}, "'integer'.*ndarray.*str_decimal"),
        ({"columns": {"x": "int"}, "compression": "lzma"}, "'lzma'.*bz2.*zstd"),
        ({"columns": {"x": "int"}, "hashes": ["sha1", "crc7"]}, "'crc7'.*sha256.*xxh64"),
    ],
)
def test_unknown_names_list_the_valid_ones(tmp_path: Path, kwargs: dict[str, Any], listed: str) -> None:
    with pytest.raises(UnknownNameError, match=listed):
        MDSWriter(out=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()  # refused before anything was created


def test_unknown_column_encoding_names_the_column(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="column 'x'"):
        MDSWriter(out=tmp_path, columns={"a": "int", "x": "ndarray:int7"})
    with pytest.raises(UnknownNameError, match=r"column 'y'.*\['float', 'int', 'str'\]"):
        JSONWriter(out=tmp_path, columns={"y": "bytes"})
    with pytest.raises(UnknownNameError, match="column 'y'"):
        CSVWriter(out=tmp_path, columns={"y": "float64"})


@pytest.mark.parametrize(
    "bad",
    [
        {"size_limit": -5},
        {"size_limit": 1 << 32},
        {"size_limit": "12 parsecs"},
        {"mode": "overwrite"},
        {"columns": {}},
    ],
)
def test_bad_arguments(tmp_path: Path, bad: dict[str, Any]) -> None:
    kwargs: dict[str, Any] = {"columns": {"x": "int"}, **bad}
    with pytest.raises(ValueError):
        MDSWriter(out=tmp_path, **kwargs)


def test_unknown_keyword(tmp_path: Path) -> None:
    for error in (TypeError, ValueError):  # Python's error, and the reference's
        with pytest.raises(error, match="colour"):
            MDSWriter(out=tmp_path, columns={"x": "int"}, colour="blue")


COLUMNS = {"id": "int", "name": "str", "vec": "ndarray:float32:3"}


def good(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"n{i}", "vec": np.zeros(3, np.float32) + i}


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        (
            {"id": "7", "name": "a", "vec": np.zeros(3, np.float32)},
            r"column 'id' \(int\) of sample 2: expected",
        ),
        (
            {"id": 7, "name": "a", "vec": np.zeros(4, np.float32)},
            r"column 'vec' \(ndarray:float32:3\) of sample 2",
        ),
        ({"id": 7, "name": "a", "vec": np.zeros(3, np.int64)}, "float32"),
        ({"id": 7, "name": 12.5, "vec": np.zeros(3, np.float32)}, r"column 'name' \(str\)"),
        ({"id": 2**70, "name": "a", "vec": np.zeros(3, np.float32)}, "int64 range"),
        ({"id": 7, "vec": np.zeros(3, np.float32)}, r"sample 2 has missing columns \['name'\]"),
        ({"id": 7, "name": "a", "vec": np.zeros(3, np.float32), "extra": 1}, r"unexpected keys \['extra'\]"),
        ({"id": 7, "nam": "a", "vec": np.zeros(3, np.float32)}, r"missing columns \['name'\].*\['nam'\]"),
        ([7, "a", np.zeros(3, np.float32)], "sample 2 is a list; expected a dict"),
    ],
)
def test_bad_mds_samples(tmp_path: Path, sample: Any, message: str) -> None:
    with MDSWriter(out=tmp_path, columns=COLUMNS) as writer:
        writer.write(good(0))
        writer.write(good(1))
        with pytest.raises(EncodingError, match=message):
            writer.write(sample)
        writer.write(good(2))  # the writer carries on
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["shards"][0]["samples"] == 3


def test_codec_returning_a_wrong_size_is_caught(tmp_path: Path) -> None:
    writer = MDSWriter(out=tmp_path, columns={"a": "int", "b": "int32"})
    writer._steps[1] = ("b", lambda value: b"\x00" * 3)  # a codec that breaks its fixed size
    with pytest.raises(
        EncodingError, match=r"column 'b' \(int32\) of sample 0: encoded to 3 bytes.*exactly 4"
    ):
        writer.write({"a": 1, "b": 2})


@pytest.mark.parametrize(
    ("writer", "sample", "message"),
    [
        (
            JSONWriter,
            {"id": "x", "number": 1.5, "ratio": 0.5},
            r"column 'number' \(int\) of sample 1: expected int",
        ),
        (JSONWriter, {"id": "x", "number": 1, "ratio": 1}, "column 'ratio'.*expected float, got int"),
        (JSONWriter, {"id": "x", "number": 1}, r"missing columns \['ratio'\]"),
        (
            CSVWriter,
            {"id": "a,b", "number": 1, "ratio": 0.5},
            "column 'id' of sample 1: 'a,b' contains the separator",
        ),
        (TSVWriter, {"id": "a\tb", "number": 1, "ratio": 0.5}, "contains the separator"),
        (TSVWriter, {"id": "a\nb", "number": 1, "ratio": 0.5}, "or the newline"),
        (CSVWriter, {"id": None, "number": 1, "ratio": 0.5}, "expected str, got NoneType"),
    ],
)
def test_bad_text_samples(tmp_path: Path, writer: Any, sample: dict[str, Any], message: str) -> None:
    with writer(out=tmp_path, columns={"id": "str", "number": "int", "ratio": "float"}) as out:
        out.write({"id": "x", "number": 0, "ratio": 0.0})
        with pytest.raises(EncodingError, match=message):
            out.write(sample)


def test_text_column_names_and_separators(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="contains the separator"):
        CSVWriter(out=tmp_path, columns={"a,b": "str"})
    with pytest.raises(ValueError, match="non-empty"):
        XSVWriter(out=tmp_path, columns={"a": "str"}, separator="")


def test_real_4gib_arithmetic_without_writing_it(tmp_path: Path) -> None:
    """With the real cap, the check refuses what uint32 offsets cannot address (nothing big is written)."""
    assert shard_writer.MAX_SHARD_BYTES == 2**32 - 1
    writer = MDSWriter(out=tmp_path, columns={"blob": "bytes"}, size_limit=None)
    writer.write({"blob": b"x"})
    header = writer._shard_size  # 8 + config + (1 + 4) for the sample written
    fits = 2**32 - 1 - header - 4  # a sample of this size makes the shard exactly 2**32 - 1 bytes
    assert writer._make_room(fits) == 2**32 - 1
    with pytest.raises(
        ShardTooLargeError, match=r"sample 1 .* would make mds shard 0 4294967296 bytes.*uint32"
    ):
        writer._make_room(fits + 1)
    writer.finish()


@pytest.mark.parametrize("size_limit", [None, 10_000])
def test_shards_stay_under_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size_limit: int | None
) -> None:
    """The cap holds whatever size_limit says; the samples before the refused one are kept."""
    monkeypatch.setattr(shard_writer, "MAX_SHARD_BYTES", 3000)
    with MDSWriter(out=tmp_path, columns={"blob": "bytes"}, size_limit=size_limit) as writer:
        with pytest.raises(ShardTooLargeError, match=f"mds shard 0 .*size_limit \\(now {size_limit}\\)"):
            for _ in range(20):
                writer.write({"blob": bytes(200)})
        refused = writer._sample_number()
    shard = json.loads((tmp_path / "index.json").read_text())["shards"][0]
    assert shard["samples"] == refused
    assert shard["raw_data"]["bytes"] <= 3000 < shard["raw_data"]["bytes"] + 204
    assert (tmp_path / "shard.00000.mds").stat().st_size == shard["raw_data"]["bytes"]


def test_text_cap_counts_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shard_writer, "MAX_SHARD_BYTES", 100)
    with CSVWriter(out=tmp_path, columns={"word": "str"}, size_limit=None) as writer:
        writer.write({"word": "x" * 90})  # 91 bytes of line + 5 of header ("word\n") = 96
        with pytest.raises(ShardTooLargeError, match="csv shard 0 101 bytes"):
            writer.write({"word": "abcd"})  # 5 more
    shards = json.loads((tmp_path / "index.json").read_text())["shards"]
    assert shards[0]["raw_data"]["bytes"] == 96
