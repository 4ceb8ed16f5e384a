"""dataframe_to_mds: a local Spark session (loopback only) writes DataFrames as MDS datasets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from pyspark.errors import PythonException
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from shardflow.convert.errors import InputError, OutputExistsError
from shardflow.convert.spark import dataframe_to_mds, infer_columns
from shardflow.format import LocalDataset

ROWS = 100_000


def _stop_jvm(session: SparkSession) -> list[psutil.Process]:
    """Stop the session and the JVM that PySpark launched; return what ran under the JVM, to be waited."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None)
    under: list[psutil.Process] = []
    if proc is not None:
        try:
            under = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    session.stop()
    if gateway is not None:
        gateway.shutdown()
    if proc is not None:
        if proc.stdin is not None:
            proc.stdin.close()  # spark-submit's JVM exits when its stdin closes
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    SparkContext._gateway = None
    SparkContext._jvm = None
    return under


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """A local[2] Spark session bound to 127.0.0.1; its JVM and Python workers are gone afterwards."""
    scratch = tmp_path_factory.mktemp("spark")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYSPARK_PYTHON", sys.executable)  # the workers import shardflow: this interpreter
        env.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        session = (
            SparkSession.builder.master("local[2]")
            .appName("shardflow-test-spark")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.local.dir", str(scratch / "local"))
            .config("spark.sql.warehouse.dir", str(scratch / "warehouse"))
            .config("spark.sql.shuffle.partitions", "2")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            under = _stop_jvm(session)
            _, alive = psutil.wait_procs(under, timeout=30)
            for process in alive:
                process.kill()
            assert not alive, f"Spark processes outlived the session: {alive}"


def _frame(spark: SparkSession, rows: int, partitions: int) -> Any:
    """A DataFrame of ``rows`` rows in ``partitions`` partitions, columns of many types, made from the id."""
    return spark.range(0, rows, 1, partitions).selectExpr(
        "id",
        "cast(id % 256 - 128 as byte) as b8",
        "cast(id % 65536 - 32768 as short) as s16",
        "cast(id * 7 - 300000 as int) as i32",
        "cast(id / 8 as float) as f32",
        "cast(id as double) / 3 as f64",
        "id % 3 = 0 as flag",
        "concat('row-', id, '-é') as text",
        "cast(concat('bin', id) as binary) as blob",
        "sequence(0, cast(id % 5 as int)) as seq",
        "cast(id - 50000 as decimal(10, 0)) * 0.25 as dec",
    )


def _expected(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "b8": i % 256 - 128,
        "s16": i % 65536 - 32768,
        "i32": i * 7 - 300000,
        "f32": np.float32(i / 8),
        "f64": i / 3,
        "flag": i % 3 == 0,
        "text": f"row-{i}-é",
        "blob": f"bin{i}".encode(),
        "seq": np.arange(i % 5 + 1, dtype=np.int32),
        "dec": Decimal(i - 50000) * Decimal("0.25"),
    }


def _check_rows(dataset: LocalDataset, rows: int) -> None:
    assert len(dataset) == rows
    for i in range(rows):
        got, want = dataset[i], _expected(i)
        seq = got.pop("seq")
        assert seq.dtype == np.int32 and np.array_equal(seq, want.pop("seq")), i
        assert got == want, (i, got, want)


COLUMNS = {
    "id": "int64",
    "b8": "int8",
    "s16": "int16",
    "i32": "int32",
    "f32": "float32",
    "f64": "float64",
    "flag": "uint8",
    "text": "str",
    "blob": "bytes",
    "seq": "ndarray:int32",
    "dec": "str_decimal",
}


def test_many_types_in_order(spark: SparkSession, tmp_path: Path) -> None:
    out = tmp_path / "out"
    frame = _frame(spark, ROWS, 8)
    start = time.perf_counter()
    assert dataframe_to_mds(frame, str(out), size_limit="1mb") == (str(out), "")
    print(f"{ROWS} rows in 8 partitions: {time.perf_counter() - start:.1f} s")
    index = json.loads((out / "index.json").read_text())
    names = [shard["raw_data"]["basename"] for shard in index["shards"]]
    assert (
        names == sorted(names) and names[0].startswith("part.00000/") and names[-1].startswith("part.00007/")
    )
    assert len(names) > 8  # several shards per partition, in partition then shard order
    assert (
        dict(zip(index["shards"][0]["column_names"], index["shards"][0]["column_encodings"], strict=True))
        == COLUMNS
    )
    dataset = LocalDataset(str(out))
    _check_rows(dataset, ROWS)
    assert dataset[5]["s16"] == -32763 and dataset[5]["s16"].dtype == np.int16


def test_schema_inference_per_type() -> None:
    schema = T.StructType(
        [
            T.StructField("b", T.ByteType()),
            T.StructField("s", T.ShortType()),
            T.StructField("i", T.IntegerType()),
            T.StructField("l", T.LongType()),
            T.StructField("f", T.FloatType()),
            T.StructField("d", T.DoubleType()),
            T.StructField("t", T.StringType()),
            T.StructField("x", T.BinaryType()),
            T.StructField("ok", T.BooleanType()),
            T.StructField("m", T.DecimalType(38, 9)),
            T.StructField("ab", T.ArrayType(T.ByteType())),
            T.StructField("as", T.ArrayType(T.ShortType())),
            T.StructField("ai", T.ArrayType(T.IntegerType(), containsNull=False)),
            T.StructField("al", T.ArrayType(T.LongType())),
            T.StructField("af", T.ArrayType(T.FloatType())),
            T.StructField("ad", T.ArrayType(T.DoubleType())),
            T.StructField("ao", T.ArrayType(T.BooleanType())),
        ]
    )
    assert infer_columns(schema) == {
        "b": "int8", "s": "int16", "i": "int32", "l": "int64", "f": "float32", "d": "float64",
        "t": "str", "x": "bytes", "ok": "uint8", "m": "str_decimal",
        "ab": "ndarray:int8", "as": "ndarray:int16", "ai": "ndarray:int32", "al": "ndarray:int64",
        "af": "ndarray:float32", "ad": "ndarray:float64", "ao": "ndarray:uint8",
    }  # fmt: skip
    assert list(infer_columns(schema, {"s": "int", "x": "jpeg"}).items())[:8] == [
        ("b", "int8"), ("s", "int"), ("i", "int32"), ("l", "int64"), ("f", "float32"), ("d", "float64"),
        ("t", "str"), ("x", "jpeg"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("data_type", "shown"),
    [
        (T.TimestampType(), "timestamp"),
        (T.DateType(), "date"),
        (T.MapType(T.StringType(), T.IntegerType()), "map<string,int>"),
        (T.StructType([T.StructField("a", T.IntegerType())]), "struct<a:int>"),
        (T.ArrayType(T.StringType()), "array<string>"),
        (T.ArrayType(T.ArrayType(T.IntegerType())), "array<array<int>>"),
        (T.NullType(), "void"),
    ],
)
def test_unsupported_type_names_column_and_type(data_type: T.DataType, shown: str) -> None:
    schema = T.StructType([T.StructField("ok", T.LongType()), T.StructField("bad col", data_type)])
    with pytest.raises(InputError, match=rf"column 'bad col' has Spark type {shown}, which has no MDS"):
        infer_columns(schema)
    assert infer_columns(schema, {"bad col": "pkl"}) == {"ok": "int64", "bad col": "pkl"}


def test_bad_columns_argument() -> None:
    schema = T.StructType([T.StructField("a", T.LongType())])
    with pytest.raises(InputError, match=r"names \['b'\], not columns of the DataFrame: \['a'\]"):
        infer_columns(schema, {"b": "int"})
    with pytest.raises(InputError, match=r"'int65' for column 'a' is not an MDS encoding"):
        infer_columns(schema, {"a": "int65"})


def test_array_encoding_must_match_the_array_type() -> None:
    schema = T.StructType(
        [
            T.StructField("seq", T.ArrayType(T.IntegerType())),
            T.StructField("flags", T.ArrayType(T.BooleanType())),
            T.StructField("blob", T.BinaryType()),
        ]
    )
    matching = {"seq": "ndarray:int32:3", "flags": "ndarray:uint8", "blob": "bytes"}
    assert infer_columns(schema, matching) == matching
    assert infer_columns(schema, {"seq": "ndarray"})["seq"] == "ndarray"
    wrong = [
        ({"seq": "ndarray:int64"}, "array<int>, whose values are ndarray:int32, but columns names "
         r"'ndarray:int64': cast the column .* or declare 'ndarray:int32'"),
        ({"seq": "ndarray:float32:3"}, r"array<int>, .* 'ndarray:float32:3': .* declare 'ndarray:int32:3'"),
        ({"flags": "ndarray:int8"}, "array<boolean>, whose values are ndarray:uint8"),
        ({"blob": "ndarray:uint8"}, "binary, not an array of numbers, so it cannot be stored as"),
    ]  # fmt: skip
    for columns, message in wrong:
        name = next(iter(columns))
        with pytest.raises(InputError, match=rf"column '{name}' has Spark type {message}"):
            infer_columns(schema, columns)
        with pytest.raises(ValueError):  # what mosaicml-streaming raises there
            infer_columns(schema, columns, listed_only=True)


def test_mds_kwargs_columns_are_the_columns_written(spark: SparkSession, tmp_path: Path) -> None:
    frame = spark.range(0, 6, 1, 2).selectExpr(
        "id", "concat('row-', id) as text", "sequence(0, cast(id as int)) as seq", "map('k', id) as meta"
    )
    out = tmp_path / "out"
    # As in mosaicml-streaming: only the listed columns; meta (no encoding) is not written.
    dataframe_to_mds(frame, mds_kwargs={"out": str(out), "columns": {"text": "str", "id": "int64"}})
    index = json.loads((out / "index.json").read_text())  # names sorted, as MDSWriter stores them
    assert {tuple(shard["column_names"]) for shard in index["shards"]} == {("id", "text")}
    dataset = LocalDataset(str(out))
    assert [dataset[i] for i in range(6)] == [{"text": f"row-{i}", "id": i} for i in range(6)]
    # The reference raises before any job for an array declared with another dtype: no cast.
    with pytest.raises(InputError, match="column 'seq' has Spark type array<int>, whose values are"):
        dataframe_to_mds(
            frame, mds_kwargs={"out": str(tmp_path / "cast"), "columns": {"seq": "ndarray:int64"}}
        )
    assert not (tmp_path / "cast").exists()


def test_unsupported_type_fails_before_any_job(spark: SparkSession, tmp_path: Path) -> None:
    frame = spark.range(3).selectExpr("id", "current_timestamp() as seen")
    with pytest.raises(InputError, match=r"column 'seen' has Spark type timestamp"):
        dataframe_to_mds(frame, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_remote_out_is_uploaded(spark: SparkSession, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    url = f"file://{remote}"
    frame = _frame(spark, 1000, 3)
    assert dataframe_to_mds(frame, url, compression="zstd", hashes=["sha1"], size_limit=10_000) == ("", url)
    assert sorted(p.name for p in remote.iterdir()) == [
        "index.json",
        "part.00000",
        "part.00001",
        "part.00002",
    ]
    _check_rows(LocalDataset(str(remote)), 1000)


def test_local_and_remote_pair_keeps_local(spark: SparkSession, tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    frame = _frame(spark, 500, 2)
    dataframe_to_mds(frame, (str(local), f"file://{remote}"), keep_local=True)
    for root in (local, remote):
        _check_rows(LocalDataset(str(root)), 500)
    dataframe_to_mds(frame, (str(tmp_path / "gone"), f"file://{tmp_path / 'remote2'}"))
    assert not (tmp_path / "gone").exists()  # keep_local=False: nothing left locally
    _check_rows(LocalDataset(str(tmp_path / "remote2")), 500)


def test_existing_out_refused_unless_exist_ok(spark: SparkSession, tmp_path: Path) -> None:
    out = tmp_path / "out"
    frame = _frame(spark, 100, 2)
    dataframe_to_mds(frame, str(out))
    with pytest.raises(OutputExistsError, match="is not empty"):
        dataframe_to_mds(frame, str(out))
    # mosaicml-streaming's call form; exist_ok replaces the dataset
    dataframe_to_mds(frame.limit(10).repartition(1), mds_kwargs={"out": str(out), "exist_ok": True})
    assert len(LocalDataset(str(out))) == 10
    with pytest.raises(TypeError, match="out is given both as an argument and in mds_kwargs"):
        dataframe_to_mds(frame, str(out), mds_kwargs={"out": str(out)})
    with pytest.raises(TypeError, match=r"mds_kwargs\['mode'\] is not an MDSWriter argument"):
        dataframe_to_mds(frame, mds_kwargs={"out": str(out), "mode": "append"})


def test_columns_override_and_empty_partitions(spark: SparkSession, tmp_path: Path) -> None:
    frame = _frame(spark, 20, 4).where("id < 6").select("id", "s16", "seq", "text")  # 2 and 3 empty
    dataframe_to_mds(frame, str(tmp_path / "out"), columns={"s16": "int", "seq": "ndarray", "text": "json"})
    dataset = LocalDataset(str(tmp_path / "out"))
    assert len(dataset) == 6
    sample = dataset[4]
    assert sample["s16"] == -32764 and type(sample["s16"]) is int
    assert sample["seq"].dtype == np.int32 and sample["seq"].tolist() == [0, 1, 2, 3, 4]
    assert sample["text"] == "row-4-é"
    assert dataset[5]["id"] == 5


def test_empty_dataframe(spark: SparkSession, tmp_path: Path) -> None:
    dataframe_to_mds(spark.range(0, 0, 1, 2), str(tmp_path / "two"))
    assert len(LocalDataset(str(tmp_path / "two"))) == 0
    empty = spark.createDataFrame(
        spark.sparkContext.emptyRDD(), T.StructType([T.StructField("a", T.LongType())])
    )
    dataframe_to_mds(empty, str(tmp_path / "none"))
    assert len(LocalDataset(str(tmp_path / "none"))) == 0


def test_null_is_a_clear_error(spark: SparkSession, tmp_path: Path) -> None:
    frame = spark.range(0, 4, 1, 1).selectExpr("id", "if(id = 2, null, id) as n")
    with pytest.raises(
        PythonException, match=r"InputError: column 'n' is null in row 2 of Spark partition 0"
    ):
        dataframe_to_mds(frame, str(tmp_path / "out"))


def test_nulls_at_any_depth_are_errors_unless_stored_as_json_or_pkl(
    spark: SparkSession, tmp_path: Path
) -> None:
    rows = [
        (
            k,
            [1, None, 3] if k == 2 else [k],
            [0.5, None] if k == 2 else [k / 2],
            {"a": k, "b": None if k == 2 else "x"},
            None if k == 3 else k,
        )
        for k in range(5)
    ]
    schema = "id long, ints array<long>, floats array<double>, meta struct<a:long,b:string>, n long"
    frame = spark.createDataFrame(rows, schema).coalesce(1)
    cases = [
        ("ints", None, r"column 'ints' has a null \(element 1\) in row 2 of Spark partition 0"),
        ("floats", None, r"column 'floats' has a null \(element 1\) in row 2 of Spark partition 0"),
        ("meta", {"meta": "str"}, r"column 'meta' has a null \(field 'b'\) in row 2 of Spark partition 0"),
        ("n", None, r"column 'n' is null in row 3 of Spark partition 0"),
    ]
    for column, columns, message in cases:
        with pytest.raises(PythonException, match="InputError: " + message):
            dataframe_to_mds(frame.select("id", column), str(tmp_path / column), columns=columns)
    nullable = {"ints": "json", "floats": "pkl", "meta": "json", "n": "pkl"}
    dataframe_to_mds(frame, str(tmp_path / "kept"), columns=nullable)
    dataset = LocalDataset(str(tmp_path / "kept"), allow_unsafe_types=True)
    assert dataset[2] == {
        "id": 2,
        "ints": [1, None, 3],
        "floats": [0.5, None],
        "meta": {"a": 2, "b": None},
        "n": 2,
    }
    assert dataset[3]["n"] is None and dataset[3]["ints"] == [3] and dataset[4]["floats"] == [2.0]


def _doubled(frame: Any, factor: int) -> Iterator[dict[str, Any]]:
    for value in frame["id"].tolist():
        yield {"id": value, "scaled": value * factor}


def test_udf_iterable(spark: SparkSession, tmp_path: Path) -> None:
    frame = spark.range(0, 50, 1, 3)
    dataframe_to_mds(
        frame,
        mds_kwargs={"out": str(tmp_path / "out"), "columns": {"id": "int", "scaled": "int"}},
        udf_iterable=_doubled,
        udf_kwargs={"factor": 3},
    )
    dataset = LocalDataset(str(tmp_path / "out"))
    assert [dataset[i] for i in range(50)] == [{"id": i, "scaled": 3 * i} for i in range(50)]
    with pytest.raises(TypeError, match="columns must name them all"):
        dataframe_to_mds(frame, str(tmp_path / "other"), udf_iterable=_doubled)
