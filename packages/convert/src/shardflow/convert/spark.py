"""dataframe_to_mds: write a PySpark DataFrame as one MDS dataset, one writer per partition.

Each Spark partition is written by its own :class:`~shardflow.format.MDSWriter` into
``out/part.NNNNN/`` (its partition id, zero-padded; its own ``index.json``), inside a ``mapInArrow``
task; the driver then merges the partitions' indexes into ``out/index.json`` with
:func:`~shardflow.format.merge_index`. The dataset's samples are the DataFrame's rows in partition order,
then row order within each partition.

pyspark, pyarrow and pandas come with the ``spark`` extra (``pip install 'shardflow-convert[spark]'``)
and are imported on first use: importing this module does not import them.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from shardflow.convert._nulls import NULLABLE, first_null, null_message
from shardflow.convert.errors import InputError, MissingDependencyError, OutputExistsError
from shardflow.format import MDSWriter, is_mds_encoding
from shardflow.format import merge_index as merge_indexes
from shardflow.format.upload import Out, remote_uploader, split_out

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType, StructType

__all__ = ["dataframe_to_mds", "infer_columns", "partition_name"]

logger = logging.getLogger(__name__)

_INDEX = "index.json"

# Spark number type name (DataType.typeName()) -> numpy dtype of its values.
_NUMBER_DTYPES = {
    "byte": "int8",
    "short": "int16",
    "integer": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
}

# Writer arguments that have a parameter of their own, with the parameter's default.
_OWN_ARGS: dict[str, Any] = {
    "out": None,
    "columns": None,
    "compression": None,
    "hashes": None,
    "size_limit": 1 << 26,
    "keep_local": False,
}
# Other MDSWriter arguments that mds_kwargs may hold.
_PASSED_ARGS = {"progress_bar", "max_workers", "retry", "exist_ok"}


def _require(module: str, package: str) -> ModuleType:
    """Import ``module`` or raise naming the ``spark`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"dataframe_to_mds needs {package}, which is missing: pip install 'shardflow-convert[spark]'"
        ) from exc


def partition_name(partition: int) -> str:
    """The folder of Spark partition ``partition`` under ``out``: ``part.00007`` (at least 5 digits).

    The zero padding makes the folders sort in partition order, so ``merge_index(out)`` run later gives
    the same order as :func:`dataframe_to_mds`.
    """
    return f"part.{partition:05d}"


def _encoding_of(data_type: DataType) -> str | None:
    """The MDS encoding of values of the Spark type ``data_type``, or ``None`` when there is none."""
    name = data_type.typeName()
    if name in _NUMBER_DTYPES:
        return _NUMBER_DTYPES[name]
    if name == "boolean":
        return "uint8"
    if name == "string":
        return "str"
    if name == "binary":
        return "bytes"
    if name == "decimal":
        return "str_decimal"
    if name == "array":
        element = data_type.elementType.typeName()  # type: ignore[attr-defined]
        if element in _NUMBER_DTYPES:
            return f"ndarray:{_NUMBER_DTYPES[element]}"
        if element == "boolean":
            return "ndarray:uint8"
    return None


def _check_array_encoding(name: str, data_type: DataType, encoding: str) -> None:
    """Refuse an ``ndarray`` encoding that does not match column ``name``'s Spark type: no silent cast."""
    parts = encoding.split(":")
    if parts[0] != "ndarray":
        return
    inferred = _encoding_of(data_type)
    if inferred is None or not inferred.startswith("ndarray:"):
        raise InputError(
            f"column {name!r} has Spark type {data_type.simpleString()}, not an array of numbers, so it "
            f"cannot be stored as {encoding!r}: convert it to an array first, or choose another encoding"
        )
    dtype = inferred.split(":")[1]
    if len(parts) > 1 and parts[1] != dtype:
        raise InputError(
            f"column {name!r} has Spark type {data_type.simpleString()}, whose values are "
            f"ndarray:{dtype}, but columns names {encoding!r}: cast the column "
            f"(dataframe.withColumn({name!r}, dataframe[{name!r}].cast('array<...>'))) or declare "
            f"{':'.join(['ndarray', dtype, *parts[2:]])!r}"
        )


def infer_columns(
    schema: DataFrame | StructType,
    columns: Mapping[str, str] | None = None,
    *,
    listed_only: bool = False,
) -> dict[str, str]:
    """The MDS column encodings of a DataFrame (or its schema), every column in schema order.

    ``ByteType`` -> ``int8``, ``ShortType`` -> ``int16``, ``IntegerType`` -> ``int32``, ``LongType`` ->
    ``int64``, ``FloatType`` -> ``float32``, ``DoubleType`` -> ``float64``, ``BooleanType`` -> ``uint8``
    (0 or 1), ``StringType`` -> ``str``, ``BinaryType`` -> ``bytes``, ``DecimalType`` -> ``str_decimal``,
    ``ArrayType`` of one of those numbers (or booleans) -> ``ndarray:<dtype>`` (any length but 0).

    Args:
        schema: A DataFrame or a ``StructType``.
        columns: Encodings that replace the inferred ones, for some or all columns; they also name an
            encoding for a column whose type has none (e.g. ``{'meta': 'json'}`` for a map). An
            ``ndarray`` encoding must match the column's array type (``ndarray:int64`` for
            ``array<bigint>``): arrays are not cast.
        listed_only: Only the columns in ``columns`` (mosaicml-streaming's
            ``mds_kwargs['columns']``); the other columns are not written.

    Returns:
        Column name to MDS encoding.

    Raises:
        InputError: ``columns`` names a column that does not exist or an unknown encoding, an
            ``ndarray`` encoding does not match the column's array type, or a column written but not in
            ``columns`` has a type with no MDS encoding (the message names both).
    """
    struct: StructType = schema.schema if hasattr(schema, "schema") else schema  # a DataFrame's, or itself
    fields = {field.name: field.dataType for field in struct.fields}
    overrides = dict(columns or {})
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise InputError(
            f"columns={overrides!r} names {unknown}, not columns of the DataFrame: {list(fields)}"
        )
    for name, encoding in overrides.items():
        if not isinstance(encoding, str) or not is_mds_encoding(encoding):
            raise InputError(
                f"columns: {encoding!r} for column {name!r} is not an MDS encoding "
                "(see shardflow.format.get_mds_encodings())"
            )
        _check_array_encoding(name, fields[name], encoding)
    if listed_only:
        return overrides
    encodings: dict[str, str] = {}
    for name, data_type in fields.items():
        chosen = overrides.get(name) or _encoding_of(data_type)
        if chosen is None:
            raise InputError(
                f"column {name!r} has Spark type {data_type.simpleString()}, which has no MDS encoding: "
                f"cast it (e.g. dataframe.withColumn({name!r}, dataframe[{name!r}].cast('string'))), "
                f"drop it, or name an encoding with columns={{{name!r}: 'json'}} (or 'pkl', ...)"
            )
        encodings[name] = chosen
    return encodings


def _writer_args(
    own: dict[str, Any], mds_kwargs: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge the keyword arguments with ``mds_kwargs``: (own arguments, other MDSWriter arguments)."""
    args = dict(own)
    passed: dict[str, Any] = {}
    for key, value in (mds_kwargs or {}).items():
        if key in _OWN_ARGS:
            if own[key] != _OWN_ARGS[key]:
                raise TypeError(f"dataframe_to_mds: {key} is given both as an argument and in mds_kwargs")
            args[key] = value
        elif key in _PASSED_ARGS:
            passed[key] = value
        else:
            raise TypeError(
                f"dataframe_to_mds: mds_kwargs[{key!r}] is not an MDSWriter argument it takes; "
                f"expected {sorted(_OWN_ARGS) + sorted(_PASSED_ARGS)}"
            )
    return args, passed


def _check_out(local: str | None, remote: str | None, exist_ok: bool) -> None:
    """Refuse an ``out`` that already holds files (locally) or a dataset (remotely), unless ``exist_ok``."""
    if exist_ok:
        return
    if local is not None and os.path.isdir(local) and any(os.scandir(local)):
        raise OutputExistsError(
            f"out {local} is not empty: choose another folder, or pass mds_kwargs={{'exist_ok': True}} "
            "to replace the dataset there"
        )
    if remote is not None:
        lister = remote_uploader(remote)
        try:
            found = _INDEX in lister.list_objects(_INDEX)
        finally:
            lister.finish()
        if found:
            raise OutputExistsError(
                f"out {remote} already holds a dataset ({_INDEX}): choose another location, or pass "
                "mds_kwargs={'exist_ok': True} to replace it"
            )


def _column_values(array: Any, encoding: str, dtype: Any) -> list[Any]:
    """The values of one Arrow column as the writer takes them for ``encoding``."""
    pa = importlib.import_module("pyarrow")
    kind = array.type
    if encoding in NULLABLE:
        return list(array.to_pylist())  # nulls as None, at any depth
    if encoding.startswith("ndarray") and (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        values = array.values.to_numpy(zero_copy_only=False)
        if dtype is not None and values.dtype != dtype:  # only booleans -> uint8: infer_columns checked
            values = values.astype(dtype)
        offsets = array.offsets.to_numpy().tolist()
        return [values[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True)]
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return list(array.to_numpy(zero_copy_only=False).tolist())
    return list(array.to_pylist())


def _batch_samples(
    batch: Any, encodings: Mapping[str, str], first_row: int, partition: int
) -> Iterator[dict]:
    """The samples of one Arrow record batch, each a dict of column name to value."""
    np = importlib.import_module("numpy")
    names = list(encodings)
    lists = []
    for name in names:
        array = batch.column(batch.schema.get_field_index(name))
        encoding = encodings[name]
        found = None if encoding in NULLABLE else first_null(array)
        if found is not None:
            raise InputError(
                f"{null_message(name, found[1])} in row {first_row + found[0]} of Spark partition "
                f"{partition}, and MDS cannot store nulls: fill them (dataframe.fillna / coalesce) or drop "
                f"those rows first, or store the column as json or pkl (columns={{{name!r}: 'json'}})"
            )
        parts = encoding.split(":")
        dtype = np.dtype(parts[1]) if parts[0] == "ndarray" and len(parts) > 1 else None
        lists.append(_column_values(array, encoding, dtype))
    for row in zip(*lists, strict=True):
        yield dict(zip(names, row, strict=True))


def _partition_out(local: str | None, remote: str | None, partition: int) -> Out:
    """The ``out`` of one partition's writer."""
    name = partition_name(partition)
    if remote is None:
        assert local is not None
        return os.path.join(local, name)
    url = f"{remote.rstrip('/')}/{name}"
    return url if local is None else (os.path.join(local, name), url)


def _write_partition(
    batches: Iterable[Any],
    *,
    local: str | None,
    remote: str | None,
    encodings: dict[str, str],
    writer_args: dict[str, Any],
    udf_iterable: Callable[..., Iterable[Mapping[str, Any]]] | None,
    udf_kwargs: dict[str, Any],
) -> Iterator[Any]:
    """The ``mapInArrow`` task: write this partition's rows; yield one batch (partition, samples)."""
    pa = importlib.import_module("pyarrow")
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        raise RuntimeError("dataframe_to_mds: no Spark TaskContext; this function runs inside a Spark task")
    partition = context.partitionId()
    out = _partition_out(local, remote, partition)
    count = 0
    # exist_ok: a retried task replaces what a failed attempt left; the driver checked out was empty.
    with MDSWriter(out=out, columns=encodings, exist_ok=True, **writer_args) as writer:
        for batch in batches:
            if udf_iterable is not None:
                samples: Iterable[Mapping[str, Any]] = udf_iterable(batch.to_pandas(), **udf_kwargs)
            else:
                samples = _batch_samples(batch, encodings, count, partition)
            for sample in samples:
                writer.write(sample)  # type: ignore[arg-type]
                count += 1
    logger.info("dataframe_to_mds: partition %d: %d samples written to %s", partition, count, out)
    yield pa.RecordBatch.from_arrays(
        [pa.array([partition], pa.int32()), pa.array([count], pa.int64())], names=["partition", "samples"]
    )


def _index_urls(local: str | None, remote: str | None, partitions: Sequence[int]) -> list[Any]:
    """The partitions' ``index.json`` files for merge_index, in partition order."""
    urls: list[Any] = []
    for partition in partitions:
        out = _partition_out(local, remote, partition)
        if isinstance(out, tuple):
            urls.append((os.path.join(out[0], _INDEX), f"{out[1]}/{_INDEX}"))
        elif remote is not None:
            urls.append(f"{out}/{_INDEX}")
        else:
            urls.append(os.path.join(out, _INDEX))
    return urls


def _remove_empty_folders(local: str, partitions: Sequence[int]) -> None:
    """Remove the partition folders left empty under ``local`` after upload, then ``local`` if empty."""
    for partition in partitions:
        try:
            os.rmdir(os.path.join(local, partition_name(partition)))
        except OSError:
            pass
    try:
        os.rmdir(local)
    except OSError:
        pass


def dataframe_to_mds(
    dataframe: DataFrame,
    out: Out | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    compression: str | None = None,
    hashes: Sequence[str] | None = None,
    size_limit: int | str | None = 1 << 26,
    keep_local: bool = False,
    merge_index: bool = True,
    mds_kwargs: Mapping[str, Any] | None = None,
    udf_iterable: Callable[..., Iterable[Mapping[str, Any]]] | None = None,
    udf_kwargs: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """Write a PySpark DataFrame as an MDS dataset: one writer per partition, then one merged index.

    Partition ``k`` is written to ``out/part.<k, 5 digits>/`` by a ``mapInArrow`` task; then
    ``out/index.json`` lists every partition's shards, so the dataset's samples are the rows in partition
    order, then row order. Column encodings are inferred from the schema (see :func:`infer_columns`).

    Args:
        dataframe: The DataFrame. No value may hold a null anywhere (MDS has no null), unless its column
            is stored as ``json`` or ``pkl`` (``None``); no array may be empty.
        out: A local folder (shared by every executor, e.g. a mounted volume), a remote URL (each task
            writes through a local temporary folder and uploads), or a ``(local, remote)`` pair.
        columns: Encodings replacing the inferred ones for some or all columns (every other column is
            still written with its inferred encoding; select columns first to write fewer). An
            ``ndarray`` encoding must match the column's array type (no cast).
        compression: Shard compression, e.g. ``'zstd'``; ``None`` (the default) for none.
        hashes: Hash algorithms recorded in the index for every file.
        size_limit: Shard size limit in bytes (or ``'64mb'``).
        keep_local: With a remote ``out``, keep the local copies of the files.
        merge_index: Write ``out/index.json`` over the partitions (else each partition stays a dataset
            of its own).
        mds_kwargs: MDSWriter arguments as mosaicml-streaming's ``dataframe_to_mds`` takes them: ``out``,
            ``columns`` (here, as in the reference, exactly the columns written), ``compression``,
            ``hashes``, ``size_limit``, ``keep_local`` (each given here or as an argument, not both), and
            ``progress_bar``, ``max_workers``, ``retry``, ``exist_ok`` (``True``: write into a non-empty
            ``out``, replacing the dataset there).
        udf_iterable: Turns the rows into samples: called as ``udf_iterable(pandas_frame, **udf_kwargs)``
            for each Arrow batch of a partition, it returns an iterable of sample dicts that match
            ``columns``, which is then required and complete (no inference).
        udf_kwargs: Keyword arguments for ``udf_iterable``.

    Returns:
        ``(local, remote)``: the local folder and the remote URL of the dataset, ``''`` for the part that
        ``out`` does not have.

    Raises:
        InputError: A column type has no MDS encoding, ``columns`` is wrong (an unknown column or
            encoding, an ``ndarray`` encoding that does not match the array type), or (from the Spark job) a
            value holds a null (itself, an array element, a struct field) in a column not stored as
            ``json`` or ``pkl``.
        OutputExistsError: ``out`` is not empty and ``exist_ok`` was not given.
        MissingDependencyError: pyspark or pyarrow is missing.
        TypeError: An argument is given twice, or unknown.
    """
    _require("pyspark.sql", "pyspark")
    _require("pyarrow", "pyarrow")
    own = {
        "out": out,
        "columns": columns,
        "compression": compression,
        "hashes": hashes,
        "size_limit": size_limit,
        "keep_local": keep_local,
    }
    args, passed = _writer_args(own, mds_kwargs)
    if not args["out"] or isinstance(args["out"], bool):
        raise TypeError(f"dataframe_to_mds: out={args['out']!r}: give a local folder, a URL or (local, url)")
    local, remote = split_out(args["out"])
    exist_ok = bool(passed.pop("exist_ok", False))
    if udf_iterable is not None:
        if not args["columns"]:
            raise TypeError("dataframe_to_mds: udf_iterable makes the samples, so columns must name them all")
        encodings = dict(args["columns"])
    else:
        listed_only = (mds_kwargs or {}).get("columns") is not None  # the reference's call form
        encodings = infer_columns(dataframe, args["columns"], listed_only=listed_only)
    logger.info("dataframe_to_mds: columns %s", encodings)
    _check_out(local, remote, exist_ok)

    writer_args = {
        "compression": args["compression"],
        "hashes": list(args["hashes"]) if args["hashes"] else None,
        "size_limit": args["size_limit"],
        "keep_local": bool(args["keep_local"]),
        **passed,
    }
    task = functools.partial(
        _write_partition,
        local=local,
        remote=remote,
        encodings=encodings,
        writer_args=writer_args,
        udf_iterable=udf_iterable,
        udf_kwargs=dict(udf_kwargs or {}),
    )
    rows = dataframe.mapInArrow(task, "partition int, samples long").collect()
    written = sorted((int(row["partition"]), int(row["samples"])) for row in rows)
    partitions = [partition for partition, _ in written]
    total = sum(samples for _, samples in written)
    logger.info("dataframe_to_mds: %d samples in %d partitions", total, len(partitions))
    if merge_index and not partitions:  # a DataFrame of no partitions: an empty dataset all the same
        with MDSWriter(out=args["out"], columns=encodings, exist_ok=True, **writer_args):
            pass
    elif merge_index:
        merge_indexes(
            _index_urls(local, remote, partitions), args["out"], keep_local=bool(args["keep_local"])
        )
    if local is not None and remote is not None and not args["keep_local"]:
        _remove_empty_folders(local, partitions)
    return (str(Path(local)) if local is not None else "", remote or "")
