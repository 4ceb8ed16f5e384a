"""MDS column encodings: the mosaicml-streaming wire format of every encoding, as cached codec objects."""

from __future__ import annotations

import functools
import json
import logging
import pickle
import reprlib
import struct
from collections.abc import Callable
from decimal import Decimal
from io import BytesIO
from numbers import Integral, Real
from types import ModuleType
from typing import Any

import numpy as np

from shardflow.format._deps import require
from shardflow.format.errors import EncodingError, EncodingTypeError, ShardFormatError, UnknownNameError

__all__ = [
    "Codec",
    "get_codec",
    "get_mds_encodings",
    "is_mds_encoding",
    "is_mds_encoding_safe",
    "get_mds_encoded_size",
    "mds_encode",
    "mds_decode",
]

logger = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview
_BYTES_LIKE = (bytes, bytearray, memoryview)

# Array value dtypes and their one-byte codes in the dynamic-dtype ndarray header.
_DTYPE_CODES = {
    "uint8": 8, "int8": 9,
    "uint16": 16, "int16": 17, "float16": 18,
    "uint32": 32, "int32": 33, "float32": 34,
    "uint64": 64, "int64": 65, "float64": 66,
}  # fmt: skip
_LITTLE_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in _DTYPE_CODES}
_DTYPE_BY_CODE: list[np.dtype | None] = [None] * 256
for _name, _code in _DTYPE_CODES.items():
    _DTYPE_BY_CODE[_code] = _LITTLE_DTYPES[_name]

# Shape header byte = ndim << 2 | c, where c picks the unsigned type of the shape values.
_SHAPE_CHARS = "BHIQ"
_SHAPE_STRUCTS = [struct.Struct(f"<{byte >> 2}{_SHAPE_CHARS[byte & 3]}") for byte in range(256)]
_MAX_NDIM = 63

# struct format characters of the scalar encodings.
_SCALAR_CHARS = {
    "int8": "b", "int16": "h", "int32": "i", "int64": "q",
    "uint8": "B", "uint16": "H", "uint32": "I", "uint64": "Q",
    "float16": "e", "float32": "f", "float64": "d",
}  # fmt: skip

_U32 = struct.Struct("<I")
_LIST_HEAD = struct.Struct("<II")
_PIL_HEAD = struct.Struct("<III")

_IMAGE_USER = "the image encodings (pil, jpeg, png, list[...], jpeg_array)"


def _describe(obj: Any) -> str:
    """A short description of a value for error messages: its type and a truncated repr."""
    if isinstance(obj, np.ndarray):
        return f"ndarray of dtype {obj.dtype} and shape {obj.shape}"
    return f"{type(obj).__name__} {reprlib.repr(obj)}"


def _mismatch(expected: str, obj: Any) -> EncodingTypeError:
    return EncodingTypeError(f"expected {expected}, got {_describe(obj)}")


def _pil_image() -> ModuleType:
    """Import ``PIL.Image`` on use of an image encoding (after the first time, a ``sys.modules`` lookup)."""
    return require("PIL.Image", "images", _IMAGE_USER, "Pillow")


class Codec:
    """Encodes values of one MDS encoding to bytes and decodes them back.

    Get instances with :func:`get_codec`; they are cached per encoding string and hold no state.

    Attributes:
        name: The encoding string, e.g. ``'int'`` or ``'ndarray:float32:2,3'``.
        size: The fixed byte size of every encoded value, or ``None`` when it varies.
        unsafe: ``True`` when decoding can run arbitrary code (``pkl``).
    """

    __slots__ = ("name", "size", "unsafe")

    def __init__(self, name: str, size: int | None = None, unsafe: bool = False) -> None:
        self.name = name
        self.size = size
        self.unsafe = unsafe

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def encode(self, obj: Any) -> bytes:
        """Encode one value.

        A ``bytes``-like value is taken as already encoded and stored as is (as the reference does); for a
        fixed-size encoding its length must match.

        Args:
            obj: The value.

        Returns:
            The encoded bytes.

        Raises:
            EncodingError: The value does not fit this encoding; the message says what was expected.
        """
        if isinstance(obj, _BYTES_LIKE):
            data = bytes(obj)
            if self.size is not None and len(data) != self.size:
                raise EncodingError(
                    f"expected a value for encoding {self.name!r} or its {self.size} encoded bytes, "
                    f"got {len(data)} bytes"
                )
            return data
        return self._encode(obj)

    def _encode(self, obj: Any) -> bytes:
        raise NotImplementedError

    def array_layout(self) -> tuple[np.dtype, tuple[int, ...]] | None:
        """The numpy dtype and shape of every value, for a fixed-size number or array encoding, else None.

        A value of such an encoding is stored as exactly its array bytes, so columns of it can be read in
        bulk as one ``(samples, *shape)`` array.
        """
        return None

    def decode(self, buf: Buffer) -> Any:
        """Decode one value from its bytes (a ``memoryview`` slice of a mapped shard works).

        Arrays come back as read-only views of ``buf`` where possible: they keep it alive.

        Args:
            buf: The encoded bytes.

        Returns:
            The value.
        """
        raise NotImplementedError

    def decoder(self) -> Callable[[Buffer], Any]:
        """The cheapest callable that does what :meth:`decode` does, for per-sample loops."""
        return self.decode


class _Bytes(Codec):
    __slots__ = ()

    def _encode(self, obj: Any) -> bytes:
        raise _mismatch("bytes, bytearray or memoryview", obj)

    def decode(self, buf: Buffer) -> bytes:
        return bytes(buf)

    def decoder(self) -> Callable[[Buffer], Any]:
        return bytes


class _Str(Codec):
    __slots__ = ()

    def _encode(self, obj: Any) -> bytes:
        if not isinstance(obj, str):
            raise _mismatch("str", obj)
        try:
            return obj.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodingError(f"expected a str that UTF-8 can encode, got {_describe(obj)}: {exc}") from exc

    def decode(self, buf: Buffer) -> str:
        return str(buf, "utf-8")


class _Int(Codec):
    """``int``: a Python int stored as little-endian int64, decoded to a Python int."""

    __slots__ = ()
    _LOW, _HIGH = -(1 << 63), (1 << 63) - 1

    def encode(self, obj: Any) -> bytes:
        if type(obj) is int and self._LOW <= obj <= self._HIGH:  # the common case, without the checks
            return obj.to_bytes(8, "little", signed=True)
        return super().encode(obj)

    def _encode(self, obj: Any) -> bytes:
        if type(obj) is not int and not isinstance(obj, Integral):  # the ABC check is slow
            raise _mismatch("an int", obj)
        value = int(obj)
        if not self._LOW <= value <= self._HIGH:
            raise EncodingError(
                f"expected an int in the int64 range [{self._LOW}, {self._HIGH}], got {value}"
            )
        return value.to_bytes(8, "little", signed=True)

    def array_layout(self) -> tuple[np.dtype, tuple[int, ...]] | None:
        return _LITTLE_DTYPES["int64"], ()

    def decode(self, buf: Buffer) -> int:
        return int.from_bytes(buf, "little", signed=True)


class _Scalar(Codec):
    """``int8`` ... ``float64``: one little-endian numpy scalar, decoded to a numpy scalar."""

    __slots__ = ("_dtype", "_struct", "_bounds")

    def __init__(self, name: str) -> None:
        dtype = _LITTLE_DTYPES[name]
        super().__init__(name, dtype.itemsize)
        self._dtype = dtype
        self._struct = struct.Struct("<" + _SCALAR_CHARS[name])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            self._bounds: tuple[int, int] | None = (int(info.min), int(info.max))
        else:
            self._bounds = None

    def _encode(self, obj: Any) -> bytes:
        if self._bounds is not None:
            if type(obj) is not int and not isinstance(obj, Integral):
                raise _mismatch(f"an int for {self.name}", obj)
            low, high = self._bounds
            value = int(obj)
            if not low <= value <= high:
                raise EncodingError(f"expected an int in the {self.name} range [{low}, {high}], got {value}")
            return self._struct.pack(value)
        if type(obj) is not float and not isinstance(obj, Real):
            raise _mismatch(f"a real number for {self.name}", obj)
        try:
            return self._struct.pack(obj)
        except (OverflowError, struct.error) as exc:
            raise EncodingError(f"expected a number that {self.name} can hold, got {obj!r}: {exc}") from exc

    def array_layout(self) -> tuple[np.dtype, tuple[int, ...]] | None:
        return self._dtype, ()

    def decode(self, buf: Buffer) -> Any:
        return np.frombuffer(buf, self._dtype, 1)[0]


class _StrInt(Codec):
    __slots__ = ()

    def _encode(self, obj: Any) -> bytes:
        if not isinstance(obj, Integral) or isinstance(obj, bool):
            raise _mismatch("an int", obj)
        try:
            return str(int(obj)).encode("ascii")
        except ValueError as exc:  # beyond sys.get_int_max_str_digits()
            raise EncodingError(f"cannot write this int as decimal digits: {exc}") from exc

    def decode(self, buf: Buffer) -> int:
        return int(str(buf, "ascii"))


class _StrFloat(Codec):
    __slots__ = ()

    def _encode(self, obj: Any) -> bytes:
        if not isinstance(obj, Real) or isinstance(obj, bool):
            raise _mismatch("a float", obj)
        return repr(float(obj)).encode("ascii")

    def decode(self, buf: Buffer) -> float:
        return float(str(buf, "ascii"))


class _StrDecimal(Codec):
    __slots__ = ()

    def _encode(self, obj: Any) -> bytes:
        if not isinstance(obj, Decimal):
            raise _mismatch("a decimal.Decimal", obj)
        return str(obj).encode("ascii")

    def decode(self, buf: Buffer) -> Decimal:
        return Decimal(str(buf, "ascii"))


class _NDArray(Codec):
    """``ndarray[:<dtype>[:<d1,d2,...>]]``: a numpy array; what the spec leaves open is stored in a header.

    Layout: ``[dtype code: 1, if dtype open] [ndim << 2 | shape type: 1, shape values, if shape open]
    [values, C order, little-endian]``.
    """

    __slots__ = ("_dtype", "_shape", "_count", "_static")

    def __init__(self, name: str, dtype: np.dtype | None, shape: tuple[int, ...] | None) -> None:
        self._dtype = dtype
        self._shape = shape
        self._static = dtype is not None and shape is not None
        self._count = int(np.prod(shape)) if shape is not None else -1  # -1: frombuffer reads all
        size = self._count * dtype.itemsize if dtype is not None and shape is not None else None
        super().__init__(name, size)

    @classmethod
    def parse(cls, name: str) -> _NDArray:
        """Build the codec of ``name`` (``ndarray``, ``ndarray:<dtype>`` or ``ndarray:<dtype>:<shape>``)."""
        parts = name.split(":")[1:]
        if parts == [""]:  # the reference reads 'ndarray:' as 'ndarray'
            parts = []
        if len(parts) > 2 or (parts and parts[0] not in _DTYPE_CODES):
            raise UnknownNameError(_unknown_message(name))
        dtype = _LITTLE_DTYPES[parts[0]] if parts else None
        shape = None
        if len(parts) == 2:
            try:
                shape = tuple(int(dim) for dim in parts[1].split(","))
            except ValueError:
                shape = ()
            if not shape or min(shape) < 1 or len(shape) > _MAX_NDIM:
                raise UnknownNameError(_unknown_message(name))
        return cls(name, dtype, shape)

    def encode(self, obj: Any) -> bytes:
        if self._static and type(obj) is np.ndarray and obj.dtype == self._dtype and obj.shape == self._shape:
            return obj.tobytes()  # the common case of a fixed column: no header, nothing to check
        return super().encode(obj)

    def _encode(self, obj: Any) -> bytes:
        if not isinstance(obj, np.ndarray):
            raise _mismatch(f"a numpy ndarray for {self.name!r}", obj)
        name = obj.dtype.name
        little = _LITTLE_DTYPES.get(name)
        if little is None:
            raise EncodingError(
                f"expected an ndarray of dtype {', '.join(_DTYPE_CODES)}, got {_describe(obj)}"
            )
        if self._dtype is not None and little != self._dtype:
            raise EncodingError(f"expected an ndarray of dtype {self._dtype.name}, got {_describe(obj)}")
        if obj.size == 0:
            raise EncodingError(f"expected an ndarray with at least one element, got {_describe(obj)}")
        parts = []
        if self._dtype is None:
            parts.append(bytes((_DTYPE_CODES[name],)))
        if self._shape is None:
            parts.append(_encode_shape(obj))
        elif obj.shape != self._shape:
            raise EncodingError(f"expected an ndarray of shape {self._shape}, got {_describe(obj)}")
        if obj.dtype != little:
            obj = obj.astype(little)
        parts.append(obj.tobytes())
        return b"".join(parts)

    def array_layout(self) -> tuple[np.dtype, tuple[int, ...]] | None:
        if self._dtype is None or self._shape is None:
            return None
        return self._dtype, self._shape

    def decoder(self) -> Callable[[Buffer], Any]:
        if self._dtype is not None and self._shape is not None and len(self._shape) == 1:
            # one dimension: the value's bytes are the whole array, no reshape, no Python frame
            return functools.partial(np.frombuffer, dtype=self._dtype)
        return self.decode

    def decode(self, buf: Buffer) -> np.ndarray:
        dtype = self._dtype
        offset = 0
        if dtype is None:
            dtype = _DTYPE_BY_CODE[buf[0]]
            if dtype is None:
                raise ShardFormatError(f"corrupt {self.name!r} value: unknown dtype code {buf[0]}")
            offset = 1
        if self._shape is not None:
            return np.frombuffer(buf, dtype, self._count, offset).reshape(self._shape)
        layout = _SHAPE_STRUCTS[buf[offset]]
        shape = layout.unpack_from(buf, offset + 1)
        return np.frombuffer(buf, dtype, offset=offset + 1 + layout.size).reshape(shape)


def _encode_shape(arr: np.ndarray) -> bytes:
    """The dynamic-shape header: ``ndim << 2 | shape type`` then the dims in the smallest unsigned type."""
    if arr.ndim == 0:
        raise EncodingError(
            f"expected an ndarray with at least one dimension, got a 0-d array {arr!r}: "
            "use a scalar encoding (e.g. 'int64', 'float32') or reshape it to (1,)"
        )
    if arr.ndim > _MAX_NDIM:
        raise EncodingError(f"expected an ndarray with at most {_MAX_NDIM} dimensions, got {_describe(arr)}")
    largest = max(arr.shape)
    kind = 0 if largest < 1 << 8 else 1 if largest < 1 << 16 else 2 if largest < 1 << 32 else 3
    layout = _SHAPE_STRUCTS[arr.ndim << 2 | kind]
    return bytes((arr.ndim << 2 | kind,)) + layout.pack(*arr.shape)


def _check_image(obj: Any, encoding: str) -> None:
    if not isinstance(obj, _pil_image().Image):
        raise _mismatch(f"a PIL image for {encoding!r}", obj)


def _open_image(buf: Buffer) -> Any:
    """Open encoded image bytes lazily, as the reference does; the image owns a copy of the bytes."""
    return _pil_image().open(BytesIO(buf))


def _raw_image_size(mode: str, width: int, height: int) -> int:
    """Bytes of raw pixels of an image, computed before Pillow allocates anything (rows are byte-padded)."""
    try:
        bits_per_pixel = len(_pil_image().new(mode, (8, 1)).tobytes())
    except ValueError as exc:
        raise ShardFormatError(f"corrupt 'pil' value: unknown image mode {mode!r}") from exc
    return (width * bits_per_pixel + 7) // 8 * height


class _PIL(Codec):
    """``pil``: raw pixels. Layout: ``[width: u32] [height: u32] [len(mode): u32] [mode] [pixels]``."""

    __slots__ = ()

    def _encode(self, obj: Any) -> bytes:
        _check_image(obj, self.name)
        mode = obj.mode.encode("utf-8")
        width, height = obj.size
        return _PIL_HEAD.pack(width, height, len(mode)) + mode + obj.tobytes()

    def decode(self, buf: Buffer) -> Any:
        width, height, mode_size = _PIL_HEAD.unpack_from(buf)
        start = _PIL_HEAD.size + mode_size
        mode = str(buf[_PIL_HEAD.size : start], "utf-8")
        pixels = buf[start:]
        expected = _raw_image_size(mode, width, height)
        if len(pixels) != expected:
            raise ShardFormatError(
                f"corrupt {self.name!r} value: a {width}x{height} {mode!r} image needs {expected} bytes of "
                f"pixels, found {len(pixels)}"
            )
        return _pil_image().frombytes(mode, (width, height), pixels)


class _Compressed(Codec):
    """``jpeg`` or ``png``: the image file bytes, decoded to a lazily opened PIL image."""

    __slots__ = ("_format",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._format = name.upper()

    def _encode(self, obj: Any) -> bytes:
        _check_image(obj, self.name)
        if self._format == "JPEG" and obj.format == "JPEG" and getattr(obj, "filename", None):
            # An image opened from a JPEG file is stored as that file, without a lossy re-encode.
            try:
                with open(obj.filename, "rb") as file:
                    return file.read()
            except FileNotFoundError:
                logger.debug("JPEG source %s is gone, re-encoding the image", obj.filename)
        out = BytesIO()
        try:
            obj.save(out, format=self._format)
        except (OSError, ValueError, KeyError) as exc:
            raise EncodingError(
                f"cannot save {_describe(obj)} (mode {obj.mode}) as {self._format}: {exc}"
            ) from exc
        return out.getvalue()

    def decode(self, buf: Buffer) -> Any:
        return _open_image(buf)


class _ImageList(Codec):
    """``list[pil|jpeg|png]``: ``[0: u32] [count: u32] [sizes: count * u32] [encoded images]``."""

    __slots__ = ("_item",)

    def __init__(self, name: str, item: Codec) -> None:
        super().__init__(name)
        self._item = item

    def _encode(self, obj: Any) -> bytes:
        if not isinstance(obj, (list, tuple)):
            raise _mismatch(f"a list of PIL images for {self.name!r}", obj)
        items = [self._item.encode(image) for image in obj]
        sizes = struct.pack(f"<{len(items)}I", *map(len, items))
        return b"".join((_LIST_HEAD.pack(0, len(items)), sizes, *items))

    def decode(self, buf: Buffer) -> list[Any]:
        count = _LIST_HEAD.unpack_from(buf)[1]
        start = _LIST_HEAD.size + 4 * count
        decode = self._item.decode
        items = []
        for size in struct.unpack_from(f"<{count}I", buf, _LIST_HEAD.size):
            items.append(decode(buf[start : start + size]))
            start += size
        return items


class _JPEGArray(Codec):
    """``jpeg_array``: ``[count: u32] [sizes: count * u32] [JPEG files]``, decoded to a list of PIL images."""

    __slots__ = ("_jpeg",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._jpeg = _Compressed("jpeg")

    def _encode(self, obj: Any) -> bytes:
        if not isinstance(obj, (list, tuple)) or not obj:
            raise _mismatch(f"a non-empty list of JPEG bytes or PIL images for {self.name!r}", obj)
        items = [self._jpeg.encode(image) for image in obj]
        sizes = struct.pack(f"<{len(items)}I", *map(len, items))
        return b"".join((_U32.pack(len(items)), sizes, *items))

    def decode(self, buf: Buffer) -> list[Any]:
        (count,) = _U32.unpack_from(buf)
        start = 4 + 4 * count
        if count == 0 or len(buf) < start:
            raise ShardFormatError(f"corrupt {self.name!r} value: {count} images in {len(buf)} bytes")
        items = []
        for size in struct.unpack_from(f"<{count}I", buf, 4):
            items.append(_open_image(buf[start : start + size]))
            start += size
        return items


class _JSON(Codec):
    __slots__ = ()

    def _encode(self, obj: Any) -> bytes:
        if isinstance(obj, np.ndarray):
            obj = obj.tolist()
        try:
            return json.dumps(obj).encode("utf-8")
        except (TypeError, ValueError) as exc:
            # TypeError: a type json cannot write (the reference's TypeError); ValueError: a circular value
            error = EncodingTypeError if isinstance(exc, TypeError) else EncodingError
            raise error(f"expected a JSON-serializable value, got {_describe(obj)}: {exc}") from exc

    def decode(self, buf: Buffer) -> Any:
        return json.loads(str(buf, "utf-8"))


class _Pickle(Codec):
    """``pkl``: any picklable value. Unsafe: decoding untrusted data can run arbitrary code."""

    __slots__ = ()

    def encode(self, obj: Any) -> bytes:
        """Pickle any value (bytes too: unlike the reference, they are not stored raw)."""
        try:
            return pickle.dumps(obj)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise EncodingError(f"expected a picklable value, got {_describe(obj)}: {exc}") from exc

    def decode(self, buf: Buffer) -> Any:
        return pickle.loads(buf)


_FACTORIES: dict[str, Callable[[str], Codec]] = {
    "bytes": _Bytes,
    "str": _Str,
    "int": lambda name: _Int(name, 8),
    **dict.fromkeys(_SCALAR_CHARS, _Scalar),
    "str_int": _StrInt,
    "str_float": _StrFloat,
    "str_decimal": _StrDecimal,
    "ndarray": _NDArray.parse,
    "pil": _PIL,
    "jpeg": _Compressed,
    "png": _Compressed,
    "list[pil]": lambda name: _ImageList(name, _PIL("pil")),
    "list[jpeg]": lambda name: _ImageList(name, _Compressed("jpeg")),
    "list[png]": lambda name: _ImageList(name, _Compressed("png")),
    "jpeg_array": _JPEGArray,
    "jpegarray": _JPEGArray,
    "json": _JSON,
    "pkl": lambda name: _Pickle(name, unsafe=True),
}

_CODECS: dict[str, Codec] = {}


def _unknown_message(name: object) -> str:
    return (
        f"unknown MDS encoding {name!r}; valid encodings: {', '.join(sorted(_FACTORIES))}, "
        f"'ndarray:<dtype>' and 'ndarray:<dtype>:<d1,d2,...>' (dims >= 1) with <dtype> one of "
        f"{', '.join(_DTYPE_CODES)}"
    )


def get_codec(encoding: str) -> Codec:
    """Get the (cached) codec of an encoding.

    Args:
        encoding: An encoding name, e.g. ``'str'``, ``'jpeg'``, ``'ndarray:int16:2,3'``.

    Returns:
        The codec.

    Raises:
        UnknownNameError: Not an MDS encoding; the message lists the valid ones.
    """
    try:
        return _CODECS[encoding]
    except KeyError:
        pass
    except TypeError:  # unhashable
        raise UnknownNameError(_unknown_message(encoding)) from None
    if not isinstance(encoding, str):
        raise UnknownNameError(_unknown_message(encoding))
    factory = _FACTORIES.get(encoding.split(":", 1)[0] if encoding.startswith("ndarray:") else encoding)
    if factory is None:
        raise UnknownNameError(_unknown_message(encoding))
    codec = _CODECS[encoding] = factory(encoding)
    return codec


def get_mds_encodings() -> set[str]:
    """The MDS encoding names (``ndarray`` also takes ``:<dtype>[:<shape>]``).

    Returns:
        A new set of the names, as mosaicml-streaming returns them.
    """
    return set(_FACTORIES)


def is_mds_encoding(encoding: str) -> bool:
    """Whether ``encoding`` is a valid MDS encoding (``'ndarray:int16:2,3'`` included).

    Args:
        encoding: The encoding string.

    Returns:
        ``True`` when :func:`get_codec` accepts it.
    """
    try:
        get_codec(encoding)
    except UnknownNameError:
        return False
    return True


def is_mds_encoding_safe(encoding: str) -> bool:
    """Whether decoding ``encoding`` cannot run arbitrary code (``False`` for ``pkl``).

    Args:
        encoding: A valid encoding string.

    Returns:
        ``True`` when the encoding is safe to decode from untrusted data.
    """
    return not get_codec(encoding).unsafe


def get_mds_encoded_size(encoding: str) -> int | None:
    """The fixed byte size of every value of ``encoding``, or ``None`` when it varies.

    Args:
        encoding: The encoding string.

    Returns:
        The size in bytes, or ``None``.
    """
    return get_codec(encoding).size


def mds_encode(encoding: str, obj: Any) -> bytes:
    """Encode one value with ``encoding`` (see :meth:`Codec.encode`).

    Args:
        encoding: The encoding string.
        obj: The value.

    Returns:
        The encoded bytes.
    """
    return get_codec(encoding).encode(obj)


def mds_decode(encoding: str, data: Buffer) -> Any:
    """Decode one value of ``encoding`` (see :meth:`Codec.decode`).

    Args:
        encoding: The encoding string.
        data: The encoded bytes.

    Returns:
        The value.
    """
    return get_codec(encoding).decode(data)
