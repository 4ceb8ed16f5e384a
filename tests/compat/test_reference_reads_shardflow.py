"""Datasets written by shardflow are read back correctly by mosaicml-streaming's own reader.

The reference runs in its own venv (see conftest.py); it reads every sample through its
``StreamingDataset`` and pickles them to a file that this test compares with what was written.
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shardflow.format import CSVWriter, JSONWriter, MDSWriter, TSVWriter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reference"  # values.py
sys.path.insert(0, str(FIXTURES))
import values  # noqa: E402

READ_ALL = """
import pickle, sys
from streaming import StreamingDataset
local, out, unsafe = sys.argv[1], sys.argv[2], sys.argv[3] == '1'
dataset = StreamingDataset(local=local, shuffle=False, batch_size=1, allow_unsafe_types=unsafe)
samples = [dataset[i] for i in range(dataset.num_samples)]
with open(out, 'wb') as f:
    pickle.dump(samples, f)
"""

# pkl is covered by its own case; the rest are every encoding (jpeg columns are lossy).
ALL_COLUMNS = dict(values.ALL_COLUMNS)
NUMPY_SCALARS = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64"}


def read_with_reference(reference_python: Path, local: Path, tmp_path: Path, unsafe: bool = False) -> list:
    out = tmp_path / "samples.pkl"
    result = subprocess.run(
        [str(reference_python), "-c", READ_ALL, str(local), str(out), "1" if unsafe else "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with out.open("rb") as f:
        return pickle.load(f)


def assert_same(key: str, got: object, expected: object) -> None:
    if isinstance(expected, bytes) and key == "jpeg_array":  # stored JPEG bytes decode to that image
        decoded = Image.open(io.BytesIO(expected))
        assert got.size == decoded.size and got.tobytes() == decoded.tobytes(), key
    elif isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == expected.dtype, key
        assert np.array_equal(got, expected), key
    elif hasattr(expected, "tobytes") and hasattr(expected, "mode"):  # a PIL image
        assert got.mode == expected.mode and got.size == expected.size, key
        if not key.startswith(("jpeg", "list_jpeg")):
            assert got.tobytes() == expected.tobytes(), key
    elif isinstance(expected, list):
        assert len(got) == len(expected), key
        for g, e in zip(got, expected, strict=True):
            assert_same(key, g, e)
    elif ALL_COLUMNS.get(key) in NUMPY_SCALARS:  # fixed-width numbers decode to numpy scalars of that type
        assert isinstance(got, np.generic) and got.dtype.name == ALL_COLUMNS[key], (key, got)
        assert got == expected, (key, got, expected)
    else:
        assert got == expected and type(got) is type(expected), (key, got, expected)


@pytest.mark.parametrize("compression", [None, "zstd", "gz:5", "bz2", "br:4", "snappy"])
def test_reference_reads_every_encoding(
    reference_python: Path, tmp_path: Path, compression: str | None
) -> None:
    local = tmp_path / "ds"
    count = 30
    with MDSWriter(out=str(local), columns=ALL_COLUMNS, compression=compression, hashes=["sha1", "xxh64"],
                   size_limit=1 << 14) as writer:
        for i in range(count):
            writer.write(values.all_sample(i))
    samples = read_with_reference(reference_python, local, tmp_path)
    assert len(samples) == count
    for i, sample in enumerate(samples):
        expected = values.all_sample(i)
        assert set(sample) == set(expected)
        for key in expected:
            assert_same(key, sample[key], expected[key])


@pytest.mark.parametrize("compression", ["zstd", "br:4", "gz:0"])
def test_reference_reads_streamed_large_shards(
    reference_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    """Shards above the one-shot size are compressed in segments (zstd: a frame each); the reference reads
    them. The sizes are shrunk so that small shards take that path."""
    monkeypatch.setattr("shardflow.format.compression.ONE_SHOT_MAX_BYTES", 8192)
    monkeypatch.setattr("shardflow.format.compression._Zstandard.chunk", 4096)
    local = tmp_path / "ds"
    with MDSWriter(out=str(local), columns={"n": "int", "text": "str"}, compression=compression,
                   size_limit=1 << 15) as writer:
        for i in range(3000):
            writer.write({"n": i, "text": f"sample {i} " * (i % 7)})
    samples = read_with_reference(reference_python, local, tmp_path)
    assert [(s["n"], s["text"]) for s in samples] == [(i, f"sample {i} " * (i % 7)) for i in range(3000)]


def test_reference_reads_pickle_columns_and_appended_shards(reference_python: Path, tmp_path: Path) -> None:
    local = tmp_path / "ds"
    columns = {"obj": "pkl", "n": "int"}
    with MDSWriter(out=str(local), columns=columns, size_limit=256) as writer:
        for i in range(20):
            writer.write({"obj": {"i": i, "set": {i, i + 1}}, "n": i})
    with MDSWriter(out=str(local), columns=columns, size_limit=256, mode="append") as writer:
        for i in range(20, 35):
            writer.write({"obj": {"i": i, "set": {i, i + 1}}, "n": i})
    samples = read_with_reference(reference_python, local, tmp_path, unsafe=True)
    assert [s["n"] for s in samples] == list(range(35))
    assert [s["obj"] for s in samples] == [{"i": i, "set": {i, i + 1}} for i in range(35)]


@pytest.mark.parametrize("writer_class", [JSONWriter, CSVWriter, TSVWriter])
@pytest.mark.parametrize("compression", [None, "zstd"])
def test_reference_reads_text_shards(reference_python: Path, tmp_path: Path, writer_class: type,
                                     compression: str | None) -> None:
    local = tmp_path / "ds"
    columns = {"id": "str", "number": "int", "ratio": "float"}
    with writer_class(out=str(local), columns=columns, compression=compression, size_limit=1 << 11) as writer:
        for i in range(150):
            writer.write(values.xsv_sample(i))
    samples = read_with_reference(reference_python, local, tmp_path)
    assert [dict(s) for s in samples] == [values.xsv_sample(i) for i in range(150)]
