"""Dataset writers: MDS (byte-compatible with mosaicml-streaming), JSONL, and CSV/TSV/XSV shards."""

from __future__ import annotations

import json
import logging
import operator
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from shardflow.format._atomic import temp_path
from shardflow.format._layout import head_chunks, header_size
from shardflow.format._text_encodings import get_text_type
from shardflow.format._write_files import HashingFile, SizeLog
from shardflow.format._write_shard import ShardWriter, config_field
from shardflow.format.encodings import Codec, get_codec
from shardflow.format.errors import (
    EncodingError,
    EncodingTypeError,
    SampleKeysError,
    ShardTooLargeError,
    UnknownEncodingError,
    UnknownNameError,
)
from shardflow.format.upload import Out

__all__ = ["MDSWriter", "JSONWriter", "XSVWriter", "CSVWriter", "TSVWriter"]

logger = logging.getLogger(__name__)

_WRITER_ARGS = """
        out: The dataset folder; or a remote URL (written through a local temporary folder and uploaded,
            see :mod:`shardflow.format.upload`); or a ``(local folder, remote URL)`` pair.
        keep_local: With a remote ``out``, keep the local files after uploading them.
        compression: Compress every shard file, e.g. ``'zstd'`` or ``'zstd:7'``; only the compressed
            files are kept, as the reference does. ``None`` keeps raw files.
        hashes: Hash algorithms recorded in the index for every file (e.g. ``['sha1', 'xxh64']``).
        size_limit: Start a new shard before one would exceed this many bytes (an int, or a string like
            ``'64mb'``); ``None`` for a single shard. A shard never reaches 4 GiB whatever this says.
        **kwargs: ``progress_bar`` (bool: show a tqdm bar of bytes written, and ask the uploader for
            one), ``max_workers`` and ``retry`` (passed to the uploader), ``exist_ok`` (bool: replace the
            dataset in a non-empty folder instead of raising; files that are not the dataset's stay),
            ``mode`` (``'create'``, the default, or ``'append'``: add shards to the dataset in ``out``,
            whose format and columns must match). Another name raises UnknownArgumentError, both a
            ``TypeError`` and a ``ValueError``.

    Raises:
        EncodingTypeError: From :meth:`write`, for a value of the wrong type (also an ``AttributeError``
            and a ``TypeError``, as mosaicml-streaming raises); other unfit values raise EncodingError.

    The configuration reads under mosaicml-streaming's names (read-only): ``get_config()``, ``columns``,
    ``compression``, ``hashes``, ``size_limit``, ``keep_local``, ``local``, ``remote``, ``shards`` (the
    index entries of the finished shards) and the format's column fields.
"""


def _with_args(cls: type) -> type:
    """Append the arguments every writer shares to the class docstring."""
    cls.__doc__ = (cls.__doc__ or "") + _WRITER_ARGS
    return cls


class _SampleCheck:
    """Finds what is wrong with a sample that failed to encode, for a clear error."""

    def __init__(self, steps: list[tuple[str, str, Callable[[Any], Any]]]) -> None:
        self.steps = steps  # (column name, encoding, function that encodes or checks one value)
        self.names = [name for name, _, _ in steps]

    def error(self, sample: Any, number: int, cause: BaseException | None = None) -> EncodingError:
        where = f"sample {number}"
        if not isinstance(sample, Mapping):
            kind = type(sample).__name__
            return EncodingError(f"{where} is a {kind}; expected a dict with keys {self.names}")
        missing = [name for name in self.names if name not in sample]
        extra = [key for key in sample if key not in self.names]
        if missing or extra:
            return SampleKeysError(
                f"{where} has missing columns {missing} and unexpected keys {extra}; the writer's columns "
                f"are {self.names}: give every sample exactly these keys"
            )
        for name, encoding, encode in self.steps:
            try:
                encode(sample[name])
            except EncodingError as err:  # Located, and of the same class (a wrong type stays one)
                return type(err)(f"column {name!r} ({encoding}) of {where}: {err}")
            except Exception as err:  # Any other failure of a codec becomes a located EncodingError
                return EncodingError(f"column {name!r} ({encoding}) of {where}: {type(err).__name__}: {err}")
        return EncodingError(f"{where} could not be encoded: {cause!r}")


def _resolve_codec(name: str, encoding: str) -> Codec:
    try:
        return get_codec(encoding)
    except UnknownNameError as err:
        raise UnknownEncodingError(f"column {name!r}: {err}") from None


@_with_args
class MDSWriter(ShardWriter):
    """Writes an MDS dataset: binary shards whose bytes and ``index.json`` match mosaicml-streaming's.

    Use it as a context manager, or call :meth:`finish` after the last :meth:`write`::

        with MDSWriter(out='data/train', columns={'id': 'int', 'tokens': 'ndarray:uint16:256'}) as out:
            for sample in samples:
                out.write(sample)

    Args:
        columns: Column name to MDS encoding (see ``get_mds_encodings()``); columns are stored sorted by
            name.
    """

    format = "mds"
    _per_sample = 4
    column_names = config_field("column_names", "The column names, sorted.")
    column_encodings = config_field("column_encodings", "The encoding of each of ``column_names``.")
    column_sizes = config_field("column_sizes", "The fixed byte size of each column's values, or None.")

    def __init__(
        self,
        *,
        columns: dict[str, str],
        out: Out,
        keep_local: bool = False,
        compression: str | None = None,
        hashes: list[str] | None = None,
        size_limit: int | str | None = 1 << 26,
        **kwargs: Any,
    ) -> None:
        if not columns:
            raise ValueError("columns is empty: name at least one column and its encoding")
        names = sorted(columns)
        codecs = [_resolve_codec(name, columns[name]) for name in names]
        self._columns = dict(columns)
        super().__init__(
            out=out,
            columns={
                "column_names": names,
                "column_encodings": [columns[name] for name in names],
                "column_sizes": [codec.size for codec in codecs],
            },
            keep_local=keep_local,
            compression=compression,
            hashes=hashes,
            size_limit=size_limit,
            **kwargs,
        )
        self._config_bytes = json.dumps(self._config, sort_keys=True).encode("utf-8")
        pairs = list(zip(names, codecs, strict=True))
        self._check = _SampleCheck([(name, columns[name], codec.encode) for name, codec in pairs])
        self._steps = [(name, codec.encode) for name, codec in pairs]
        self._width = len(names)
        self._sizes_of = [codec.size for codec in codecs]
        variable = [k + 1 for k, codec in enumerate(codecs) if codec.size is None]  # +1: behind the prefix
        self._variable_sizes = _picker(variable) if variable else None
        self._head = struct.Struct(f"<{len(variable)}I")
        self._fixed_bytes = sum(codec.size for codec in codecs if codec.size is not None)

    def _encode(self, sample: dict[str, Any]) -> bytes:
        try:
            if len(sample) != self._width:
                raise KeyError(len(sample))
            parts = [b""]  # Becomes the sizes of the variable-size values. (A loop beats a comprehension.)
            for name, encode in self._steps:
                parts.append(encode(sample[name]))
        except Exception as err:
            raise self._check.error(sample, self._sample_number(), err) from err
        expected = self._fixed_bytes
        if self._variable_sizes is not None:
            sizes = self._variable_sizes(list(map(len, parts)))
            try:
                parts[0] = self._head.pack(*sizes)
            except struct.error:
                raise ShardTooLargeError(
                    f"sample {self._sample_number()} has a value of 4 GiB or more; MDS sizes are uint32"
                ) from None
            expected += self._head.size + sum(sizes)
        data = b"".join(parts)
        if len(data) != expected:
            raise self._size_error(parts[1:])
        return data

    def _size_error(self, parts: list[bytes]) -> EncodingError:
        """The error for a value whose encoding has the wrong size for a fixed-size column."""
        for (name, encoding, _), size, part in zip(self._check.steps, self._sizes_of, parts, strict=True):
            if size is not None and len(part) != size:
                return EncodingError(
                    f"column {name!r} ({encoding}) of sample {self._sample_number()}: encoded to {len(part)} "
                    f"bytes, but the encoding stores exactly {size}: pass a value of that type and shape"
                )
        return EncodingError(f"sample {self._sample_number()} encoded to an unexpected size")

    def _start_data(self, number: int, first_size: int) -> tuple[HashingFile, int, int]:
        raw, _ = self._basenames(number)
        # The header (sample count, offset table, config) comes first but its size is known only at the
        # end: the samples go behind a hole sized for the count that samples like the first would reach.
        # When the shard ends with that count (every full shard of fixed-size samples), the header fills
        # the hole; otherwise the samples are copied behind the header into a new file.
        base = self._header_size(0)  # The sample count, offsets[0] and the config.
        expected = max(1, (self._size_limit - base) // (first_size + 4)) if self._size_limit else 1
        hole = self._header_size(expected)
        return HashingFile(temp_path(self._local / raw, "samples"), self._hashes, hole), base, 0

    def _header_size(self, count: int) -> int:
        return header_size(count, len(self._config_bytes))

    def _finish_files(self, number: int, data: HashingFile, sizes: SizeLog) -> dict[str, Any]:
        raw_name, zip_name = self._basenames(number)
        count = sizes.count
        header = self._header_size(count)
        try:
            if data.start == header:
                raw, position = data, 0
                for chunk in self._header_chunks(count, header, sizes):
                    raw.write_at(position, chunk)
                    position += len(chunk)
            else:
                logger.debug("shard %d: its %d-byte header does not fill the %d-byte hole: copying the "
                             "samples behind it", number, header, data.start)
                raw = self._copy_behind_header(raw_name, data, self._header_chunks(count, header, sizes))
        except BaseException:
            data.discard()
            raise
        raw_info, zip_info = self._publish(raw, raw_name, zip_name)
        return {"raw_data": raw_info, "zip_data": zip_info}

    def _copy_behind_header(self, raw_name: str, data: HashingFile, header: Iterator[bytes]) -> HashingFile:
        """A new raw file: ``header``, then the samples behind the hole of ``data``, which is deleted."""
        raw = HashingFile(temp_path(self._local / raw_name), self._hashes)
        try:
            for chunk in header:
                raw.write(chunk)
            raw.append_file(data.path, data.start)
        except BaseException:
            raw.discard()
            raise
        data.discard()
        return raw

    def _header_chunks(self, count: int, header: int, sizes: SizeLog) -> Iterator[bytes]:
        """The bytes in front of a shard's samples: sample count, offset table, config."""
        return head_chunks(count, sizes.offsets(header), self._config_bytes)


class _SplitWriter(ShardWriter):
    """A text format: each shard is a data file of lines plus a ``.meta`` file of offsets and config."""

    newline = config_field("newline", "Written after every line.")

    def __init__(self, *, config: dict[str, Any], steps: list[tuple[str, str, type]], **kwargs: Any) -> None:
        super().__init__(columns=config, **kwargs)
        self._config_bytes = json.dumps(self._config, sort_keys=True).encode("utf-8")
        self._check = _SampleCheck([(name, encoding, _type_checker(kind)) for name, encoding, kind in steps])
        self._names = [name for name, _, _ in steps]
        self._types = [(name, kind) for name, _, kind in steps]

    def _header(self) -> bytes:
        """The bytes every data file starts with."""
        return b""

    def _picked(self, sample: dict[str, Any]) -> list[Any]:
        """The sample's values in column order, type-checked."""
        try:
            if len(sample) != len(self._names):
                raise KeyError(len(sample))
            values = [sample[name] for name in self._names]
        except Exception as err:
            raise self._check.error(sample, self._sample_number(), err) from err
        for (_, kind), value in zip(self._types, values, strict=True):
            if not isinstance(value, kind):
                raise self._check.error(sample, self._sample_number())
        return values

    def _start_data(self, number: int, first_size: int) -> tuple[HashingFile, int, int]:
        raw, _ = self._basenames(number)
        data = HashingFile(temp_path(self._local / raw), self._hashes)
        header = self._header()
        data.write(header)
        return data, 0, len(header)

    def _finish_files(self, number: int, data: HashingFile, sizes: SizeLog) -> dict[str, Any]:
        raw_data, zip_data = self._basenames(number)
        raw_meta, zip_meta = self._basenames(number, ".meta")
        files: dict[str, Any] = {}
        files["raw_data"], files["zip_data"] = self._publish(data, raw_data, zip_data)
        meta = HashingFile(temp_path(self._local / raw_meta), self._hashes)
        try:
            for chunk in head_chunks(sizes.count, sizes.offsets(len(self._header())), self._config_bytes):
                meta.write(chunk)
        except BaseException:
            meta.discard()
            raise
        files["raw_meta"], files["zip_meta"] = self._publish(meta, raw_meta, zip_meta)
        return files


def _picker(indices: list[int]) -> Callable[[list[int]], Sequence[int]]:
    """A function that returns the items of a list at ``indices`` (a sequence even for one index)."""
    if len(indices) == 1:
        return operator.itemgetter(slice(indices[0], indices[0] + 1))
    return operator.itemgetter(*indices)


def _type_checker(kind: type) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, kind):
            raise EncodingTypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")

    return check


def _text_steps(columns: dict[str, str], names: list[str]) -> list[tuple[str, str, type]]:
    if not columns:
        raise ValueError("columns is empty: name at least one column and its encoding")
    return [(name, columns[name], get_text_type(columns[name], name)) for name in names]


@_with_args
class JSONWriter(_SplitWriter):
    r"""Writes a JSONL dataset: one JSON object per line, with a ``.meta`` offsets file per shard.

    Args:
        columns: Column name to ``'str'``, ``'int'`` or ``'float'``; values must have that Python type.
        newline: Written after every sample. Defaults to ``'\n'``.
    """

    format = "json"

    def __init__(
        self,
        *,
        columns: dict[str, str],
        newline: str = "\n",
        out: Out,
        keep_local: bool = False,
        compression: str | None = None,
        hashes: list[str] | None = None,
        size_limit: int | str | None = 1 << 26,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            config={"columns": dict(columns), "newline": newline},
            steps=_text_steps(columns, sorted(columns)),
            out=out,
            keep_local=keep_local,
            compression=compression,
            hashes=hashes,
            size_limit=size_limit,
            **kwargs,
        )
        self._columns = dict(columns)
        self._newline = newline

    def _encode(self, sample: dict[str, Any]) -> bytes:
        values = self._picked(sample)
        text = json.dumps(dict(zip(self._names, values, strict=True)), sort_keys=True)
        return (text + self._newline).encode("utf-8")


@_with_args
class XSVWriter(_SplitWriter):
    r"""Writes a delimited-text dataset: a header line, then one line per sample, columns sorted by name.

    Args:
        columns: Column name to ``'str'``, ``'int'`` or ``'float'``; values must have that Python type.
        separator: Put between the values of a line; no name or value may contain it.
        newline: Written after every line. Defaults to ``'\n'``; no name or value may contain it.
    """

    format = "xsv"
    column_names = config_field("column_names", "The column names, sorted.")
    column_encodings = config_field("column_encodings", "The encoding of each of ``column_names``.")

    def __init__(
        self,
        *,
        columns: dict[str, str],
        separator: str,
        newline: str = "\n",
        out: Out,
        keep_local: bool = False,
        compression: str | None = None,
        hashes: list[str] | None = None,
        size_limit: int | str | None = 1 << 26,
        **kwargs: Any,
    ) -> None:
        if not separator or not newline:
            raise ValueError(f"separator={separator!r}, newline={newline!r}: both must be non-empty strings")
        names = sorted(columns)
        for name in names:
            if separator in name or newline in name:
                raise ValueError(f"column name {name!r} contains the separator or the newline")
        config: dict[str, Any] = {"column_names": names, "column_encodings": [columns[n] for n in names]}
        if self.format == "xsv":
            config["separator"] = separator
        config["newline"] = newline
        super().__init__(
            config=config,
            steps=_text_steps(columns, names),
            out=out,
            keep_local=keep_local,
            compression=compression,
            hashes=hashes,
            size_limit=size_limit,
            **kwargs,
        )
        self._columns = dict(columns)
        self._separator = separator
        self._newline = newline

    @property  # CSVWriter and TSVWriter fix it as a class attribute
    def separator(self) -> str:
        """Put between the values of a line."""
        return self._separator

    def _header(self) -> bytes:
        return (self._separator.join(self._names) + self._newline).encode("utf-8")

    def _encode(self, sample: dict[str, Any]) -> bytes:
        texts = [value if isinstance(value, str) else str(value) for value in self._picked(sample)]
        for name, text in zip(self._names, texts, strict=True):
            if self._separator in text or self._newline in text:
                raise EncodingError(
                    f"column {name!r} of sample {self._sample_number()}: {text!r} contains the separator "
                    f"{self._separator!r} or the newline {self._newline!r}, which this format cannot store"
                )
        return (self._separator.join(texts) + self._newline).encode("utf-8")


class _FixedSeparatorWriter(XSVWriter):
    """An XSV writer whose separator is fixed by its format (``separator`` is a class attribute)."""

    separator: str

    def __init__(self, *, columns: dict[str, str], newline: str = "\n", out: Out, **kwargs: Any) -> None:
        super().__init__(columns=columns, separator=self.separator, newline=newline, out=out, **kwargs)


@_with_args
class CSVWriter(_FixedSeparatorWriter):
    r"""Writes a CSV dataset (``,`` separated; values are not quoted, so they may not contain ``,``).

    Args:
        columns: Column name to ``'str'``, ``'int'`` or ``'float'``; values must have that Python type.
        newline: Written after every line. Defaults to ``'\n'``.
    """

    format = "csv"
    separator = ","


@_with_args
class TSVWriter(_FixedSeparatorWriter):
    r"""Writes a TSV dataset (tab separated; values may not contain tabs).

    Args:
        columns: Column name to ``'str'``, ``'int'`` or ``'float'``; values must have that Python type.
        newline: Written after every line. Defaults to ``'\n'``.
    """

    format = "tsv"
    separator = "\t"
