"""parquet: types mapped to MDS encodings, row-split files, overrides, unsupported types, nulls at any
depth (errors, or None in json/pkl columns)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardflow.convert import parquet
from shardflow.format import LocalDataset


def _table(start: int, count: int) -> pa.Table:
    rng = np.random.default_rng(start)
    ids = np.arange(start, start + count)
    return pa.table(
        {
            "i8": pa.array((ids % 100).astype(np.int8)),
            "u16": pa.array((ids % 60000).astype(np.uint16)),
            "i64": pa.array(ids * 1_000_000_007, pa.int64()),
            "f32": pa.array(rng.random(count).astype(np.float32)),
            "f64": pa.array(rng.random(count)),
            "flag": pa.array(ids % 3 == 0),
            "text": pa.array([f"row {k} ü" for k in ids]),
            "blob": pa.array([bytes([k % 256]) * (k % 7) for k in ids], pa.binary()),
            "tokens": pa.array([list(range(k % 5 + 1)) for k in ids], pa.list_(pa.int32())),
            "vec": pa.array([[float(k)] * 3 for k in ids], pa.list_(pa.float32(), 3)),
        }
    )


def _files(folder: Path) -> pa.Table:
    folder.mkdir()
    first, second = _table(0, 250), _table(250, 130)
    pq.write_table(first, folder / "part-0.parquet", row_group_size=60)
    pq.write_table(second, folder / "part-1.parquet", row_group_size=50)
    return pa.concat_tables([first, second])


def _expected(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _same(sample: dict, row: dict) -> bool:
    for name, value in row.items():
        got = sample[name]
        if isinstance(got, np.ndarray):
            if got.tolist() != value:
                return False
        elif name == "f32":
            if np.float32(got) != np.float32(value):
                return False
        elif got != value:
            return False
    return True


def test_round_trip_of_every_mapped_type(tmp_path: Path, reader) -> None:
    table = _files(tmp_path / "in")
    assert parquet.main([str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    samples = reader(tmp_path / "out")
    rows = _expected(table)
    assert len(samples) == len(rows) == 380
    assert all(_same(s, r) for s, r in zip(samples, rows, strict=True))
    assert samples[5]["tokens"].dtype == np.int32 and samples[5]["vec"].dtype == np.float32


def test_one_and_four_workers_give_the_same_samples(tmp_path: Path, reader) -> None:
    table = _files(tmp_path / "in")
    assert parquet.main([str(tmp_path / "in"), "--out", str(tmp_path / "one")]) == 0
    argv = [str(tmp_path / "in"), "--out", str(tmp_path / "four"), "--workers", "4", "--partitions", "9"]
    assert parquet.main(argv) == 0
    a, b = reader(tmp_path / "one"), reader(tmp_path / "four")
    rows = _expected(table)
    assert all(_same(s, r) for s, r in zip(b, rows, strict=True)) and len(a) == len(b) == 380
    assert [s["i64"] for s in a] == [s["i64"] for s in b]


def test_unsupported_type_names_column_and_type_and_columns_override(tmp_path: Path, cli, reader) -> None:
    table = pa.table({"id": pa.array([1, 2]), "meta": pa.array([{"a": 1}, {"a": 2}])})
    pq.write_table(table, tmp_path / "t.parquet")
    result = cli("parquet", tmp_path / "t.parquet", "--out", tmp_path / "out")
    assert result.returncode == 1 and "column 'meta' has type struct<a: int64>" in result.stderr
    assert not (tmp_path / "out").exists()
    result = cli(
        "parquet", tmp_path / "t.parquet", "--out", tmp_path / "out", "--columns", "meta:json,id:int32"
    )
    assert result.returncode == 0, result.stderr
    assert [(s["id"], s["meta"]) for s in reader(tmp_path / "out")] == [(1, {"a": 1}), (2, {"a": 2})]


def test_a_null_names_file_row_and_column(tmp_path: Path, cli) -> None:
    table = pa.table(
        {"id": pa.array(range(100)), "text": pa.array([None if k == 73 else "t" for k in range(100)])}
    )
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=30)
    result = cli("parquet", tmp_path / "t.parquet", "--out", tmp_path / "out", "--workers", "2")
    assert result.returncode == 1
    assert f"{tmp_path / 't.parquet'}: row 73: column 'text' is null" in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_input_is_a_clear_error(tmp_path: Path, cli) -> None:
    result = cli("parquet", tmp_path / "none", "--out", tmp_path / "out")
    assert result.returncode == 1 and f"{tmp_path / 'none'} does not exist" in result.stderr


def _nulls_table() -> pa.Table:
    """Rows 0..99; row 20 has a null inside each nested column, row 70 a null ``n``."""
    rows = range(100)
    return pa.table(
        {
            "n": pa.array([None if k == 70 else k for k in rows], pa.int64()),
            "ints": pa.array([[1, None, 3] if k == 20 else [k, 1] for k in rows], pa.list_(pa.int64())),
            "floats": pa.array(
                [[0.5, None] if k == 20 else [k / 2, np.nan] for k in rows], pa.list_(pa.float64())
            ),
            "fixed": pa.array(
                [[1.0, None] if k == 20 else [1.0, 2.0] for k in rows], pa.list_(pa.float32(), 2)
            ),
            "meta": pa.array(
                [{"a": k, "b": None if k == 20 else "x"} for k in rows],
                pa.struct([("a", pa.int64()), ("b", pa.string())]),
            ),
        }
    )


@pytest.mark.parametrize(
    ("column", "override", "where"),
    [
        ("ints", "", "row 20: column 'ints' has a null (element 1)"),
        ("floats", "", "row 20: column 'floats' has a null (element 1)"),
        ("fixed", "", "row 20: column 'fixed' has a null (element 1)"),
        ("meta", "meta:str", "row 20: column 'meta' has a null (field 'b')"),  # before str refuses a dict
        ("n", "", "row 70: column 'n' is null"),
    ],
)
def test_a_null_anywhere_names_file_row_and_column(
    tmp_path: Path, column: str, override: str, where: str, caplog
) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(_nulls_table().select([column]), path, row_group_size=30)
    argv = [str(path), "--out", str(tmp_path / "out"), "--partitions", "3"]
    with caplog.at_level(logging.ERROR):
        assert parquet.main([*argv, *(["--columns", override] if override else [])]) == 1
    assert f"parquet: {path}: {where}, and MDS has no nulls" in caplog.text
    assert not (tmp_path / "out").exists()


def test_nulls_are_stored_as_none_in_json_and_pkl_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    table = _nulls_table()
    pq.write_table(table, path, row_group_size=30)
    columns = "n:json,ints:pkl,floats:json,fixed:pkl,meta:json"
    assert parquet.main([str(path), "--out", str(tmp_path / "out"), "--columns", columns]) == 0
    dataset = LocalDataset(str(tmp_path / "out"), allow_unsafe_types=True)  # pkl columns
    samples = [dataset[i] for i in range(len(dataset))]
    assert samples[70]["n"] is None and samples[20]["ints"] == [1, None, 3]
    assert samples[20]["floats"] == [0.5, None] and samples[20]["fixed"] == [1.0, None]
    assert samples[20]["meta"] == {"a": 20, "b": None} and samples[41]["meta"] == {"a": 41, "b": "x"}


def test_nan_is_a_value_not_a_null(tmp_path: Path, reader, caplog) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(_nulls_table().select(["floats"]).slice(0, 20), path)
    with caplog.at_level(logging.INFO):
        assert parquet.main([str(path), "--out", str(tmp_path / "out")]) == 0
    samples = reader(tmp_path / "out")
    assert samples[3]["floats"][0] == 1.5 and np.isnan(samples[3]["floats"][1])
    assert f"{path}: 20 rows" in caplog.text


def test_first_null_looks_at_every_depth_of_sliced_arrays() -> None:
    from shardflow.convert._nulls import first_null

    ints = pa.array([[1], [], [2, 3], [4, None], [None]], pa.list_(pa.int64()))
    assert first_null(ints) == (3, "element 1") and first_null(ints.slice(4)) == (0, "element 0")
    assert first_null(ints.slice(0, 3)) is None
    large = pa.array([[1], [2, None]], pa.large_list(pa.int8()))
    assert first_null(large) == (1, "element 1")
    inner = pa.struct([("a", pa.list_(pa.int64()))])
    nested = pa.array([[{"a": [1]}], [{"a": [2]}, {"a": [3, None]}]], pa.list_(inner))
    assert first_null(nested) == (1, "element 1 field 'a' element 1")
    mapping = pa.array([[("k", 1)], [("k", 2), ("j", None)]], pa.map_(pa.string(), pa.int64()))
    assert first_null(mapping) == (1, "element 1 field 'value'")
    words = pa.array(["a", None, "b"]).dictionary_encode()
    assert first_null(words) == (1, "") and first_null(words.slice(2)) is None
    fixed = pa.array([[1, 2], [3, 4], [5, None]], pa.list_(pa.int32(), 2))
    assert first_null(fixed.slice(1)) == (1, "element 1") and first_null(fixed.slice(0, 2)) is None
