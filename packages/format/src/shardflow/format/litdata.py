"""LitData optimised folders (``litdata.optimize`` output): their ``index.json`` turned into shard entries,
one per chunk, and the chunks' samples read at random.

A chunk is ``uint32 count``, ``uint32 offsets[count + 1]`` (from the file's start), then the items (an Arrow
footer may follow them; it is not read). An item is one ``uint32`` size per leaf of the sample's pytree, then
the leaves' bytes, each in the form its ``data_format`` name says. ``compression`` ``zstd`` comes in three
``compression_level`` forms: ``chunk`` (the whole file is one zstd stream), ``batch`` (an ``LDFZ01`` header,
the items' offsets, a table of frames of up to ``compression_batch_size`` items, the frames) and ``sample``
(the plain layout, each item its own zstd frame). Samples must be dicts; the ``PyTreeLoader`` is the item
loader read.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shardflow.format._deps import require
from shardflow.format._read_files import map_file, prepare_file
from shardflow.format.compression import decompress
from shardflow.format.errors import IndexFormatError, ShardFormatError
from shardflow.format.formats import ShardFormat
from shardflow.format.index import INDEX_VERSION

if TYPE_CHECKING:
    from shardflow.format.index import IndexChecker

__all__ = ["LITDATA_FORMAT", "LitDataFormat", "is_litdata_index", "litdata_entries"]

Decoder = Callable[[Any], Any]

# The dtype numbering of LitData's numpy and tensor leaves (format facts).
_NUMPY_DTYPES = (
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64",
    "complex64", "complex128", "bool", "object", "bytes", "str", "void",
)  # fmt: skip
_TORCH_DTYPES = (
    "float32", "float32", "float64", "float64", "complex64", "complex64", "complex128", "complex128",
    "float16", "float16", "bfloat16", "uint8", "int8", "int16", "int16", "int32", "int32", "int64", "int64",
    "bool", "uint16",
)  # fmt: skip
_INT64, _FLOAT64, _U32 = struct.Struct("<q"), struct.Struct("<d"), struct.Struct("<I")
_FRAMED_MAGIC = b"LDFZ01\0\0"
_FRAMED_PREFIX = struct.Struct("<8sHHIII")
_FRAME = struct.Struct("<IIQII")
_LEVELS = ("chunk", "batch", "sample")


def is_litdata_index(obj: Any) -> bool:
    """Whether a parsed ``index.json`` is LitData's (``chunks`` and ``config``), not MDS's (``shards``)."""
    return isinstance(obj, dict) and "chunks" in obj and "config" in obj and "shards" not in obj


# -- leaves --------------------------------------------------------------------------------------------------


def _numpy_dtype(index: int) -> np.dtype:
    name = _NUMPY_DTYPES[index]
    if name in ("object", "bytes", "str", "void"):
        raise ValueError(f"numpy dtype number {index} ({name}) has no fixed-size layout")
    return np.dtype(name)


def _numpy(data: Any) -> np.ndarray:
    dtype_index, ndim = struct.unpack_from("<II", data, 0)
    shape = struct.unpack_from(f"<{ndim}I", data, 8)
    return np.frombuffer(data, _numpy_dtype(dtype_index), offset=8 + 4 * ndim).reshape(shape).copy()


def _torch_dtype(index: int) -> Any:
    torch = require("torch", None, "a LitData tensor leaf")
    return getattr(torch, _TORCH_DTYPES[index])


def _tensor(data: Any) -> Any:
    dtype_index, rank = struct.unpack_from(">II", data, 0)
    shape = struct.unpack_from(f">{rank}I", data, 8)
    return _flat_tensor(_torch_dtype(dtype_index), memoryview(data)[8 + 4 * rank :]).reshape(shape)


def _flat_tensor(dtype: Any, data: Any) -> Any:
    torch = require("torch", None, "a LitData tensor leaf")
    if len(data) == 0:
        return torch.empty((0,), dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype)


def _text_at(raw: bytes, at: int) -> tuple[str, int]:
    (length,) = _U32.unpack_from(raw, at)
    return raw[at + 4 : at + 4 + length].decode("utf-8"), at + 4 + length


def _record_value(raw: bytes, at: int) -> tuple[Any, int]:
    """One value of a record list (``json`` leaves): a tag 0x10..0x14, then the value."""
    tag, at = raw[at], at + 1
    if tag == 0x10:
        return None, at
    if tag == 0x11:
        return _text_at(raw, at)
    if tag == 0x12:
        return _INT64.unpack_from(raw, at)[0], at + 8
    if tag == 0x13:
        return _FLOAT64.unpack_from(raw, at)[0], at + 8
    if tag == 0x14:
        return raw[at] != 0, at + 1
    raise ValueError(f"unknown record value tag {tag}")


def _nested_at(raw: bytes, at: int) -> tuple[Any, int]:
    """One value of a ``json`` leaf's compact encoding at ``at``: a tag byte, then the value."""
    tag = raw[at]
    if tag in (7, 8, 9, 10, 11):  # one str, int64, float64, bool, None
        if tag == 7:
            return _text_at(raw, at + 1)
        if tag == 8:
            return _INT64.unpack_from(raw, at + 1)[0], at + 9
        if tag == 9:
            return _FLOAT64.unpack_from(raw, at + 1)[0], at + 9
        if tag == 10:
            return raw[at + 1] != 0, at + 2
        return None, at + 1
    (count,) = _U32.unpack_from(raw, at + 1)
    at += 5
    if tag == 0:  # JSON text
        return json.loads(raw[at : at + count]), at + count
    if tag == 1:  # list of str
        texts = []
        for _ in range(count):
            text, at = _text_at(raw, at)
            texts.append(text)
        return texts, at
    if tag in (2, 3):  # list of int64 or float64
        values = np.frombuffer(raw, "<i8" if tag == 2 else "<f8", count, at).tolist()
        return values, at + 8 * count
    if tag == 4:  # list of bool
        return [byte != 0 for byte in raw[at : at + count]], at + count
    if tag == 5:  # dict with str keys
        mapping = {}
        for _ in range(count):
            key, at = _text_at(raw, at)
            mapping[key], at = _nested_at(raw, at)
        return mapping, at
    if tag == 6:  # list of records sharing their keys
        (width,) = _U32.unpack_from(raw, at)
        at += 4
        keys = []
        for _ in range(width):
            key, at = _text_at(raw, at)
            keys.append(key)
        rows = []
        for _ in range(count):
            row = {}
            for key in keys:
                row[key], at = _record_value(raw, at)
            rows.append(row)
        return rows, at
    raise ValueError(f"unknown json leaf tag {tag}")


def _json_leaf(data: Any) -> Any:
    """A ``json`` leaf: plain JSON text (older writers) or the compact tagged encoding."""
    raw = bytes(data)
    if not raw or raw[0] > 0x20:
        return json.loads(raw)
    return _nested_at(raw, 0)[0]


def _leaf_decoder(name: str) -> tuple[Decoder, bool]:
    """The decoder of one ``data_format`` name and whether it runs arbitrary code; ValueError if unknown."""
    kind, _, arg = name.partition(":")
    if kind in ("str", "text"):
        return (lambda data: bytes(data).decode("utf-8")), False
    if kind == "bytes":
        return bytes, False
    if kind == "int":
        return (lambda data: _INT64.unpack_from(data)[0]), False
    if kind == "float":
        return (lambda data: _FLOAT64.unpack_from(data)[0]), False
    if kind == "bool":
        return (lambda data: data[0] != 0), False
    if kind == "numpy":
        return _numpy, False
    if kind == "no_header_numpy":
        dtype = _numpy_dtype(int(arg))
        return (lambda data: np.frombuffer(data, dtype).copy()), False
    if kind == "tensor":
        return _tensor, False
    if kind == "no_header_tensor":
        index = int(arg)
        _TORCH_DTYPES[index]  # noqa: B018 - an unknown number raises IndexError here, not per sample
        return (lambda data: _flat_tensor(_torch_dtype(index), data)), False
    if kind == "json":
        return _json_leaf, False
    if kind == "pickle":
        return (lambda data: pickle.loads(bytes(data))), True  # noqa: S301 - refused unless allow_unsafe_types
    raise ValueError(f"leaf format {name!r} is not read by shardflow")


_SUPPORTED = (
    "str, text, bytes, int, float, bool, json, numpy, no_header_numpy, tensor, no_header_tensor, pickle"
)


# -- pytree specs --------------------------------------------------------------------------------------------


def _unflattener(node: dict[str, Any]) -> tuple[Callable[[list[Any], int], Any], int]:
    """``(build, leaves)`` for one node of a pytree spec: ``build(values, start)`` makes the node from
    ``values[start:start + leaves]``."""
    kind, children = node.get("type"), node.get("children_spec") or []
    if kind is None:
        return (lambda values, start: values[start]), 1
    parts = [_unflattener(child) for child in children]
    counts = [count for _, count in parts]

    def items(values: list[Any], start: int) -> list[Any]:
        out = []
        for (build, _), count in zip(parts, counts, strict=True):
            out.append(build(values, start))
            start += count
        return out

    total = sum(counts)
    if kind in ("builtins.list", "builtins.tuple"):
        make = list if kind == "builtins.list" else tuple
        return (lambda values, start: make(items(values, start))), total
    if kind in ("builtins.dict", "collections.OrderedDict"):
        keys = json.loads(node["context"])
        if not isinstance(keys, list) or len(keys) != len(parts):
            raise ValueError(f"a {kind} node's context {node['context']!r} does not list its keys")
        mapping = dict if kind == "builtins.dict" else OrderedDict
        return (lambda values, start: mapping(zip(keys, items(values, start), strict=True))), total
    raise ValueError(
        f"pytree node type {kind!r} is not read by shardflow (dict, OrderedDict, list, tuple are)"
    )


class _Sample:
    """Decodes one item: its leaf sizes, its leaves, and the sample built from them."""

    def __init__(self, data_format: list[str], data_spec: str) -> None:
        decoders = [_leaf_decoder(name) for name in data_format]
        self.decoders = [decoder for decoder, _ in decoders]
        spec = json.loads(data_spec)
        if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[1], dict)):
            raise ValueError("data_spec is not a [protocol, tree] pair")
        root = spec[1]
        if root.get("type") not in ("builtins.dict", "collections.OrderedDict"):
            raise ValueError(
                f"samples are {root.get('type') or 'single values'}, not dicts: shardflow reads LitData "
                "samples that are dicts (return a dict from the function given to litdata.optimize)"
            )
        self.build, leaves = _unflattener(root)
        if leaves != len(self.decoders):
            raise ValueError(f"data_spec has {leaves} leaves but data_format names {len(self.decoders)}")
        self.keys: list[str] = [str(key) for key in json.loads(root["context"])]
        leaf_keys = []  # the sample's key each leaf lies under
        for key, child in zip(self.keys, root.get("children_spec") or [], strict=True):
            leaf_keys += [key] * _unflattener(child)[1]
        self.unsafe = list(
            dict.fromkeys(key for key, (_, unsafe) in zip(leaf_keys, decoders, strict=True) if unsafe)
        )
        self.sizes = struct.Struct(f"<{len(self.decoders)}I")

    def __call__(self, item: Any) -> dict[str, Any]:
        sizes = self.sizes.unpack_from(item, 0)
        at = self.sizes.size
        values = []
        for decode, size in zip(self.decoders, sizes, strict=True):
            values.append(decode(item[at : at + size]))
            at += size
        if at > len(item):
            raise ValueError(f"its leaves need {at} bytes, it holds {len(item)}")
        sample: dict[str, Any] = self.build(values, 0)
        return sample


# -- the index -----------------------------------------------------------------------------------------------


def _config(obj: dict[str, Any], source: str) -> dict[str, Any]:
    """The fields of a LitData index's ``config`` that its chunk entries carry, checked."""
    config = obj.get("config")
    if not isinstance(config, dict):
        raise IndexFormatError(
            f"{source}: a LitData index whose 'config' is not an object: the file is corrupt"
        )
    loader = config.get("item_loader") or "PyTreeLoader"
    if loader != "PyTreeLoader":
        raise IndexFormatError(
            f"{source}: LitData item_loader {loader!r} is not read by shardflow (only PyTreeLoader, the "
            "default of litdata.optimize); write the dataset without item_loader=, or convert it to MDS"
        )
    if config.get("encryption"):
        raise IndexFormatError(f"{source}: the LitData chunks are encrypted, which shardflow does not read")
    compression = config.get("compression")
    level = config.get("compression_level") or "chunk"
    if compression is not None and (not isinstance(compression, str) or compression.split(":")[0] != "zstd"):
        raise IndexFormatError(f"{source}: LitData compression {compression!r} is not read (zstd is)")
    if level not in _LEVELS:
        raise IndexFormatError(f"{source}: LitData compression_level {level!r} is unknown; known: {_LEVELS}")
    fields = {
        "data_format": config.get("data_format"),
        "data_spec": config.get("data_spec"),
        "in_file_zstd": level if compression and level != "chunk" else None,
        "whole_file_zstd": bool(compression) and level == "chunk",
    }
    if not isinstance(fields["data_format"], list) or not isinstance(fields["data_spec"], str):
        raise IndexFormatError(f"{source}: the LitData config has no data_format list or data_spec string")
    try:
        _Sample(fields["data_format"], fields["data_spec"])
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise IndexFormatError(
            f"{source}: cannot read these LitData samples: {exc}. Leaf formats read: {_SUPPORTED}"
        ) from None
    return fields


def litdata_entries(
    obj: dict[str, Any], source: str, sizes: Mapping[str, int] | None = None
) -> list[dict[str, Any]]:
    """The shard entries (format ``litdata``, one per chunk) of a parsed LitData ``index.json``.

    A chunk compressed whole (``compression_level`` ``chunk``: ``*.zstd.bin``) becomes an entry with
    ``compression`` ``zstd``: the cache inflates it beside itself (as ``*.bin``) like a compressed MDS shard.

    Args:
        obj: The parsed index (see :func:`is_litdata_index`).
        source: Where it came from, for messages.
        sizes: Each chunk file's size by name (a listing of the folder): needed for chunks compressed
            whole, whose index records only their inflated size.

    Raises:
        IndexFormatError: The index is not LitData's, or its samples use an item loader, encryption,
            compression, pytree node or leaf format shardflow does not read, or ``sizes`` lacks a chunk
            compressed whole; the message says which.
    """
    if not is_litdata_index(obj):
        raise IndexFormatError(f"{source}: not a LitData index (it has no 'chunks' and 'config')")
    fields = _config(obj, source)
    whole = fields.pop("whole_file_zstd")
    chunks = obj["chunks"]
    if not isinstance(chunks, list):
        raise IndexFormatError(f"{source}: the LitData index's 'chunks' is not a list")
    entries = []
    for number, chunk in enumerate(chunks):
        try:
            name, size, samples = chunk["filename"], chunk["chunk_bytes"], chunk["chunk_size"]
        except (KeyError, TypeError):
            raise IndexFormatError(
                f"{source}: chunk {number} lacks filename, chunk_bytes or chunk_size: the index is corrupt"
            ) from None
        entry = {
            "version": INDEX_VERSION,
            "format": LITDATA_FORMAT.name,
            "samples": samples,
            "raw_data": {"basename": name, "bytes": size, "hashes": {}},
            "compression": None,
            "hashes": [],
            "size_limit": None,
            "litdata": fields,
        }
        if whole:
            if sizes is None or name not in sizes:
                raise IndexFormatError(
                    f"{source}: chunk {name} is compressed whole and the index does not record its size; "
                    "pass the chunk files' sizes (a listing of the folder)"
                )
            raw_name = name[: -len(".zstd.bin")] + ".bin" if name.endswith(".zstd.bin") else name + ".raw"
            entry["compression"] = "zstd"
            entry["raw_data"] = {"basename": raw_name, "bytes": size, "hashes": {}}
            entry["zip_data"] = {"basename": name, "bytes": sizes[name], "hashes": {}}
        entries.append(entry)
    return entries


# -- chunks --------------------------------------------------------------------------------------------------


class LitDataChunk:
    """One open chunk: its items' bytes (the map, or the inflated frames) and their offsets."""

    def __init__(self, path: Path, data: Any, plan: LitDataPlan) -> None:
        self.path = path
        self._map = data
        self._decode = plan.sample
        level, samples = plan.entry["litdata"].get("in_file_zstd"), plan.entry["samples"]
        try:
            if level == "batch":
                self._items, self._offsets = _inflate_frames(data, samples)
            else:
                if bytes(data[:8]) == _FRAMED_MAGIC:
                    raise ValueError("it is a framed zstd chunk, but its index says it is not")
                self._items = data
                self._offsets = _offsets(self._items, samples)
        except (ValueError, struct.error) as exc:
            raise ShardFormatError(
                f"{path} is corrupt or does not match its index: {exc}; copy it again"
            ) from None
        self._sample_zstd = level == "sample"

    def get(self, i: int) -> dict[str, Any]:
        """Sample ``i``, decoded as LitData gives it."""
        item = self._items[self._offsets[i] : self._offsets[i + 1]]
        try:
            if self._sample_zstd:
                item = decompress("zstd", item)
            return self._decode(item)
        except (ValueError, struct.error, UnicodeDecodeError, IndexError) as exc:
            raise ShardFormatError(
                f"{self.path}: sample {i} cannot be decoded ({exc}): the file is corrupt"
            ) from None

    def close(self) -> None:
        """Unmap the chunk and drop what was inflated."""
        self._items = b""
        if hasattr(self._map, "close"):
            self._map.close()


def _offsets(data: Any, samples: int) -> list[int]:
    """The item offsets of a plain chunk, checked against ``samples`` and the data's size."""
    (count,) = struct.unpack_from("<I", data, 0)
    if count != samples:
        raise ValueError(f"it holds {count} items, its index says {samples}")
    offsets = np.frombuffer(data, np.uint32, samples + 1, 4).astype(np.int64)
    _check_offsets(offsets, 4 * (samples + 2), len(data))
    return offsets.tolist()


def _check_offsets(offsets: np.ndarray, first_min: int, size: int) -> None:
    if offsets[0] < first_min or offsets[-1] > size or bool(np.any(offsets[1:] < offsets[:-1])):
        raise ValueError("its item offsets are out of order or out of the file")


def _inflate_frames(data: Any, samples: int) -> tuple[bytes, list[int]]:
    """The items of a framed (``batch``) chunk, inflated into one buffer, and their offsets there."""
    magic, version, _, count, _, frames = _FRAMED_PREFIX.unpack_from(data, 0)
    if magic != _FRAMED_MAGIC or version != 1:
        raise ValueError("it lacks the LDFZ01 header of a framed zstd chunk (version 1)")
    if count != samples:
        raise ValueError(f"it holds {count} items, its index says {samples}")
    at = _FRAMED_PREFIX.size
    offsets = np.frombuffer(data, np.uint32, count + 1, at).astype(np.int64)
    at += 4 * (count + 1)
    parts = []
    for _ in range(frames):
        _, _, start, length, raw_length = _FRAME.unpack_from(data, at)
        at += _FRAME.size
        part = decompress("zstd", data[start : start + length])
        if len(part) != raw_length:
            raise ValueError(f"a frame inflates to {len(part)} bytes, its table says {raw_length}")
        parts.append(part)
    items = b"".join(parts)
    _check_offsets(offsets, 0, len(items))
    return items, offsets.tolist()


class LitDataPlan:
    """How to read one chunk, worked out once from its entry."""

    def __init__(self, entry: dict[str, Any], index_path: Path) -> None:
        self.entry = entry
        fields = entry["litdata"]
        try:
            self.sample = _Sample(fields["data_format"], fields["data_spec"])
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise IndexFormatError(
                f"{index_path}: chunk {entry['raw_data']['basename']}: cannot read these LitData samples: "
                f"{exc}"
            ) from None
        self.columns = dict.fromkeys(self.sample.keys, "litdata")
        self.unsafe_columns = self.sample.unsafe

    def open(self, root: Path, validate_hash: str | None, populate: bool = False) -> LitDataChunk:
        """Map the chunk under ``root`` (inflated beside itself first when compressed whole) and check its
        item table."""
        entry = self.entry
        info = entry["raw_data"]
        path = prepare_file(root, info, entry.get("zip_data"), entry.get("compression"), validate_hash)
        return LitDataChunk(path, map_file(path, info, populate), self)


class LitDataFormat(ShardFormat):
    """LitData chunks, one shard per chunk file; entries come from :func:`litdata_entries`, which keeps the
    LitData config a chunk needs under ``litdata`` (``data_format``, ``data_spec``, and ``in_file_zstd``:
    None, ``batch`` or ``sample``). No capabilities: samples are decoded one by one."""

    name = "litdata"
    file_keys = ("raw_data", "zip_data")

    @property
    def label(self) -> str:
        return "a LitData chunk"

    def check_entry(self, entry: dict[str, Any], check: IndexChecker, where: str) -> None:
        fields = check.field(entry, "litdata", where, (dict,))
        check.string_list(fields, "data_format", where)
        check.field(fields, "data_spec", where, (str,))
        if fields.get("in_file_zstd") not in (None, "batch", "sample"):
            raise check.fail(
                where, f"litdata in_file_zstd {fields.get('in_file_zstd')!r} is not null, batch or sample"
            )
        if entry.get("compression") not in (None, "zstd"):
            raise check.fail(
                where, f"compression {entry['compression']!r}: a LitData chunk is compressed with zstd"
            )

    def plan(self, entry: dict[str, Any], index_path: Path) -> LitDataPlan:
        return LitDataPlan(entry, index_path)


LITDATA_FORMAT = LitDataFormat()
