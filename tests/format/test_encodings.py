"""MDS encodings: reference data decodes and re-encodes byte for byte, values round-trip, bad values fail."""

from __future__ import annotations

import json
import pickle
import struct
import sys
from collections.abc import Iterator
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from shardflow.format.encodings import (
    get_codec,
    get_mds_encoded_size,
    get_mds_encodings,
    is_mds_encoding,
    is_mds_encoding_safe,
    mds_decode,
    mds_encode,
)
from shardflow.format.errors import EncodingError, MissingDependencyError, UnknownNameError

ALL_NAMES = {
    "bytes", "str", "int", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "str_int", "str_float", "str_decimal", "ndarray", "pil", "jpeg", "png",
    "list[pil]", "list[jpeg]", "list[png]", "jpeg_array", "jpegarray", "json", "pkl",
}  # fmt: skip
INTEGERS = [f"{kind}{bits}" for kind in ("int", "uint") for bits in (8, 16, 32, 64)]
SCALARS = [*INTEGERS, "float16", "float32", "float64"]
ARRAY_DTYPES = SCALARS
IMAGE_ENCODINGS = {"pil", "jpeg", "png", "list[pil]", "list[jpeg]", "list[png]", "jpeg_array", "jpegarray"}
JPEG_COLUMNS = {"jpeg", "list_jpeg"}  # lossy: re-encoding depends on the libjpeg build

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mds_samples(folder: Path) -> Iterator[tuple[dict[str, str], dict[str, memoryview]]]:
    """Yield ``(encodings, payloads)`` per sample of an MDS dataset, parsing the shard files directly.

    Shard layout: ``u32 count``, ``u32 offsets[count + 1]`` (absolute), then per sample the ``u32`` sizes of
    its variable-size columns followed by every column's payload, columns in index order.
    """
    index = json.loads((folder / "index.json").read_text())
    for shard in index["shards"]:
        data = memoryview((folder / shard["raw_data"]["basename"]).read_bytes())
        (count,) = struct.unpack_from("<I", data)
        offsets = struct.unpack_from(f"<{count + 1}I", data, 4)
        names, encodings, sizes = shard["column_names"], shard["column_encodings"], shard["column_sizes"]
        num_variable = sizes.count(None)
        for begin, end in zip(offsets, offsets[1:], strict=False):
            variable = iter(struct.unpack_from(f"<{num_variable}I", data, begin))
            position = begin + 4 * num_variable
            payloads = {}
            for name, size in zip(names, sizes, strict=True):
                size = next(variable) if size is None else size
                payloads[name] = data[position : position + size]
                position += size
            assert position == end, f"{folder}: sample payloads do not fill the sample"
            yield dict(zip(names, encodings, strict=True)), payloads


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def assert_same_image(actual: Any, expected: Image.Image) -> None:
    assert isinstance(actual, Image.Image)
    assert (actual.mode, actual.size) == (expected.mode, expected.size)
    assert actual.tobytes() == expected.tobytes()


def assert_decoded(name: str, encoding: str, actual: Any, expected: Any, stored: bytes) -> None:
    """Compare one decoded fixture value with the value that values.py computes."""
    if encoding in SCALARS:
        assert type(actual) is np.dtype(encoding).type
        assert actual == np.dtype(encoding).type(expected)
    elif encoding.startswith("ndarray"):
        assert isinstance(actual, np.ndarray)
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape)
        assert np.array_equal(actual, expected)
    elif encoding in ("pil", "png"):
        assert_same_image(actual, expected)
    elif encoding in ("list[pil]", "list[png]"):
        assert len(actual) == len(expected)
        for got, want in zip(actual, expected, strict=True):
            assert_same_image(got, want)
    elif encoding == "jpeg":
        assert_jpeg_like(actual, expected, stored)
    elif encoding == "list[jpeg]":
        (count,) = struct.unpack_from("<I", stored, 4)
        sizes = struct.unpack_from(f"<{count}I", stored, 8)
        assert len(actual) == len(expected) == count
        start = 8 + 4 * count
        for got, want, size in zip(actual, expected, sizes, strict=True):
            assert_jpeg_like(got, want, stored[start : start + size])
            start += size
    elif encoding == "jpeg_array":  # expected: the JPEG files; decoded: the images
        assert len(actual) == len(expected)
        for got, jpeg in zip(actual, expected, strict=True):
            assert_same_image(got, Image.open(BytesIO(jpeg)))
    else:
        assert type(actual) is type(expected)
        assert actual == expected, name


def assert_jpeg_like(actual: Any, source: Image.Image, stored: bytes) -> None:
    """JPEG is lossy: the source's size and mode, Pillow's pixels for the stored file, close to the source."""
    assert isinstance(actual, Image.Image)
    assert (actual.mode, actual.size) == (source.mode, source.size)
    assert actual.tobytes() == Image.open(BytesIO(stored)).tobytes()
    difference = np.abs(pixels(actual).astype(int) - pixels(source).astype(int))
    assert difference.mean() < 40


# ---------------------------------------------------------------------------------------------- names


def test_encoding_names_are_the_reference_set() -> None:
    names = get_mds_encodings()
    assert isinstance(names, set) and names == ALL_NAMES and len(names) == 28
    assert all(is_mds_encoding(name) for name in names)


@pytest.mark.parametrize(
    "encoding",
    ["ndarray:uint8", "ndarray:float64", "ndarray:int16:2,3", "ndarray:uint64:7", "ndarray:int8:1,1,1,1"],
)
def test_ndarray_forms_are_encodings(encoding: str) -> None:
    assert is_mds_encoding(encoding)
    assert get_codec(encoding).name == encoding


@pytest.mark.parametrize(
    "encoding",
    [
        "", "ints", "Int", "list[int]", "int:5", "ndarray:bool", "ndarray:int17", "ndarray:int16:0",
        "ndarray:int16:2,0", "ndarray:int16:-1", "ndarray:int16:2,x", "ndarray:int16:", "ndarray:int16:2:3",
        "jpeg:90", None, 5, ["int"],
    ],
)  # fmt: skip
def test_unknown_encodings_are_refused(encoding: Any) -> None:
    assert not is_mds_encoding(encoding)
    with pytest.raises(UnknownNameError) as caught:
        get_codec(encoding)
    message = str(caught.value)
    assert repr(encoding) in message
    assert all(name in message for name in ALL_NAMES)
    assert "ndarray:<dtype>:<d1,d2,...>" in message
    with pytest.raises(UnknownNameError):
        mds_encode(encoding, b"")


def test_codecs_are_cached_and_describe_themselves() -> None:
    for name in ALL_NAMES:
        codec = get_codec(name)
        assert codec is get_codec(name)
        assert codec.name == name
        assert codec.unsafe is (name == "pkl")
        assert is_mds_encoding_safe(name) is (name != "pkl")


def test_encoded_sizes_match_the_reference_index(fixtures_dir: Path) -> None:
    index = json.loads((fixtures_dir / "mds/all_encodings/index.json").read_text())
    shard = index["shards"][0]
    for encoding, size in zip(shard["column_encodings"], shard["column_sizes"], strict=True):
        assert get_mds_encoded_size(encoding) == size, encoding
        assert get_codec(encoding).size == size


@pytest.mark.parametrize("dtype", ARRAY_DTYPES)
def test_encoded_sizes_of_scalars_and_static_arrays(dtype: str) -> None:
    itemsize = np.dtype(dtype).itemsize
    assert get_mds_encoded_size(dtype) == itemsize
    assert get_mds_encoded_size(f"ndarray:{dtype}:2,5") == 10 * itemsize
    assert get_mds_encoded_size(f"ndarray:{dtype}") is None
    assert get_mds_encoded_size("int") == 8


# ------------------------------------------------------------------------------------ reference data


def test_reference_dataset_decodes_and_reencodes(fixtures_dir: Path, values: ModuleType) -> None:
    count = 0
    for index, (encodings, payloads) in enumerate(mds_samples(fixtures_dir / "mds/all_encodings")):
        expected = values.all_sample(index)
        assert set(encodings) == set(values.ALL_COLUMNS) == set(expected)
        for name, encoding in encodings.items():
            codec = get_codec(encoding)
            payload = payloads[name]
            stored = bytes(payload)
            assert_decoded(name, encoding, codec.decode(payload), expected[name], stored)
            if name not in JPEG_COLUMNS:
                assert codec.encode(expected[name]) == stored, f"sample {index}, column {name}"
        count += 1
    assert count == 60


def test_decoding_bytes_equals_decoding_a_memoryview(fixtures_dir: Path) -> None:
    encodings, payloads = next(mds_samples(fixtures_dir / "mds/all_encodings"))
    for name, encoding in encodings.items():
        from_view = mds_decode(encoding, payloads[name])
        from_bytes = mds_decode(encoding, bytes(payloads[name]))
        if isinstance(from_view, np.ndarray):
            assert np.array_equal(from_view, from_bytes)
        elif encoding in IMAGE_ENCODINGS:
            first = lambda value: value[0] if isinstance(value, list) and value else value  # noqa: E731
            assert pixels(first(from_view)).tobytes() == pixels(first(from_bytes)).tobytes()
        else:
            assert from_view == from_bytes


def test_reference_pickles_decode(fixtures_dir: Path) -> None:
    samples = list(mds_samples(fixtures_dir / "mds/unsafe_pkl"))
    assert len(samples) == 10
    for i, (encodings, payloads) in enumerate(samples):
        assert encodings == {"obj": "pkl", "n": "int"}
        codec = get_codec("pkl")
        assert codec.unsafe
        assert codec.decode(payloads["obj"]) == {"i": i, "set": {i, i + 1}}
        assert get_codec("int").decode(payloads["n"]) == i


def test_reference_tiny_dataset_decodes(fixtures_dir: Path) -> None:
    decoded = [
        {name: mds_decode(enc, payloads[name]) for name, enc in encodings.items()}
        for encodings, payloads in mds_samples(fixtures_dir / "mds/tiny")
    ]
    assert decoded == [{"number": 5, "words": "hi"}, {"number": -1, "words": ""}]


# ------------------------------------------------------------------------------------- round trips


def roundtrip(encoding: str, value: Any) -> Any:
    """Encode, then decode from a memoryview slice inside a larger buffer (as from a mapped shard)."""
    codec = get_codec(encoding)
    data = codec.encode(value)
    assert isinstance(data, bytes)
    if codec.size is not None:
        assert len(data) == codec.size
    return codec.decode(memoryview(b"<<" + data + b">>")[2:-2])


@FAST
@given(st.binary(max_size=300))
def test_bytes_roundtrip(value: bytes) -> None:
    assert roundtrip("bytes", value) == value
    assert roundtrip("bytes", bytearray(value)) == value


@FAST
@given(st.text(max_size=100))
def test_str_roundtrip(value: str) -> None:
    assert roundtrip("str", value) == value


@FAST
@given(st.integers(-(2**63), 2**63 - 1))
def test_int_roundtrip(value: int) -> None:
    decoded = roundtrip("int", value)
    assert type(decoded) is int and decoded == value


@FAST
@given(st.data())
@pytest.mark.parametrize("dtype", INTEGERS)
def test_integer_scalar_roundtrip(dtype: str, data: st.DataObject) -> None:
    info = np.iinfo(dtype)
    value = data.draw(st.integers(int(info.min), int(info.max)))
    decoded = roundtrip(dtype, value)
    assert type(decoded) is np.dtype(dtype).type and decoded == value
    assert roundtrip(dtype, np.dtype(dtype).type(value)) == value


@FAST
@given(st.data())
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_scalar_roundtrip(dtype: str, data: st.DataObject) -> None:
    width = np.dtype(dtype).itemsize * 8
    value = data.draw(st.floats(width=width, allow_nan=False))
    decoded = roundtrip(dtype, value)
    assert type(decoded) is np.dtype(dtype).type and decoded == value
    assert np.isnan(roundtrip(dtype, float("nan")))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_float_scalars_round_like_numpy(dtype: str) -> None:
    rng = np.random.default_rng(7)
    for value in rng.normal(scale=1000, size=200).tolist() + [1 / 3, 2.5e-8, 65504.0]:
        assert get_codec(dtype).encode(value) == np.dtype(dtype).type(value).tobytes()


@FAST
@given(st.integers(-(10**60), 10**60))
def test_str_int_roundtrip(value: int) -> None:
    decoded = roundtrip("str_int", value)
    assert type(decoded) is int and decoded == value


@FAST
@given(st.floats(allow_nan=False))
def test_str_float_roundtrip(value: float) -> None:
    decoded = roundtrip("str_float", value)
    assert type(decoded) is float and decoded == value


@FAST
@given(st.decimals(allow_nan=False))
def test_str_decimal_roundtrip(value: Decimal) -> None:
    decoded = roundtrip("str_decimal", value)
    assert type(decoded) is Decimal and decoded == value and str(decoded) == str(value)


ARRAYS = st.sampled_from(ARRAY_DTYPES).flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
)


def assert_same_array(actual: Any, expected: np.ndarray) -> None:
    assert isinstance(actual, np.ndarray)
    assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape)
    assert actual.tobytes() == expected.tobytes()  # NaN payloads too


@FAST
@given(ARRAYS)
def test_ndarray_roundtrip_in_every_form(array: np.ndarray) -> None:
    dtype = array.dtype.name
    shape = ",".join(map(str, array.shape))
    for encoding in ("ndarray", f"ndarray:{dtype}", f"ndarray:{dtype}:{shape}"):
        assert_same_array(roundtrip(encoding, array), array)


@FAST
@given(ARRAYS)
def test_ndarray_accepts_any_layout_and_byte_order(array: np.ndarray) -> None:
    swapped = array.astype(array.dtype.newbyteorder(">"))
    transposed = np.asfortranarray(array).T
    assert_same_array(roundtrip("ndarray", swapped), array)
    assert_same_array(roundtrip(f"ndarray:{array.dtype.name}", transposed), np.ascontiguousarray(array.T))
    assert mds_encode("ndarray", swapped) == mds_encode("ndarray", array)


@pytest.mark.parametrize(("side", "shape_type"), [(255, "uint8"), (256, "uint16"), (65536, "uint32")])
def test_ndarray_header_uses_the_smallest_shape_type(side: int, shape_type: str) -> None:
    array = np.zeros((2, side), np.uint8)
    data = mds_encode("ndarray", array)
    code = ["uint8", "uint16", "uint32", "uint64"].index(shape_type)
    assert data[0] == 8  # uint8 values
    assert data[1] == (2 << 2) | code
    header = 2 + 2 * np.dtype(shape_type).itemsize
    assert np.frombuffer(data[2:header], shape_type).tolist() == [2, side]
    assert len(data) == header + array.size
    assert_same_array(mds_decode("ndarray", data), array)


def test_decoded_static_array_has_the_column_shape() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    data = mds_encode("ndarray:float32:2,3", array)
    assert data == array.tobytes()
    assert_same_array(mds_decode("ndarray:float32:2,3", data), array)


IMAGE_MODES = {"L": 1, "RGB": 3, "RGBA": 4}


def images(modes: tuple[str, ...] = ("L", "RGB", "RGBA")) -> st.SearchStrategy[Image.Image]:
    def build(mode: str, width: int, height: int, seed: int) -> Image.Image:
        rng = np.random.default_rng(seed)
        channels = IMAGE_MODES[mode]
        array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        return Image.fromarray(array[:, :, 0] if channels == 1 else array, mode)

    return st.builds(
        build, st.sampled_from(modes), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1)
    )


@FAST
@given(images(("L", "RGB", "RGBA")))
def test_pil_and_png_roundtrip(image: Image.Image) -> None:
    assert_same_image(roundtrip("pil", image), image)
    assert_same_image(roundtrip("png", image), image)


@FAST
@given(st.sampled_from(["1", "I", "F", "I;16", "CMYK", "LA"]), st.integers(1, 6), st.integers(1, 6))
def test_pil_roundtrip_other_modes(mode: str, width: int, height: int) -> None:
    image = Image.new(mode, (width, height))
    image.putdata([i % 2 for i in range(width * height)] if mode == "1" else list(range(width * height)))
    assert_same_image(roundtrip("pil", image), image)


@FAST
@given(images(("L", "RGB")))
def test_jpeg_roundtrip_keeps_size_and_mode(image: Image.Image) -> None:
    data = mds_encode("jpeg", image)
    decoded = roundtrip("jpeg", image)
    assert (decoded.mode, decoded.size) == (image.mode, image.size)
    assert decoded.tobytes() == Image.open(BytesIO(data)).tobytes()


def test_jpeg_opened_from_a_file_is_stored_as_that_file(tmp_path: Path) -> None:
    path = tmp_path / "image.jpg"
    Image.new("RGB", (5, 4), (10, 200, 30)).save(path, quality=95)
    with Image.open(path) as image:
        assert mds_encode("jpeg", image) == path.read_bytes()


@FAST
@given(st.lists(images(("L", "RGB")), max_size=3))
def test_image_lists_roundtrip(items: list[Image.Image]) -> None:
    for got, want in zip(roundtrip("list[pil]", items), items, strict=True):
        assert_same_image(got, want)
    for got, want in zip(roundtrip("list[png]", items), items, strict=True):
        assert_same_image(got, want)
    jpegs = roundtrip("list[jpeg]", items)
    assert [(image.mode, image.size) for image in jpegs] == [(image.mode, image.size) for image in items]


@FAST
@given(st.lists(images(("L", "RGB")), min_size=1, max_size=3))
def test_jpeg_array_roundtrip(items: list[Image.Image]) -> None:
    files = []
    for image in items:
        out = BytesIO()
        image.save(out, format="JPEG")
        files.append(out.getvalue())
    for encoding in ("jpeg_array", "jpegarray"):
        decoded = roundtrip(encoding, files)
        assert len(decoded) == len(files)
        for got, data in zip(decoded, files, strict=True):
            assert_same_image(got, Image.open(BytesIO(data)))
    # Images are accepted too: they are stored as JPEG files.
    assert [im.size for im in roundtrip("jpeg_array", items)] == [im.size for im in items]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children),
    max_leaves=12,
)


@FAST
@given(JSON_VALUES)
def test_json_roundtrip(value: Any) -> None:
    assert roundtrip("json", value) == value
    assert mds_encode("json", value) == json.dumps(value).encode()


def test_json_stores_arrays_as_lists() -> None:
    assert roundtrip("json", np.arange(4).reshape(2, 2)) == [[0, 1], [2, 3]]


PICKLABLE = st.recursive(
    st.none() | st.integers() | st.binary(max_size=8) | st.text(max_size=8) | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=3).map(tuple)
        | st.frozensets(st.integers(), max_size=3)
        | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=10,
)


@FAST
@given(PICKLABLE)
def test_pkl_roundtrip_even_for_bytes(value: Any) -> None:
    assert roundtrip("pkl", value) == value
    assert pickle.loads(mds_encode("pkl", value)) == value


@FAST
@given(st.sampled_from(sorted(ALL_NAMES - {"pkl"})), st.binary(max_size=64))
def test_bytes_are_taken_as_already_encoded(encoding: str, data: bytes) -> None:
    size = get_mds_encoded_size(encoding)
    if size is not None:
        data = data.ljust(size, b"\0")[:size]
    assert mds_encode(encoding, data) == data
    assert mds_encode(encoding, memoryview(data)) == data


# ------------------------------------------------------------------------------------------ errors

RGBA = Image.new("RGBA", (2, 2))
RGB = Image.new("RGB", (2, 2))

BAD_VALUES = [
    ("bytes", "text", "bytes"),
    ("str", 5, "str"),
    ("str", "\ud800", "UTF-8"),
    ("int", "5", "int"),
    ("int", 1.5, "int"),
    ("int", 2**63, "int64 range"),
    ("int", -(2**63) - 1, "int64 range"),
    ("int", b"\0" * 7, "8 encoded bytes"),
    ("int8", 128, "int8 range"),
    ("int8", -129, "int8 range"),
    ("uint8", -1, "uint8 range"),
    ("uint16", 1.0, "int"),
    ("uint64", 2**64, "uint64 range"),
    ("int32", None, "int"),
    ("float16", "1", "real number"),
    ("float16", 1e6, "float16"),
    ("float32", 1e300, "float32"),
    ("float64", b"\0" * 4, "8 encoded bytes"),
    ("str_int", 1.5, "int"),
    ("str_int", True, "int"),
    ("str_float", "1.5", "float"),
    ("str_decimal", 1.5, "Decimal"),
    ("ndarray", [1, 2], "ndarray"),
    ("ndarray", np.array(5), "0-d"),
    ("ndarray", np.zeros(0), "at least one element"),
    ("ndarray", np.zeros((2, 0)), "at least one element"),
    ("ndarray", np.zeros(3, bool), "dtype"),
    ("ndarray", np.zeros(3, complex), "dtype"),
    ("ndarray", np.zeros([1] * 64, np.uint8), "at most 63"),
    ("ndarray:int16", np.zeros(3, np.int32), "dtype int16"),
    ("ndarray:float32:2,3", np.zeros((3, 2), np.float32), "shape (2, 3)"),
    ("ndarray:float32:2,3", np.zeros((2, 3), np.float64), "dtype float32"),
    ("ndarray:float32:2,3", b"x" * 23, "24 encoded bytes"),
    ("pil", "image", "PIL image"),
    ("jpeg", np.zeros((2, 2), np.uint8), "PIL image"),
    ("jpeg", RGBA, "JPEG"),
    ("png", 5, "PIL image"),
    ("list[png]", RGB, "list"),
    ("list[pil]", [RGB, "x"], "PIL image"),
    ("jpeg_array", [], "non-empty list"),
    ("jpeg_array", [5], "PIL image"),
    ("json", {1, 2}, "JSON"),
    ("json", object(), "JSON"),
    ("pkl", lambda: None, "picklable"),
]


@pytest.mark.parametrize(("encoding", "value", "expected"), BAD_VALUES)
def test_values_that_do_not_fit_are_refused(encoding: str, value: Any, expected: str) -> None:
    with pytest.raises(EncodingError) as caught:
        mds_encode(encoding, value)
    message = str(caught.value)
    assert "expected" in message or "cannot" in message
    assert expected in message, message
    assert isinstance(caught.value, ValueError)


def test_images_without_pillow_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    for encoding in ("pil", "jpeg", "png", "list[png]", "jpeg_array"):
        with pytest.raises(MissingDependencyError, match=r"pip install 'shardflow-format\[images\]'"):
            mds_encode(encoding, [RGB] if encoding.startswith(("list", "jpeg_")) else RGB)
    with pytest.raises(MissingDependencyError):
        mds_decode("png", b"\x89PNG")
    # Already encoded images need no Pillow to be written.
    assert mds_encode("jpeg", b"\xff\xd8") == b"\xff\xd8"
