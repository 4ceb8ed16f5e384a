"""parquet: types mapped to MDS encodings, row-split files, overrides, unsupported types and nulls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shardflow.convert import parquet


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
