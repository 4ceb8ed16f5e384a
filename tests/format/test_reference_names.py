"""mosaicml-streaming's names on the format side, as shardflow gives them (tests/compat compares them with
the reference itself): the writers' configuration attributes, ``LocalDataset.get_item``, name sets, and
errors that are also the builtin exceptions the reference raises."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shardflow.format import (
    CSVWriter,
    EncodingError,
    EncodingTypeError,
    FormatError,
    IndexDecodeError,
    IndexFormatError,
    JSONWriter,
    LocalDataset,
    MDSWriter,
    SampleKeysError,
    TSVWriter,
    UnknownArgumentError,
    UnknownEncodingError,
    XSVWriter,
    mds_encode,
    read_index,
)

WRITERS: list[tuple[Any, dict[str, Any]]] = [
    (MDSWriter, {}),
    (JSONWriter, {}),
    (CSVWriter, {}),
    (TSVWriter, {}),
    (XSVWriter, {"separator": "|"}),
]


def write(writer: Any, count: int) -> Any:
    for i in range(count):
        writer.write({"id": i, "name": f"sample {i}"})
    return writer


@pytest.mark.parametrize(("cls", "extra"), WRITERS, ids=lambda v: getattr(v, "__name__", ""))
def test_config_is_what_every_index_entry_carries(tmp_path: Path, cls: Any, extra: dict[str, Any]) -> None:
    writer = cls(out=tmp_path, columns={"name": "str", "id": "int"}, size_limit=200, hashes=["sha1"], **extra)
    config = writer.get_config()
    config["hashes"].append("md5")  # a copy: the writer keeps its own
    assert writer.get_config()["hashes"] == writer.hashes == ["sha1"]
    write(writer, 30).finish()
    entries = read_index(tmp_path)["shards"]
    assert len(entries) > 1 and writer.shards == entries
    for entry in entries:
        assert {key: entry[key] for key in writer.get_config()} == writer.get_config()
    assert writer.columns == {"name": "str", "id": "int"}
    assert (writer.compression, writer.size_limit, writer.keep_local) == (None, 200, False)
    assert (writer.local, writer.remote) == (str(tmp_path), None)


def test_column_fields_of_each_format(tmp_path: Path) -> None:
    mds = MDSWriter(out=tmp_path / "m", columns={"b": "str", "a": "ndarray:uint8:2"}, size_limit="1kb")
    assert (mds.column_names, mds.column_encodings, mds.column_sizes) == (
        ["a", "b"], ["ndarray:uint8:2", "str"], [2, None]
    )
    assert mds.size_limit == 1024
    xsv = XSVWriter(out=tmp_path / "x", columns={"b": "str", "a": "int"}, separator="|", newline="\r\n")
    assert (xsv.column_names, xsv.column_encodings, xsv.separator, xsv.newline) == (
        ["a", "b"], ["int", "str"], "|", "\r\n"
    )
    assert (CSVWriter.separator, TSVWriter(out=tmp_path / "t", columns={"a": "str"}).separator) == (",", "\t")
    text = JSONWriter(out=tmp_path / "j", columns={"b": "str", "a": "int"}, newline="\r\n")
    assert (text.columns, text.newline, text.get_config()["columns"]) == ({"b": "str", "a": "int"}, "\r\n",
                                                                          {"b": "str", "a": "int"})
    assert not hasattr(text, "column_names")  # nor has the reference's JSONWriter
    for writer in (mds, xsv, text):
        writer.finish()


def test_configuration_is_read_only(tmp_path: Path) -> None:
    writer = MDSWriter(out=tmp_path, columns={"id": "int"})
    for name in ("size_limit", "compression", "hashes", "columns", "column_names", "shards", "local"):
        with pytest.raises(AttributeError):
            setattr(writer, name, None)
    writer.finish()


def test_shards_list_finished_shards_in_index_order(tmp_path: Path) -> None:
    with MDSWriter(out=tmp_path, columns={"id": "int", "name": "str"}, size_limit=300) as writer:
        assert writer.shards == []
        write(writer, 20)
        finished = writer.shards
        assert finished and all(entry["samples"] for entry in finished)  # the open shard is not listed
    old = writer.shards
    assert old[: len(finished)] == finished
    with MDSWriter(out=tmp_path, columns={"id": "int", "name": "str"}, size_limit=300, mode="append") as more:
        assert more.shards == old  # appending: the dataset's earlier shards first
        write(more, 20)
    assert more.shards[: len(old)] == old and more.shards == read_index(tmp_path)["shards"]


def test_remote_and_local_of_an_uploading_writer(tmp_path: Path) -> None:
    url = (tmp_path / "remote").as_uri()
    pair = MDSWriter(out=(str(tmp_path / "local"), url), columns={"id": "int"}, keep_local=True)
    assert (pair.local, pair.remote, pair.keep_local) == (str(tmp_path / "local"), url, True)
    pair.finish()
    bare = MDSWriter(out=url + "2", columns={"id": "int"})
    assert bare.remote == url + "2" and Path(bare.local).is_dir() and not bare.local.startswith(str(tmp_path))
    bare.finish()
    assert not Path(bare.local).exists()  # uploaded, and the temporary folder removed


@pytest.mark.parametrize(("cls", "extra"), WRITERS, ids=lambda v: getattr(v, "__name__", ""))
def test_unknown_argument_is_a_type_and_a_value_error(
    tmp_path: Path, cls: Any, extra: dict[str, Any]
) -> None:
    with pytest.raises(UnknownArgumentError, match=rf"{cls.__name__} got unknown argument\(s\) \['colour'\]"):
        cls(out=tmp_path / "out", columns={"x": "str"}, colour="blue", **extra)
    assert issubclass(UnknownArgumentError, TypeError) and issubclass(UnknownArgumentError, ValueError)
    assert not (tmp_path / "out").exists()  # refused before anything was created


@pytest.mark.parametrize(
    ("cls", "columns", "value"),
    [
        (MDSWriter, {"x": "str"}, 5),
        (MDSWriter, {"x": "ndarray:int32:3"}, [1, 2, 3]),
        (MDSWriter, {"x": "json"}, object()),
        (JSONWriter, {"x": "int"}, "5"),
        (CSVWriter, {"x": "float"}, "x"),
    ],
)
def test_a_wrong_type_is_also_an_attribute_error(tmp_path: Path, cls: Any, columns: dict, value: Any) -> None:
    with cls(out=tmp_path, columns=columns) as writer, pytest.raises(AttributeError) as caught:
        writer.write({"x": value})
    err = caught.value
    assert all(isinstance(err, cls) for cls in (EncodingTypeError, EncodingError, TypeError))
    assert str(err).startswith("column 'x' (") and "of sample 0: expected" in str(err)


def test_a_wrong_value_of_the_right_type_is_not() -> None:
    with pytest.raises(EncodingError) as caught:
        mds_encode("ndarray:int32:3", np.zeros(2, np.int32))
    assert not isinstance(caught.value, (AttributeError, TypeError))
    with pytest.raises(EncodingTypeError, match="expected str, got int 5"):
        mds_encode("str", 5)


def test_corrupt_index_is_also_a_json_decode_error(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text('{"version": 2,\n "shards": [}')
    for read in (read_index, LocalDataset):
        with pytest.raises(json.JSONDecodeError) as caught:
            read(tmp_path)
        err = caught.value
        assert isinstance(err, IndexDecodeError) and isinstance(err, IndexFormatError)
        assert str(err).startswith(f"{tmp_path / 'index.json'}: not valid JSON (Expecting value at line 2")
        assert "restore index.json from a good copy" in str(err)
        assert (err.msg, err.lineno, err.colno) == ("Expecting value", 2, 13)  # the parser's fields
        assert err.doc.startswith('{"version"') and err.pos == err.doc.index("}")


def test_index_decode_error_pickles_and_takes_a_message_alone() -> None:
    err = IndexDecodeError("data/index.json: not valid JSON", '{"a": }', 6, "Expecting value")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is IndexDecodeError and str(copy) == str(err) == "data/index.json: not valid JSON"
    assert (copy.msg, copy.doc, copy.pos, copy.colno) == ("Expecting value", '{"a": }', 6, 7)
    alone = IndexDecodeError("only a message")  # as torch re-raises a worker's error: one argument
    assert str(alone) == "only a message" and isinstance(alone, FormatError)


def test_a_valid_json_index_that_breaks_a_rule_is_not_a_decode_error(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text('{"version": 3, "shards": []}')
    with pytest.raises(IndexFormatError, match="version 3") as caught:
        read_index(tmp_path)
    assert not isinstance(caught.value, json.JSONDecodeError)


def test_get_item(tmp_path: Path) -> None:
    write(MDSWriter(out=tmp_path, columns={"id": "int", "name": "str"}, size_limit=100), 10).finish()
    dataset = LocalDataset(tmp_path)
    assert [dataset.get_item(i) for i in range(10)] == [dataset[i] for i in range(10)]
    assert dataset.get_item(np.int32(3)) == {"id": 3, "name": "sample 3"}
    assert dataset.get_item(-1) == dataset[9]
    with pytest.raises(IndexError, match="out of range"):
        dataset.get_item(10)
    with pytest.raises(TypeError):
        dataset.get_item(1.0)  # type: ignore[arg-type]


def test_an_unknown_column_encoding_is_also_a_type_error(tmp_path: Path) -> None:
    """mosaicml-streaming raises TypeError for a column encoding it does not know."""
    with pytest.raises(UnknownEncodingError) as caught:
        MDSWriter(out=str(tmp_path / "ds"), columns={"x": "int33"})
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)
    assert "'x'" in str(caught.value) and not (tmp_path / "ds").exists()


def test_a_sample_without_a_column_is_also_a_key_error(tmp_path: Path) -> None:
    """mosaicml-streaming raises KeyError for a sample that lacks a column; the message stays unquoted."""
    with MDSWriter(out=str(tmp_path / "ds"), columns={"x": "int", "y": "str"}) as writer:
        with pytest.raises(KeyError) as caught:
            writer.write({"x": 1})
        writer.write({"x": 1, "y": "kept"})
    assert isinstance(caught.value, SampleKeysError) and isinstance(caught.value, EncodingError)
    assert str(caught.value).startswith("sample 0 has missing columns ['y']")
