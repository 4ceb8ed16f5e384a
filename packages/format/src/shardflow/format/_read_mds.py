"""The MDS format: its index entries checked, and random access to the samples of one shard through a
memory map and a precomputed column plan."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from shardflow.format._layout import COUNT, header_size, offsets_array, read_count
from shardflow.format._read_files import check_header, check_offsets, map_file, prepare_file, uint32_table
from shardflow.format.encodings import get_codec, get_mds_encoded_size, is_mds_encoding
from shardflow.format.errors import MissingDependencyError, ShardFormatError
from shardflow.format.formats import Capability, ShardFormat

if TYPE_CHECKING:
    from shardflow.format.index import IndexChecker
    from shardflow.format.shards import ShardInfo

__all__ = ["MDS_FORMAT", "MDSFormat", "MDSPlan", "MDSShard"]

# One column step: (name, decode, fixed size or None, index into the sample's size prefix or -1).
_Step = tuple[str, Callable[[Any], Any], "int | None", int]


class MDSPlan:
    """How to decode the samples of one MDS shard, worked out once from its (validated) index entry.

    Args:
        entry: The shard's entry, as :func:`shardflow.format.index.read_index` returns it.
    """

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry
        names: list[str] = entry["column_names"]
        encodings: list[str] = entry["column_encodings"]
        sizes: list[int | None] = entry["column_sizes"]
        codecs = [get_codec(encoding) for encoding in encodings]
        self.unsafe_columns = [name for name, codec in zip(names, codecs, strict=True) if codec.unsafe]
        steps: list[_Step] = []
        num_var = fixed_before = 0
        # Columns get_columns serves: name -> (dtype, shape), and where each column starts in a sample:
        # name -> (bytes of fixed-size columns before it, number of variable-size columns before it).
        self.arrays: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        self.places: dict[str, tuple[int, int]] = {}
        for name, codec, size in zip(names, codecs, sizes, strict=True):
            steps.append((name, codec.decoder(), size, -1 if size is not None else num_var))
            layout = codec.array_layout()
            if layout is not None:
                self.arrays[name] = layout
            self.places[name] = (fixed_before, num_var)
            num_var += size is None
            fixed_before += size or 0
        self.columns: dict[str, str] = dict(zip(names, encodings, strict=True))
        self.header = {"column_names": names, "column_encodings": encodings, "column_sizes": sizes}
        self.steps: tuple[_Step, ...] = tuple(steps)
        self.by_name: dict[str, _Step] = {step[0]: step for step in steps}
        self.num_var = num_var
        self.fixed_total = sum(size for size in sizes if size is not None)
        self.prefix = struct.Struct(f"<{num_var}I")

    def open(self, root: Path, validate_hash: str | None, populate: bool = False) -> MDSShard:
        """Open the shard under ``root``, decompressing and validating it first as needed."""
        entry = self.entry
        raw = entry["raw_data"]
        path = prepare_file(root, raw, entry.get("zip_data"), entry.get("compression"), validate_hash)
        return MDSShard(path, map_file(path, raw, populate), self, entry["samples"])


class MDSShard:
    """The samples of one open MDS shard file.

    Layout: ``uint32 samples``, ``uint32 offsets[samples + 1]``, a JSON header, then each sample as the
    uint32 sizes of its variable-size columns followed by every column's bytes in column order.
    The header is validated when opening; ``get(i)`` expects ``0 <= i < samples``.
    """

    def __init__(self, path: Path, buf: Any, plan: MDSPlan, samples: int) -> None:
        self.path = path
        self._buf = buf
        size = len(buf)
        if size < COUNT.size:
            self._fail(f"it is {size} bytes, too short for a header")
        num = read_count(buf)
        if num != samples:
            self._fail(f"it holds {num} samples but its index says {samples}")
        table_end = header_size(num)
        if table_end > size:
            self._fail(f"its offsets table needs {table_end} bytes but the file has {size}")
        self._table: np.ndarray | None = offsets_array(buf, num)
        check_offsets(path, self._table, table_end, size)
        self._offsets = uint32_table(buf, COUNT.size, num + 1)
        check_header(path, bytes(buf[table_end : self._offsets[0]]), plan.header)
        self._view = memoryview(buf)
        self._bytes: np.ndarray | None = np.frombuffer(buf, np.uint8)
        self._items: dict[int, np.ndarray] = {}  # the file as items of each width _gather used
        self._plan = plan
        self._fixed = self._fixed_steps(plan)
        # The variable-size path's constants, bound once: it reads them for every sample.
        self._steps = plan.steps
        self._head = plan.prefix.size
        self._unpack_sizes = plan.prefix.unpack_from
        self._fixed_total = plan.fixed_total
        self.get: Callable[[int], dict[str, Any]] = self._get_var if plan.num_var else self._get_fixed

    def _fail(self, problem: str) -> NoReturn:
        raise ShardFormatError(f"{self.path} is corrupt or truncated: {problem}; copy it again")

    @staticmethod
    def _fixed_steps(plan: MDSPlan) -> tuple[tuple[str, Callable[[Any], Any], int, int], ...]:
        if plan.num_var:
            return ()
        steps, start = [], 0
        for name, decode, size, _ in plan.steps:
            assert size is not None
            steps.append((name, decode, start, start + size))
            start += size
        return tuple(steps)

    def _get_fixed(self, i: int) -> dict[str, Any]:
        offsets = self._offsets
        begin = offsets[i]
        if offsets[i + 1] - begin != self._plan.fixed_total:
            self._bad_size(i)
        view = self._view
        sample = {}
        try:
            for name, decode, a, b in self._fixed:  # a plain loop: a comprehension costs a frame per call
                sample[name] = decode(view[begin + a : begin + b])
            return sample
        except (MissingDependencyError, MemoryError):
            raise
        except Exception as exc:
            raise self._decode_error(i, exc) from exc

    def _get_var(self, i: int) -> dict[str, Any]:
        offsets = self._offsets
        begin = offsets[i]
        end = offsets[i + 1]
        view = self._view
        head = self._head
        if end - begin < head:
            self._bad_size(i)
        sizes = self._unpack_sizes(view, begin)
        if head + self._fixed_total + sum(sizes) != end - begin:
            self._bad_size(i)
        pos = begin + head
        sample = {}
        try:
            for name, decode, size, var in self._steps:
                stop = pos + (size if var < 0 else sizes[var])  # type: ignore[operator]
                sample[name] = decode(view[pos:stop])
                pos = stop
        except (MissingDependencyError, MemoryError):
            raise
        except Exception as exc:
            raise self._decode_error(i, exc) from exc
        return sample

    def _bad_size(self, i: int) -> NoReturn:
        begin, end = self._offsets[i], self._offsets[i + 1]
        self._fail(f"sample {i} spans {end - begin} bytes, which its column sizes do not add up to")

    def _decode_error(self, i: int, exc: Exception) -> ShardFormatError:
        """Find which column of sample ``i`` fails to decode (slow path, errors only)."""
        plan = self._plan
        pos = self._offsets[i] + plan.prefix.size
        sizes = plan.prefix.unpack_from(self._view, self._offsets[i])
        column = plan.steps[0][0]
        for name, decode, size, var in plan.steps:
            column = name
            stop = pos + (size if var < 0 else sizes[var])  # type: ignore[operator]
            try:
                decode(self._view[pos:stop])
            except Exception:
                break
            pos = stop
        return ShardFormatError(
            f"{self.path}: column {column!r} of sample {i} cannot be decoded ({exc}): the file is corrupt; "
            "copy it again"
        )

    def read(
        self, ids: np.ndarray, arrays: Sequence[str], values: Sequence[str], spans: Sequence[str] = ()
    ) -> tuple[dict[str, np.ndarray], dict[str, list[Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Columns of samples ``ids`` (int64, in range), the samples located once for all three kinds:
        ``arrays`` (all in ``plan.arrays``) as one array each, gathered from the map with numpy fancy
        indexing; ``values`` as one list of decoded values each (only the decode runs per value, the
        same decode as :meth:`get`); ``spans`` as where each value's stored bytes start and end in the
        file (two int64 arrays each, see :meth:`read_spans`)."""
        plan, view, buf = self._plan, self._view, self._buf
        head, before = self._locate(ids)
        gathered = {}
        for name in arrays:
            dtype, shape = plan.arrays[name]
            starts = self._starts(name, head, before)
            width = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
            gathered[name] = self._gather(starts, width).view(dtype).reshape(len(ids), *shape)
        decoded = {}
        for name in values:
            decode = plan.by_name[name][1]
            starts, ends = self._span(name, head, before)
            bounds = zip(starts.tolist(), ends.tolist(), strict=True)
            try:
                # A slice of the map is already the bytes a ``bytes`` column decodes to.
                decoded[name] = (
                    [buf[a:b] for a, b in bounds]
                    if decode is bytes
                    else [decode(view[a:b]) for a, b in bounds]
                )
            except (MissingDependencyError, MemoryError):
                raise
            except Exception as exc:
                raise self._first_decode_error(ids, exc) from exc
        return gathered, decoded, {name: self._span(name, head, before) for name in spans}

    def read_spans(self, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
        """Copies of the file's bytes from each of ``starts`` to the matching ``ends`` (int64 arrays, as
        :meth:`read` locates them)."""
        buf = self._buf
        if self._bytes is None:
            raise ShardFormatError(f"{self.path} was closed while being read")
        if len(starts) != len(ends):
            raise ValueError(f"{len(starts)} span starts but {len(ends)} ends")
        bad = (starts < 0) | (ends < starts) | (ends > len(buf))
        if bad.any():
            k = int(np.argmax(bad))
            raise ValueError(f"span {starts[k]}:{ends[k]} is not within {self.path} ({len(buf)} bytes)")
        return [buf[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]

    def _starts(self, name: str, head: np.ndarray, before: np.ndarray | None) -> np.ndarray:
        """Where column ``name`` of each sample starts, from :meth:`_locate`'s answer."""
        fixed_before, var_before = self._plan.places[name]
        starts = head + fixed_before
        if var_before:
            assert before is not None
            starts += before[:, var_before]
        return starts

    def _span(self, name: str, head: np.ndarray, before: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Where column ``name``'s value of each sample starts and ends, from :meth:`_locate`'s answer."""
        size, var = self._plan.by_name[name][2:]
        starts = self._starts(name, head, before)
        if var < 0:
            return starts, starts + size
        assert before is not None
        return starts, starts + (before[:, var + 1] - before[:, var])

    def _first_decode_error(self, ids: np.ndarray, exc: Exception) -> ShardFormatError:
        """The error of the first of ``ids`` whose sample fails to decode (slow path, errors only)."""
        for i in ids.tolist():
            try:
                self.get(i)
            except ShardFormatError as error:
                return error
        return ShardFormatError(f"{self.path}: a value cannot be decoded ({exc}): the file is corrupt")

    def _locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Where samples ``ids`` start past their size prefix, and the running sums of their
        variable-size columns' sizes (``(len(ids), num_var + 1)``, None without such columns); checks
        that each sample's sizes add up to its span."""
        plan = self._plan
        table = self._table
        if table is None or self._bytes is None:
            raise ShardFormatError(f"{self.path} was closed while being read")
        begin = table[ids].astype(np.int64)
        spans = table[ids + 1].astype(np.int64) - begin
        before: np.ndarray | None = None
        if plan.num_var:
            short = spans < plan.prefix.size
            if short.any():
                self._bad_size(int(ids[np.argmax(short)]))
            sizes = self._gather(begin, plan.prefix.size).view("<u4").astype(np.int64)
            before = np.zeros((len(ids), plan.num_var + 1), np.int64)
            np.cumsum(sizes, axis=1, out=before[:, 1:])
            bad = spans != plan.prefix.size + plan.fixed_total + before[:, -1]
        else:
            bad = spans != plan.fixed_total
        if bad.any():
            self._bad_size(int(ids[np.argmax(bad)]))
        return begin + plan.prefix.size, before

    def _gather(self, starts: np.ndarray, width: int) -> np.ndarray:
        """The ``width`` bytes at each of ``starts``: a new ``(len(starts), width)`` uint8 array.

        The file is viewed as overlapping ``width``-byte items, one starting at every byte (made once per
        width), so that fancy indexing copies each item in one piece.
        """
        items = self._items.get(width)
        if items is None:
            data = self._bytes
            assert data is not None  # _locate checked that the shard is open
            dtype = np.dtype((np.void, width))
            items = np.ndarray((len(data) - width + 1,), dtype, buffer=data, strides=(1,))
            self._items[width] = items
        return items[starts].view(np.uint8).reshape(len(starts), width)

    def close(self) -> None:
        """Unmap the file; decoded samples that still view it keep the map alive until they go."""
        self._view = self._offsets = memoryview(b"")
        self._table = self._bytes = None
        self._items.clear()
        try:
            self._buf.close()
        except BufferError:
            pass  # decoded arrays still view the map: it is unmapped when the last of them goes


class MDSFormat(ShardFormat):
    """MDS shards: one file, every column's encoded bytes per sample (see :class:`MDSShard`)."""

    name = "mds"
    capabilities = frozenset({Capability.COLUMNS, Capability.ARRAYS, Capability.SPANS})

    @property
    def label(self) -> str:
        return "an MDS shard"

    def check_entry(self, entry: dict[str, Any], check: IndexChecker, where: str) -> None:
        names, encodings = check.column_lists(entry, where)
        sizes = check.field(entry, "column_sizes", where, (list,))
        if len(sizes) != len(names):
            raise check.fail(where, f"{len(names)} column_names but {len(sizes)} column_sizes")
        for name, encoding, size in zip(names, encodings, sizes, strict=True):
            if not is_mds_encoding(encoding):
                raise check.fail(where, f"column {name!r} has unknown encoding {encoding!r}")
            if size != get_mds_encoded_size(encoding):
                raise check.fail(
                    where,
                    f"column {name!r} ({encoding}) has size {size!r}, the encoding fixes "
                    f"{get_mds_encoded_size(encoding)!r}",
                )

    def plan(self, entry: dict[str, Any], index_path: Path) -> MDSPlan:
        return MDSPlan(entry)

    def array_columns(self, shard: ShardInfo) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """The columns with a fixed-size number or array encoding (``int``, ``int8`` ... ``float64``,
        ``ndarray:<dtype>:<shape>``)."""
        found = {}
        for name, encoding in shard.columns.items():
            layout = get_codec(encoding).array_layout()
            if layout is not None:
                found[name] = layout
        return found

    def byte_columns(self, shard: ShardInfo) -> dict[str, str]:
        """The ``bytes`` columns: stored as the values themselves."""
        return {name: encoding for name, encoding in shard.columns.items() if encoding == "bytes"}


MDS_FORMAT = MDSFormat()
