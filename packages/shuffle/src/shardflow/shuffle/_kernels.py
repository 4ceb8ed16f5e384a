"""The jitted shuffle kernels: per-canonical-node tables, each algorithm's order built one chunk at a time.

The reference's algorithms (``naive``, ``py1s``, ...) are built by ``_exact`` into tables of ids per
canonical node, which the kernels here copy from. Below, the ``*_fast`` variants, shardflow's own orders:

Each algorithm orders a canonical node's positions chunk by chunk, and every chunk is a pure function of
(seed, epoch, node, chunk), so a worker builds only the chunks that hold its positions, one at a time, in
O(chunk) memory, and gets exactly what the whole-epoch computation gets:

* ``naive_fast`` (chunk: the canonical node): each node owns a fixed, spread-out set of samples (a random
  affine map of the sample space, fixed per run); the node's samples are shuffled every epoch.
* ``py1s_fast`` (chunk: a span): spans in epoch order; the samples of each span are shuffled.
* ``py2s_fast`` (chunk: a span): like ``py1s_fast``, but each unit is shuffled once per run before it is
  cut into spans, so a span holds a random, fixed subset of its unit.
* ``py1br_fast`` (chunk: a block): spans in epoch order, cut into blocks of random size in
  ``[0.75, 1.25) * block_size`` (the first one staggered per node); each block is shuffled.
* ``py1e_fast`` (chunk: a mixing window): the samples of each span are spread over a window of random size in
  ``[0.75, 1.25) * block_size`` centred on the span, as the reference does, but the spreading moves tiles
  of ``2**tile_bits`` samples (at most ``block_size / 256``) instead of single samples, which go through
  a random affine order of their span first; then aligned windows of 64 tiles (staggered per node) are
  shuffled. Tables hold ``samples / tile`` entries per node; with a ``block_size`` under 512 tiles are
  single samples, spread one by one as in the reference (then mixed 64 at a time).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from shardflow.shuffle._jit import in_threads, jit
from shardflow.shuffle._memory import empty_int64
from shardflow.shuffle._random import (
    KEY_NAIVE_RUN,
    KEY_NODE,
    KEY_SPAN,
    KEY_SPAN_WINDOW,
    KEY_UNIT_RUN,
    NODE_BLOCK_SIZES,
    NODE_CHUNKS,
    NODE_PHASE,
    NODE_TILES,
    derive_key,
    node_stream_key,
    random_affine,
    random_below,
    random_fraction,
    shuffle_in_place,
)

__all__ = [
    "NO_SHUFFLE",
    "ALGO_CODES",
    "FIRST_EXACT",
    "Shuffler",
    "UnitMap",
    "tile_bits_for",
    "build_node_tables",
    "chunk_capacity",
    "materialize_all",
    "lookup",
]

NO_SHUFFLE = 0
# The reference's orders (``_exact``: tables built per canonical node), then shardflow's own fast ones.
ALGO_CODES = {
    "naive": 6,
    "py1s": 7,
    "py2s": 8,
    "py1br": 9,
    "py1e": 10,
    "naive_fast": 1,
    "py1s_fast": 2,
    "py2s_fast": 3,
    "py1br_fast": 4,
    "py1e_fast": 5,
}
_NAIVE, _PY1S, _PY2S, _PY1BR, _PY1E = 1, 2, 3, 4, 5
FIRST_EXACT = 6
_EXACT_CHUNK = 1 << 16  # positions copied from an exact table at a time

_MIX_TILES_BITS = 6  # py1e shuffles aligned windows of 2**6 tiles


class Shuffler(NamedTuple):
    """Everything the kernels need for one epoch of one algorithm (built by ``shuffle.make_shuffler``)."""

    algo: int
    block_size: int
    tile_bits: int
    keys: np.ndarray  # uint64, by slot (KEY_*): _random.epoch_keys
    unit_start: np.ndarray  # position of each unit in the unshuffled sample space, then the total
    bounds: np.ndarray
    node_span: np.ndarray
    span_unit: np.ndarray
    span_offset: np.ndarray
    span_length: np.ndarray
    span_slot: np.ndarray
    unit_size: np.ndarray
    node_table: np.ndarray  # node c's entries: table[node_table[c]:node_table[c + 1]]
    table: np.ndarray  # exact: the ids at the node's positions; py1br_fast: block starts; py1e_fast: tiles
    node_phase: np.ndarray  # py1e: where the first whole mixing window starts


class UnitMap(NamedTuple):
    """How the ``local``-th sample of unit ``u`` becomes an output id.

    ``base[u] + local`` when ``table_start[u] < 0``, else ``base[u] + table[table_start[u] + local]``
    (the partial repeat of a resampled shard: its chosen samples, sorted, as the reference's
    ``resample_streams``). ``identity`` is 1 when ``base`` is the units' start and no table is used,
    so that ids need no unit lookup.
    """

    base: np.ndarray
    table_start: np.ndarray
    table: np.ndarray
    identity: int


def tile_bits_for(block_size: int) -> int:
    """log2 of py1e's tile: the largest power of two not above ``block_size / 256`` (at least 1)."""
    return max(0, int(block_size // 256).bit_length() - 1)


@jit
def _node_key(shuffler: Shuffler, node: int, stream: int) -> np.uint64:
    return node_stream_key(shuffler.keys[KEY_NODE], node, stream)


@jit
def _window_bounds(block_size: int) -> tuple:
    low = max(1, np.int64(0.75 * block_size))
    high = max(low + 1, np.int64(1.25 * block_size))
    return low, high


@jit
def _find(sorted_starts: np.ndarray, begin: int, end: int, value: int) -> int:
    """The last index ``i`` in ``[begin, end)`` with ``sorted_starts[i] <= value``."""
    low = begin
    high = end - 1
    while low < high:
        middle = (low + high + 1) >> 1
        if sorted_starts[middle] <= value:
            low = middle
        else:
            high = middle - 1
    return low


@jit
def _node_size(shuffler: Shuffler, node: int) -> int:
    return shuffler.bounds[node + 1] - shuffler.bounds[node]


@jit
def _mul_mod(a: int, b: int, modulus: int) -> int:
    """``a * b % modulus`` for ``0 <= a < 2**31`` and ``0 <= b < modulus < 2**62``, without overflow."""
    if b < (np.int64(1) << 32):
        return a * b % modulus
    result = 0
    addend = b % modulus
    while a:
        if a & 1:
            result = (result + addend) % modulus
        addend = (addend << 1) % modulus
        a >>= 1
    return result


@jit
def _py1br_blocks(size: int, block_size: int, node_key: np.uint64, out: np.ndarray) -> int:
    """Write the block starts of one canonical node into ``out`` (when not empty); return their count."""
    low, high = _window_bounds(block_size)
    stagger = random_below(node_key, 0, low) if low > 1 else 0
    count = 0
    start = 0
    while start < size:
        if out.shape[0]:
            out[count] = start
        block = low + random_below(node_key, count + 1, high - low)
        if count == 0:
            block -= stagger
        start += block
        count += 1
    return count


@jit
def _py1e_tiles(shuffler: Shuffler, node: int, out: np.ndarray) -> bool:
    """Write the tiles of one canonical node in their output order; return whether a span beat its window."""
    tile = np.int64(1) << shuffler.tile_bits
    size = _node_size(shuffler, node)
    num_tiles = out.shape[0]
    low, high = _window_bounds(shuffler.block_size)
    window_key = shuffler.keys[KEY_SPAN_WINDOW]
    tile_key = _node_key(shuffler, node, NODE_TILES)
    sort_keys = np.empty(num_tiles, np.float64)
    span = shuffler.node_span[node]
    oversized = False
    for j in range(num_tiles):
        begin = j * tile
        while shuffler.span_slot[span] + shuffler.span_length[span] <= begin:
            span += 1
        length = min(tile, size - begin)
        if length < tile:
            sort_keys[j] = np.inf  # a short last tile stays last, so that tiles keep aligned offsets
            continue
        window = low + random_below(window_key, span, high - low)
        cutoff = (window - shuffler.span_length[span]) / 2.0
        if cutoff < 0:
            cutoff = 0.0
            oversized = True
        lower = max(-cutoff, -np.float64(begin))
        upper = min(cutoff, np.float64(size - begin - length))
        sort_keys[j] = begin + lower + random_fraction(tile_key, j) * (upper - lower)
    out[:] = np.argsort(sort_keys, kind="mergesort")
    return oversized


@jit
def _build_node_tables(shuffler: Shuffler, touched: np.ndarray) -> tuple:
    num_nodes = shuffler.bounds.shape[0] - 1
    tile = np.int64(1) << shuffler.tile_bits
    node_table = np.zeros(num_nodes + 1, np.int64)
    for node in range(num_nodes):
        extra = 0
        if touched[node]:
            size = _node_size(shuffler, node)
            if shuffler.algo == _PY1BR:
                extra = _py1br_blocks(
                    size,
                    shuffler.block_size,
                    _node_key(shuffler, node, NODE_BLOCK_SIZES),
                    np.empty(0, np.int64),
                )
            elif shuffler.algo == _PY1E:
                extra = (size + tile - 1) // tile
        node_table[node + 1] = node_table[node] + extra
    table = np.empty(node_table[num_nodes], np.int64)
    node_phase = np.zeros(num_nodes, np.int64)
    oversized = False
    for node in range(num_nodes):
        if not touched[node]:
            continue
        part = table[node_table[node] : node_table[node + 1]]
        if shuffler.algo == _PY1BR:
            _py1br_blocks(
                _node_size(shuffler, node),
                shuffler.block_size,
                _node_key(shuffler, node, NODE_BLOCK_SIZES),
                part,
            )
        elif shuffler.algo == _PY1E:
            oversized |= _py1e_tiles(shuffler, node, part)
            mix = np.int64(1) << (shuffler.tile_bits + _MIX_TILES_BITS)
            node_phase[node] = random_below(_node_key(shuffler, node, NODE_PHASE), 0, mix)
    return node_table, table, node_phase, oversized


def build_node_tables(shuffler: Shuffler, touched: np.ndarray) -> tuple[Shuffler, bool]:
    """Fill the tables of the canonical nodes marked in ``touched``; also say if a span beat py1e's window."""
    node_table, table, node_phase, oversized = _build_node_tables(shuffler, touched)
    return shuffler._replace(node_table=node_table, table=table, node_phase=node_phase), bool(oversized)


@jit
def _chunk_of(shuffler: Shuffler, node: int, x: int) -> tuple:
    """The chunk (start, stop, index) that holds position ``x`` of canonical node ``node``."""
    algo = shuffler.algo
    size = _node_size(shuffler, node)
    if algo >= FIRST_EXACT:
        start = x - x % _EXACT_CHUNK
        return start, min(start + _EXACT_CHUNK, size), 0
    if algo == _PY1S or algo == _PY2S:
        span = _find(shuffler.span_slot, shuffler.node_span[node], shuffler.node_span[node + 1], x)
        return shuffler.span_slot[span], shuffler.span_slot[span] + shuffler.span_length[span], span
    if algo == _PY1BR:
        begin = shuffler.node_table[node]
        end = shuffler.node_table[node + 1]
        block = _find(shuffler.table, begin, end, x)
        stop = shuffler.table[block + 1] if block + 1 < end else size
        return shuffler.table[block], stop, block - begin
    if algo == _PY1E:
        phase = shuffler.node_phase[node]
        if x < phase:
            return 0, min(phase, size), 0
        mix_bits = shuffler.tile_bits + _MIX_TILES_BITS
        window = ((x - phase) >> mix_bits) + 1
        start = phase + ((window - 1) << mix_bits)
        return start, min(start + (np.int64(1) << mix_bits), size), window
    return 0, size, 0


@jit
def _emit_run(units: UnitMap, unit: int, first: int, out: np.ndarray) -> None:
    """Write the ids of samples ``first, first + 1, ...`` of ``unit`` into ``out``.

    Called once per run of samples: a call that passes arrays costs a reference count, too much per sample.
    """
    base = units.base[unit]
    start = units.table_start[unit]
    if start >= 0:
        for i in range(out.shape[0]):
            out[i] = base + units.table[start + first + i]
    else:
        for i in range(out.shape[0]):
            out[i] = base + first + i


@jit
def _emit_positions(shuffler: Shuffler, units: UnitMap, values: np.ndarray) -> None:
    """Replace positions of the unshuffled sample space by their ids, in place."""
    if units.identity:
        return
    unit_start = shuffler.unit_start
    base = units.base
    table_start = units.table_start
    table = units.table
    last = unit_start.shape[0] - 1
    for i in range(values.shape[0]):
        position = values[i]
        low = 0
        high = last - 1
        while low < high:  # the last unit that starts at or before position
            middle = (low + high + 1) >> 1
            if unit_start[middle] <= position:
                low = middle
            else:
                high = middle - 1
        local = position - unit_start[low]
        if table_start[low] >= 0:
            local = table[table_start[low] + local]
        values[i] = base[low] + local


@jit
def _fill_slots(shuffler: Shuffler, units: UnitMap, node: int, slot: int, out: np.ndarray) -> None:
    """Write the ids of ``len(out)`` consecutive slots of a node in span order, from ``slot`` on."""
    span = _find(shuffler.span_slot, shuffler.node_span[node], shuffler.node_span[node + 1], slot)
    index = slot - shuffler.span_slot[span]
    n = 0
    while n < out.shape[0]:
        run = min(out.shape[0] - n, shuffler.span_length[span] - index)
        _emit_run(units, shuffler.span_unit[span], shuffler.span_offset[span] + index, out[n : n + run])
        n += run
        span += 1
        index = 0


@jit
def _fill_tiles(shuffler: Shuffler, units: UnitMap, node: int, start: int, out: np.ndarray) -> None:
    """py1e: write the ids at positions ``start:start + len(out)`` of the tile order (before mixing)."""
    tile_bits = shuffler.tile_bits
    tile_size = np.int64(1) << tile_bits
    tiles = shuffler.table[shuffler.node_table[node] : shuffler.node_table[node + 1]]
    n = 0
    position = start
    while n < out.shape[0]:
        rank = position >> tile_bits
        within = position - (rank << tile_bits)
        slot = (tiles[rank] << tile_bits) + within
        count = min(tile_size - within, out.shape[0] - n)
        span = _find(shuffler.span_slot, shuffler.node_span[node], shuffler.node_span[node + 1], slot)
        index = slot - shuffler.span_slot[span]
        while count:
            length = shuffler.span_length[span]
            run = min(count, length - index)
            step, first = random_affine(length, derive_key(shuffler.keys[KEY_SPAN], span))
            value = (step * index + first) % length
            unit = shuffler.span_unit[span]
            offset = shuffler.span_offset[span]
            base = units.base[unit]
            start = units.table_start[unit]
            for _ in range(run):
                local = offset + value
                out[n] = base + (units.table[start + local] if start >= 0 else local)
                n += 1
                value += step
                if value >= length:
                    value -= length
            count -= run
            position += run
            span += 1
            index = 0


@jit
def _materialize(
    shuffler: Shuffler,
    units: UnitMap,
    node: int,
    start: int,
    stop: int,
    chunk: int,
    out: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """Write the ids at positions ``start:stop`` of canonical node ``node`` (one whole chunk) into ``out``."""
    algo = shuffler.algo
    if algo >= FIRST_EXACT:  # ids already in the node's table
        first = shuffler.node_table[node]
        out[:] = shuffler.table[first + start : first + stop]
        return
    chunk_key = derive_key(_node_key(shuffler, node, NODE_CHUNKS), chunk)
    if algo == NO_SHUFFLE:
        for i in range(stop - start):
            out[i] = shuffler.bounds[node] + start + i
        _emit_positions(shuffler, units, out)
        return
    if algo == _NAIVE:
        total = shuffler.unit_start[shuffler.unit_start.shape[0] - 1]
        step, first = random_affine(total, shuffler.keys[KEY_NAIVE_RUN])
        value = (_mul_mod(step, shuffler.bounds[node], total) + first) % total
        for i in range(stop - start):
            out[i] = value
            value += step
            if value >= total:
                value -= total
        shuffle_in_place(out, chunk_key)
        _emit_positions(shuffler, units, out)
        return
    if algo == _PY1S or algo == _PY2S:
        span = chunk
        unit = shuffler.span_unit[span]
        local = out
        if algo == _PY2S:
            size = shuffler.unit_size[unit]
            whole = scratch[:size]
            for i in range(size):
                whole[i] = i
            shuffle_in_place(whole, derive_key(shuffler.keys[KEY_UNIT_RUN], unit))
            offset = shuffler.span_offset[span]
            for i in range(stop - start):
                local[i] = whole[offset + i]
        else:
            for i in range(stop - start):
                local[i] = shuffler.span_offset[span] + i
        shuffle_in_place(local, derive_key(shuffler.keys[KEY_SPAN], span))
        base = units.base[unit]
        first = units.table_start[unit]
        for i in range(stop - start):
            out[i] = base + (units.table[first + local[i]] if first >= 0 else local[i])
        return
    if algo == _PY1BR:
        _fill_slots(shuffler, units, node, start, out)
    else:
        _fill_tiles(shuffler, units, node, start, out)
    shuffle_in_place(out, chunk_key)


@jit
def _materialize_nodes(
    shuffler: Shuffler, units: UnitMap, ids: np.ndarray, scratch: np.ndarray, first: int, stop: int
) -> None:
    for node in range(first, stop):
        base = shuffler.bounds[node]
        size = _node_size(shuffler, node)
        x = 0
        while x < size:
            start, stop, chunk = _chunk_of(shuffler, node, x)
            _materialize(shuffler, units, node, start, stop, chunk, ids[base + start : base + stop], scratch)
            x = stop


@jit
def _lookup(
    shuffler: Shuffler,
    units: UnitMap,
    positions: np.ndarray,
    order: np.ndarray,
    out: np.ndarray,
    buffer: np.ndarray,
    scratch: np.ndarray,
) -> None:
    if shuffler.algo == NO_SHUFFLE:
        for i in range(positions.shape[0]):
            out[i] = max(positions[i], 0)  # -1 has no unit: looked up as 0, restored below
        _emit_positions(shuffler, units, out)
        for i in range(positions.shape[0]):
            if positions[i] < 0:
                out[i] = -1
        return
    low = 0
    high = 0  # the chunk in ``buffer`` holds positions [low, high)
    for i in order:
        position = positions[i]
        if position < 0:
            out[i] = -1
            continue
        if not low <= position < high:
            node = _find(shuffler.bounds, 0, shuffler.bounds.shape[0] - 1, position)
            base = shuffler.bounds[node]
            start, stop, chunk = _chunk_of(shuffler, node, position - base)
            _materialize(shuffler, units, node, start, stop, chunk, buffer[: stop - start], scratch)
            low = base + start
            high = base + stop
        out[i] = buffer[position - low]


def chunk_capacity(shuffler: Shuffler) -> tuple[int, int]:
    """Sizes of the chunk buffer and of the scratch buffer (a whole unit, for py2s) that lookups need."""
    algo = shuffler.algo
    node_sizes = np.diff(shuffler.bounds)
    if algo >= FIRST_EXACT:
        chunk = _EXACT_CHUNK
    elif algo == ALGO_CODES["naive_fast"]:
        chunk = int(node_sizes.max())
    elif algo in (ALGO_CODES["py1s_fast"], ALGO_CODES["py2s_fast"]):
        chunk = int(shuffler.span_length.max(initial=0))
    elif algo == ALGO_CODES["py1br_fast"]:
        chunk = int(1.25 * shuffler.block_size) + 1
    elif algo == ALGO_CODES["py1e_fast"]:
        chunk = 1 << (shuffler.tile_bits + _MIX_TILES_BITS)
    else:
        chunk = 0
    scratch = int(shuffler.unit_size.max(initial=0)) if algo == ALGO_CODES["py2s_fast"] else 0
    return min(chunk, int(node_sizes.max())), scratch


def materialize_all(shuffler: Shuffler, units: UnitMap) -> np.ndarray:
    """The id at every position of the epoch (all canonical node tables must be built)."""
    if shuffler.algo >= FIRST_EXACT:  # every node built: the table is the epoch, in position order
        return shuffler.table
    ids = empty_int64(int(shuffler.bounds[-1]))
    scratch = chunk_capacity(shuffler)[1]

    def materialize(first: int, stop: int) -> None:  # canonical nodes first to stop - 1, own scratch
        _materialize_nodes(shuffler, units, ids, np.empty(scratch, np.int64), first, stop)

    in_threads(shuffler.bounds.shape[0] - 1, materialize)
    return ids


def lookup(shuffler: Shuffler, units: UnitMap, positions: np.ndarray) -> np.ndarray:
    """The id at each of ``positions`` (-1 stays -1), building each needed chunk once, in O(chunk) memory
    (the exact algorithms: a gather from the node tables, which are in memory already).

    The tables of every canonical node that holds one of the positions must be built.
    """
    positions = np.ascontiguousarray(positions, np.int64)
    if shuffler.algo == NO_SHUFFLE and units.identity:  # ids are the positions: no kernel to load or run
        return positions.copy()
    if shuffler.algo >= FIRST_EXACT:  # the ids are in the node tables: a gather, no kernel to compile
        return _table_lookup(shuffler, positions)
    order = np.argsort(positions, kind="stable")
    out = np.empty_like(positions)
    chunk, scratch = chunk_capacity(shuffler)
    _lookup(shuffler, units, positions, order, out, np.empty(chunk, np.int64), np.empty(scratch, np.int64))
    return out


def _table_lookup(shuffler: Shuffler, positions: np.ndarray) -> np.ndarray:
    """``lookup`` for the exact algorithms, in numpy: the table entry of each position's canonical node.

    Done without ``_lookup`` so that a cold process compiles none of the fast algorithms' kernels (about
    4 s of numba's time; see the README's "Cold start").
    """
    out = np.full_like(positions, -1)
    valid = positions >= 0
    wanted = positions[valid]
    node = np.searchsorted(shuffler.bounds[:-1], wanted, side="right") - 1
    out[valid] = shuffler.table[shuffler.node_table[node] + wanted - shuffler.bounds[node]]
    return out
