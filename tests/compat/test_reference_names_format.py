"""The format side of mosaicml-streaming 0.13's public names, and the builtin exceptions its users catch.

The same code runs against both libraries: :data:`COMMON` (writer cases, error cases) is executed once in
the reference venv, in a subprocess, with the reference's classes in scope, and in this process with
shardflow's. The writers must give what the reference's give for the same arguments (``get_config()`` and
the configuration attributes, ``shards`` entry for entry); each error case must raise shardflow's own
class, also an instance of the builtin (or ``json``) exception the reference raises there.
"""

from __future__ import annotations

import builtins
import importlib
import logging
import pickle
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shardflow
from shardflow.format import (
    CSVWriter,
    EncodingTypeError,
    IndexDecodeError,
    JSONWriter,
    LocalDataset,
    MDSWriter,
    TSVWriter,
    UnknownArgumentError,
    XSVWriter,
    get_compressions,
    get_hashes,
    get_mds_encodings,
    mds_encode,
)

COMMON = r'''
import copy
import os

import numpy as np

ATTRS = ("columns", "column_names", "column_encodings", "column_sizes", "compression", "hashes",
         "size_limit", "local", "remote", "keep_local", "shards", "separator", "newline")
VALUES = {"int": lambda i: i, "str": lambda i: f"s{i}" * (i % 5 + 1), "float": lambda i: i / 4,
          "ndarray:float32:3": lambda i: np.full(3, i, np.float32)}


def describe(writer):
    """get_config() and every configuration attribute the writer has."""
    found = {"config": writer.get_config(), **{n: getattr(writer, n) for n in ATTRS if hasattr(writer, n)}}
    return copy.deepcopy(found)  # the reference's attributes are its live lists


def writer_case(cls, folder, count, kwargs):
    """(description before the first sample, description after finish) of a writer of ``count`` samples."""
    writer = cls(out=folder, **kwargs)
    before = describe(writer)
    for i in range(count):
        writer.write({name: VALUES[encoding](i) for name, encoding in kwargs["columns"].items()})
    writer.finish()
    return before, describe(writer)


def error_case(code, folder):
    """The exception ``code`` raises (it sees ``folder``, an empty folder), or None."""
    os.makedirs(folder)
    try:
        exec(code, {**globals(), "folder": folder})
    except Exception as err:
        return err
    return None
'''

REFERENCE_IMPORTS = """
from streaming import CSVWriter, JSONWriter, LocalDataset, MDSWriter, TSVWriter, XSVWriter
from streaming.base.compression import get_compressions
from streaming.base.format.mds.encodings import get_mds_encodings, mds_encode
from streaming.base.hashing import get_hashes
"""

REFERENCE_MAIN = """
import pickle, sys
root = sys.argv[1]
answers = {"writers": {}, "errors": {}}
for name, (cls, count, kwargs) in CASES["writers"].items():
    answers["writers"][name] = writer_case(globals()[cls], os.path.join(root, "w", name), count, kwargs)
for name, (code, _, _) in CASES["errors"].items():
    err = error_case(code, os.path.join(root, "e", name))
    answers["errors"][name] = err and [(c.__module__, c.__qualname__) for c in type(err).__mro__]
answers["names"] = {
    "hashes": get_hashes(), "encodings": get_mds_encodings(), "compressions": get_compressions()
}
answers["get_item"] = [LocalDataset(os.path.join(root, "w", "mds defaults")).get_item(i) for i in (0, 4)]
with open(os.path.join(root, "answers.pkl"), "wb") as out:
    pickle.dump(answers, out)
"""

TEXT = {"id": "int", "name": "str", "score": "float"}

# name -> (writer class, samples, arguments)
WRITERS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "mds zstd hashes 1kb": (
        "MDSWriter",
        40,
        {"columns": {"name": "str", "id": "int", "vec": "ndarray:float32:3"}, "compression": "zstd",
         "hashes": ["sha1", "xxh64"], "size_limit": "1kb"},
    ),
    "mds defaults": ("MDSWriter", 5, {"columns": {"id": "int", "name": "str"}}),
    "mds one shard kept": (
        "MDSWriter", 5, {"columns": {"id": "int"}, "size_limit": None, "keep_local": True}
    ),
    "json bz2": ("JSONWriter", 30, {"columns": TEXT, "compression": "bz2", "size_limit": 400}),
    "json crlf": ("JSONWriter", 5, {"columns": {"name": "str"}, "newline": "\r\n", "size_limit": 0}),
    "csv md5": (
        "CSVWriter", 30, {"columns": {"name": "str", "id": "int"}, "size_limit": 300, "hashes": ["md5"]}
    ),
    "tsv crlf": ("TSVWriter", 5, {"columns": {"name": "str", "score": "float"}, "newline": "\r\n"}),
    "xsv pipes": ("XSVWriter", 20, {"columns": TEXT, "separator": "|", "size_limit": 200}),
}

_WRONG = "w = {writer}(out=folder + '/out', columns={{'x': {encoding!r}}}{extra})\nw.write({{'x': {value}}})"
_TINY = "w = MDSWriter(out=folder, columns={'x': 'int'})\nw.write({'x': 1})\nw.finish()\n"


def _wrong(writer: str, encoding: str, value: str, extra: str = "") -> str:
    return _WRONG.format(writer=writer, encoding=encoding, value=value, extra=extra)


# name -> (code, shardflow's class, a fragment of shardflow's message)
ERRORS: dict[str, tuple[str, type[BaseException], str]] = {
    **{
        f"unknown argument {writer}": (
            f"{writer}(out=folder + '/out', columns={{'x': 'str'}}{extra}, colour='blue')",
            UnknownArgumentError,
            f"{writer} got unknown argument(s) ['colour']",
        )
        for writer, extra in [("MDSWriter", ""), ("JSONWriter", ""), ("CSVWriter", ""), ("TSVWriter", ""),
                              ("XSVWriter", ", separator='|'")]
    },
    "corrupt index.json": (
        "open(folder + '/index.json', 'w').write('{\"version\": 2, \"shards\": [')\nLocalDataset(folder)",
        IndexDecodeError,
        "index.json: not valid JSON",
    ),
    "missing index.json": ("LocalDataset(folder)", FileNotFoundError, "no dataset index here"),
    "get_item out of range": (_TINY + "LocalDataset(folder).get_item(5)", IndexError, "out of range"),
    "mds str given an int": (_wrong("MDSWriter", "str", "5"), EncodingTypeError, "expected str, got int 5"),
    "mds int given a str": (_wrong("MDSWriter", "int", "'5'"), EncodingTypeError, "expected an int"),
    "mds int given a float": (_wrong("MDSWriter", "int", "1.5"), EncodingTypeError, "expected an int"),
    "mds int8 given None": (_wrong("MDSWriter", "int8", "None"), EncodingTypeError, "expected an int"),
    "mds float32 given a str": (_wrong("MDSWriter", "float32", "'x'"), EncodingTypeError, "a real number"),
    "mds bytes given a str": (_wrong("MDSWriter", "bytes", "'ab'"), EncodingTypeError, "expected bytes"),
    "mds ndarray given a list": (
        _wrong("MDSWriter", "ndarray:int32:3", "[1, 2, 3]"), EncodingTypeError, "a numpy ndarray"
    ),
    "mds str_int given a str": (_wrong("MDSWriter", "str_int", "'7'"), EncodingTypeError, "expected an int"),
    "mds json given an object": (
        _wrong("MDSWriter", "json", "object()"), EncodingTypeError, "JSON-serializable"
    ),
    "json str given an int": (_wrong("JSONWriter", "str", "5"), EncodingTypeError, "expected str, got int"),
    "json int given a str": (_wrong("JSONWriter", "int", "'5'"), EncodingTypeError, "expected int, got str"),
    "csv int given a str": (_wrong("CSVWriter", "int", "'5'"), EncodingTypeError, "expected int, got str"),
    "tsv float given a str": (_wrong("TSVWriter", "float", "'x'"), EncodingTypeError, "expected float"),
    "xsv str given an int": (
        _wrong("XSVWriter", "str", "5", ", separator='|'"), EncodingTypeError, "expected str, got int"
    ),
    "mds_encode str given an int": ("mds_encode('str', 5)", EncodingTypeError, "expected str, got int 5"),
    "mds_encode ndarray given a list": (
        "mds_encode('ndarray', [1])", EncodingTypeError, "expected a numpy ndarray"
    ),
}

def _cases_source() -> str:
    """The cases as Python source for the reference process (codes only: the classes are shardflow's)."""
    errors = {name: (code, None, None) for name, (code, _, _) in ERRORS.items()}
    return f"CASES = {{'writers': {WRITERS!r}, 'errors': {errors!r}}}\n"


@pytest.fixture(scope="module")
def reference(reference_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the reference answers to every case, from one run of its venv."""
    root = tmp_path_factory.mktemp("reference")
    script = REFERENCE_IMPORTS + COMMON + _cases_source() + REFERENCE_MAIN
    result = subprocess.run(
        [str(reference_python), "-c", script, str(root)],
        capture_output=True, text=True, timeout=300, cwd=root,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with (root / "answers.pkl").open("rb") as f:
        return pickle.load(f)


def _shardflow_namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {
        "MDSWriter": MDSWriter, "JSONWriter": JSONWriter, "CSVWriter": CSVWriter, "TSVWriter": TSVWriter,
        "XSVWriter": XSVWriter, "LocalDataset": LocalDataset, "mds_encode": mds_encode,
    }  # fmt: skip
    exec(COMMON, namespace)
    return namespace


SHARDFLOW = _shardflow_namespace()


def assert_same(got: Any, want: Any, where: str) -> None:
    """Equal, and of the same types all the way down (a tuple is not a list, a str not a Path)."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} {got!r}, the reference has {want!r}"
    if isinstance(want, dict):
        assert list(got) == list(want) or set(got) == set(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{where}: {len(got)} items, the reference has {len(want)}"
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{k}]")
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and np.array_equal(got, want), where
    else:
        assert got == want, f"{where}: {got!r}, the reference has {want!r}"


@pytest.mark.parametrize("name", list(WRITERS))
def test_writer_config_and_attributes_are_the_references(
    reference: dict[str, Any], tmp_path: Path, name: str
) -> None:
    cls, count, kwargs = WRITERS[name]
    ours = SHARDFLOW["writer_case"](SHARDFLOW[cls], str(tmp_path / name), count, kwargs)
    theirs = reference["writers"][name]
    for stage, got, want in zip(("before writing", "after finish"), ours, theirs, strict=True):
        assert set(got) == set(want), f"{stage}: attributes {sorted(got)}, the reference has {sorted(want)}"
        # local names the folder each library wrote to: the same path under another root.
        assert got.pop("local") == str(tmp_path / name) and want.pop("local").endswith(f"/{name}")
        assert_same(got, want, f"{name} {stage}")
    assert ours[1]["shards"], "the case wrote no shard"


def test_get_item_is_the_references(reference: dict[str, Any], tmp_path: Path) -> None:
    cls, count, kwargs = WRITERS["mds defaults"]
    SHARDFLOW["writer_case"](SHARDFLOW[cls], str(tmp_path / "ds"), count, kwargs)
    dataset = LocalDataset(tmp_path / "ds")
    assert_same([dataset.get_item(i) for i in (0, 4)], reference["get_item"], "get_item")
    assert dataset.get_item(np.int64(4)) == dataset[4]


def _builtin(mro: list[tuple[str, str]]) -> type[BaseException]:
    """The most derived builtin (or ``json``) class of a reference exception: what its users catch."""
    for module, name in mro:
        if module in ("builtins", "json.decoder"):
            cls = getattr(builtins if module == "builtins" else importlib.import_module(module), name)
            assert issubclass(cls, BaseException)
            return cls
    raise AssertionError(f"the reference raised none of the builtin exceptions: {mro}")


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_are_also_what_the_reference_raises(
    reference: dict[str, Any], tmp_path: Path, name: str
) -> None:
    code, ours, fragment = ERRORS[name]
    mro = reference["errors"][name]
    assert mro is not None, f"the reference raises nothing for {name!r}: not a case"
    err = SHARDFLOW["error_case"](code, str(tmp_path / "case"))
    assert isinstance(err, ours), f"{name}: shardflow raised {err!r}, expected its {ours.__name__}"
    assert fragment in str(err), f"{name}: shardflow's message changed: {err}"
    wanted = _builtin(mro)
    assert isinstance(err, wanted), f"{name}: {type(err).__name__} is no {wanted.__name__} (the reference's)"


def test_name_lists_are_the_references_sets(reference: dict[str, Any]) -> None:
    ours = {"hashes": get_hashes(), "encodings": get_mds_encodings(), "compressions": get_compressions()}
    assert_same(ours, reference["names"], "names")


# ------------------------------------------------------------------------------------- the facade

TYPED = (
    "StreamingImageFolder",
    "StreamingImageNet",
    "StreamingCIFAR10",
    "StreamingText",
    "StreamingC4",
    "StreamingCOCO",
    "StreamingADE20K",
    "StreamingEnWiki",
    "StreamingPile",
    "StreamingInsideWebVid",
    "StreamingOutsideGIWebVid",
    "StreamingOutsideDTWebVid",
)


@pytest.mark.parametrize("name", TYPED)
def test_facade_gives_the_typed_datasets(name: str) -> None:
    import shardflow.dataset

    assert name in shardflow.__all__
    assert getattr(shardflow, name) is getattr(shardflow.dataset, name)


def test_clean_stale_shared_memory_is_a_documented_no_op(caplog: pytest.LogCaptureFixture) -> None:
    from shardflow.dataset import util

    assert "clean_stale_shared_memory" in shardflow.__all__
    assert shardflow.clean_stale_shared_memory is util.clean_stale_shared_memory
    with caplog.at_level(logging.DEBUG, logger="shardflow.dataset.util"):
        assert shardflow.clean_stale_shared_memory() is None
    assert "no named shared memory" in caplog.text
    assert "no named shared memory" in (util.clean_stale_shared_memory.__doc__ or "")
