"""mosaicml-streaming 0.13's shuffles, draw for draw: the same order from the same arguments, in numba.

Each kernel makes the reference's draws from two numpy generators, ``default_rng(seed)`` (fixed for the
run) and ``default_rng(seed + epoch)`` (this epoch), in the reference's sequence (``_pcg64`` reproduces
numpy's streams), and writes the ids of the canonical nodes marked in ``touched``, node after node, into
one table. Draws of the other nodes are made without building anything (a shuffle's draws without its
swaps; uniform draws are jumped over), so a worker pays O(samples of its canonical nodes) memory and
O(epoch) cheap draws. Values are the epoch's sample ids from the start: a shuffle moves values whatever
they are, so shuffling ids gives the reference's ``small_per_big[shuffle]`` directly.

The sequence of draws (``U`` units, ``C`` canonical nodes, units are the resampled shards' repeats):

* ``naive``: epoch generator, ``permutation`` of all positions.
* ``py1s``: run generator shuffles the units; they are laid end to end and cut at the canonical node
  bounds (``total * c // C``) into spans. Epoch generator: shuffle each node's spans (all nodes), then
  shuffle each span's samples, spans in order.
* ``py2s``: run generator shuffles the units, then each unit's samples (in the units' new order); cut
  into pieces at node bounds. Epoch generator, node by node: shuffle the node's pieces, then each
  piece's samples.
* ``py1br``: spans as ``py1s``; epoch generator: shuffle each node's spans (all nodes), one stagger per
  node ``integers(0, 0.75 b)``, then node by node: block sizes ``integers(0.75 b, 1.25 b)`` until the
  node is covered (the staggered blocks overlap by the stagger, as the reference's do), then shuffle
  each block in place, in order.
* ``py1e``: spans as ``py1s``; epoch generator: shuffle each node's spans (all nodes), then node by
  node: shuffle each span's samples, then per span a window ``integers(0.75 b, 1.25 b)`` and one
  ``uniform`` shift per sample within the window's slack (clipped to the node); the node's samples are
  sorted by position plus shift. The reference's ``argsort`` is numpy's unstable quicksort; this sorts
  stably, bucketing by whole position (O(samples)): equal keys, which need two float sums to round to
  the same double (about one epoch in ten at 100M samples), are the only possible difference.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from shardflow.shuffle._jit import jit
from shardflow.shuffle._pcg64 import (
    advance,
    bounded,
    load,
    next64,
    next_double,
    shuffle_in,
    skip_shuffle_in,
    store,
)

__all__ = ["EXACT_ALGOS", "exact_tables", "block_limits"]

EXACT_ALGOS = ("naive", "py1s", "py2s", "py1br", "py1e")
_NAIVE, _PY1S, _PY2S, _PY1BR, _PY1E = range(5)


def block_limits(block_size: int) -> tuple[int, int]:
    """The reference's block bounds ``int(0.75 * b)``, ``int(1.25 * b)`` (py1br, py1e)."""
    return int(0.75 * block_size), int(1.25 * block_size)


@jit
def _unit_ids(
    base: np.ndarray, table_start: np.ndarray, table: np.ndarray, unit: int, first: int, out: np.ndarray
) -> None:
    """Write the ids of samples ``first, first + 1, ...`` of ``unit`` into ``out``."""
    start = table_start[unit]
    origin = base[unit]
    if start < 0:
        for i in range(out.shape[0]):
            out[i] = origin + first + i
    else:
        for i in range(out.shape[0]):
            out[i] = origin + table[start + first + i]


@jit
def _divide(sizes: np.ndarray, order: np.ndarray, num_nodes: int) -> tuple:
    """The reference's ``divide_spans``: units in ``order`` cut at node bounds, zero-length ones kept.

    Returns each span's unit, offset in the unit and length, and each node's first span.
    """
    total = sizes.sum()
    capacity = order.shape[0] + num_nodes
    unit = np.empty(capacity, np.int64)
    offset = np.empty(capacity, np.int64)
    length = np.empty(capacity, np.int64)
    node_span = np.zeros(num_nodes + 1, np.int64)
    count = 0
    index = 0
    taken = 0  # samples of order[index] already given to earlier nodes
    so_far = 0
    for node in range(num_nodes):
        part_end = total * (node + 1) // num_nodes
        while index < order.shape[0]:
            u = order[index]
            size = sizes[u] - taken
            if part_end < so_far + size:
                if so_far < part_end:
                    split = part_end - so_far
                    unit[count], offset[count], length[count] = u, taken, split
                    count += 1
                    taken += split
                    so_far += split
                break
            unit[count], offset[count], length[count] = u, taken, size
            count += 1
            index += 1
            taken = 0
            so_far += size
        node_span[node + 1] = count
    return unit[:count], offset[:count], length[:count], node_span


@jit
def _node_bounds(total: int, num_nodes: int) -> np.ndarray:
    bounds = np.empty(num_nodes + 1, np.int64)
    for node in range(num_nodes + 1):
        bounds[node] = total * node // num_nodes
    return bounds


@jit
def _spans(sizes: np.ndarray, num_nodes: int, run: np.ndarray, now: np.ndarray) -> tuple:
    """Units shuffled by the run generator and cut into spans; each node's spans shuffled by the epoch's."""
    order = np.arange(sizes.shape[0])
    store(run, shuffle_in(load(run), order))
    unit, offset, length, node_span = _divide(sizes, order, num_nodes)
    permutation = np.arange(unit.shape[0])
    s = load(now)
    for node in range(num_nodes):
        s = shuffle_in(s, permutation[node_span[node] : node_span[node + 1]])
    store(now, s)
    return unit[permutation], offset[permutation], length[permutation], node_span


@jit
def _fill_spans(
    units: tuple,
    unit: np.ndarray,
    offset: np.ndarray,
    length: np.ndarray,
    first: int,
    stop: int,
    out: np.ndarray,
) -> None:
    """Write the ids of spans ``first`` to ``stop - 1`` one after the other into ``out``."""
    base, table_start, table = units
    position = 0
    for span in range(first, stop):
        _unit_ids(base, table_start, table, unit[span], offset[span], out[position : position + length[span]])
        position += length[span]


@jit
def _py1s(
    sizes: np.ndarray,
    num_nodes: int,
    run: np.ndarray,
    now: np.ndarray,
    units: tuple,
    touched: np.ndarray,
    node_table: np.ndarray,
    out: np.ndarray,
) -> None:
    unit, offset, length, node_span = _spans(sizes, num_nodes, run, now)
    s = load(now)
    for node in range(num_nodes):
        position = node_table[node]
        for span in range(node_span[node], node_span[node + 1]):
            if touched[node]:
                part = out[position : position + length[span]]
                _fill_spans(units, unit, offset, length, span, span + 1, part)
                s = shuffle_in(s, part)
                position += length[span]
            else:
                s = skip_shuffle_in(s, length[span])
    store(now, s)


@jit
def _py1br(
    sizes: np.ndarray,
    num_nodes: int,
    run: np.ndarray,
    now: np.ndarray,
    units: tuple,
    touched: np.ndarray,
    node_table: np.ndarray,
    out: np.ndarray,
    low: int,
    high: int,
) -> None:
    unit, offset, length, node_span = _spans(sizes, num_nodes, run, now)
    bounds = _node_bounds(sizes.sum(), num_nodes)
    s = load(now)
    stagger = np.empty(num_nodes, np.int64)
    for node in range(num_nodes):
        s, stagger[node] = bounded(s, low - 1)
    for node in range(num_nodes):
        size = bounds[node + 1] - bounds[node]
        ids = out[node_table[node] : node_table[node] + size] if touched[node] else out[:0]
        if touched[node]:
            _fill_spans(units, unit, offset, length, node_span[node], node_span[node + 1], ids)
        starts = np.empty(size // low + 2, np.int64)
        stops = np.empty(size // low + 2, np.int64)
        count = 0
        blocks_end = 0
        while blocks_end < size:
            s, draw = bounded(s, high - 1 - low)
            start = max(blocks_end - stagger[node], 0)
            stop = min(blocks_end + low + draw - stagger[node], size)
            starts[count] = start
            stops[count] = stop
            count += 1
            blocks_end += stop - start
        for block in range(count):
            if touched[node]:
                s = shuffle_in(s, ids[starts[block] : stops[block]])
            else:
                s = skip_shuffle_in(s, stops[block] - starts[block])
    store(now, s)


_COARSE_BITS = 12  # py1e's sort: buckets of 4096 whole positions, then of one


@jit
def _span_key(i: int, lower: float, width: float, fraction: float) -> float:
    """Sample ``i``'s sort key: its position plus its shift in the span's window (the reference's sum)."""
    return np.float64(i) + (lower + width * fraction)


@jit
def _whole(key: float, n: int) -> int:
    return min(max(np.int64(key), 0), n - 1)


@jit
def _sort_by_key(
    span_state: np.ndarray,
    span_lower: np.ndarray,
    span_width: np.ndarray,
    span_length: np.ndarray,
    values: np.ndarray,
    coarse: np.ndarray,
    sorted_keys: np.ndarray,
    sorted_values: np.ndarray,
    out: np.ndarray,
) -> None:
    """One py1e node's keys drawn and ``out = values[argsort(keys, kind="stable")]``, in O(len) time.

    Span ``k``'s uniform shifts are drawn from its recorded state ``span_state[k]`` (so nodes, and the
    sequential draws of later nodes, run in parallel), twice: once to count the keys of each bucket of
    4096 whole positions (``coarse``: zeros, one more than the buckets), once to place them in their
    bucket. Keys move at most about a block from their index, so that pass writes a few cache-friendly
    streams; each bucket is then counting-sorted by whole position and its keys of one position (about
    one each) insertion-sorted, stably. ``sorted_*``: scratch of at least ``len(values)``, reused.
    """
    n = values.shape[0]
    position = 0
    for k in range(span_length.shape[0]):
        s = load(span_state[k])
        for i in range(position, position + span_length[k]):
            s, fraction = next_double(s)
            coarse[(_whole(_span_key(i, span_lower[k], span_width[k], fraction), n) >> _COARSE_BITS) + 1] += 1
        position += span_length[k]
    buckets = coarse.shape[0] - 1
    for b in range(buckets):
        coarse[b + 1] += coarse[b]
    fill = coarse[:buckets].copy()
    position = 0
    for k in range(span_length.shape[0]):
        s = load(span_state[k])
        for i in range(position, position + span_length[k]):
            s, fraction = next_double(s)
            key = _span_key(i, span_lower[k], span_width[k], fraction)
            b = _whole(key, n) >> _COARSE_BITS
            p = fill[b]
            sorted_keys[p] = key
            sorted_values[p] = values[i]
            fill[b] = p + 1
        position += span_length[k]
    width = 1 << _COARSE_BITS
    local = np.empty(width + 1, np.int64)
    bucket_keys = np.empty(0, np.float64)
    for b in range(buckets):
        low, high = coarse[b], coarse[b + 1]
        base = b << _COARSE_BITS
        local[:] = 0
        for p in range(low, high):
            local[_whole(sorted_keys[p], n) - base + 1] += 1
        for u in range(width):
            local[u + 1] += local[u]
        if bucket_keys.shape[0] < high - low:
            bucket_keys = np.empty(2 * (high - low), np.float64)
        for p in range(low, high):
            u = _whole(sorted_keys[p], n) - base
            q = local[u]
            bucket_keys[q] = sorted_keys[p]
            out[low + q] = sorted_values[p]
            local[u] = q + 1
        for i in range(1, high - low):  # keys of one whole position: an insertion sort, stable
            key = bucket_keys[i]
            if bucket_keys[i - 1] <= key:
                continue
            item = out[low + i]
            j = i
            while j > 0 and bucket_keys[j - 1] > key:
                bucket_keys[j] = bucket_keys[j - 1]
                out[low + j] = out[low + j - 1]
                j -= 1
            bucket_keys[j] = key
            out[low + j] = item


@jit
def _skip_doubles(s: tuple, count: int) -> tuple:
    """The state after ``count`` 64-bit draws: drawn one by one when few, else an LCG jump."""
    if count < 64:
        for _ in range(count):
            s, _ = next64(s)
        return s
    state = np.empty(6, np.uint64)
    store(state, s)
    advance(state, count)
    return load(state)


@jit
def _py1e_node(
    now: np.ndarray,
    units: tuple,
    unit: np.ndarray,
    offset: np.ndarray,
    length: np.ndarray,
    first: int,
    stop: int,
    size: int,
    low: int,
    high: int,
    values: np.ndarray,
    span_state: np.ndarray,
    span_lower: np.ndarray,
    span_width: np.ndarray,
) -> bool:
    """One node's sequential draws; with ``values`` (its size, else empty) also its shuffled ids.

    The spans' shuffles and windows are drawn here; each span's uniform shifts (one 64-bit draw per
    sample) are jumped over, their start state and window recorded in ``span_*`` for ``_sort_by_key``.
    """
    build = values.shape[0] > 0
    if build:
        _fill_spans(units, unit, offset, length, first, stop, values)
    s = load(now)
    position = 0
    for span in range(first, stop):
        if build:
            s = shuffle_in(s, values[position : position + length[span]])
        else:
            s = skip_shuffle_in(s, length[span])
        position += length[span]
    oversized = False
    position = 0
    for span in range(first, stop):
        span_size = length[span]
        s, draw = bounded(s, high - 1 - low)
        cutoff = (low + draw - span_size) / 2
        if cutoff < 0:
            cutoff = 0.0
            oversized = True
        lower = max(-cutoff, np.float64(-position))
        upper = min(cutoff, np.float64(size - position - span_size))
        if build:
            store(span_state[span - first], s)
            span_lower[span - first] = lower
            span_width[span - first] = upper - lower
        s = _skip_doubles(s, span_size)
        position += span_size
    store(now, s)
    return oversized


def _py1e(
    sizes: np.ndarray,
    num_nodes: int,
    run: np.ndarray,
    now: np.ndarray,
    units: tuple,
    touched: np.ndarray,
    node_table: np.ndarray,
    out: np.ndarray,
    low: int,
    high: int,
) -> bool:
    """Sequential draws node after node in this thread; each touched node's keys and sort in a pool."""
    unit, offset, length, node_span = _spans(sizes, num_nodes, run, now)
    bounds = _node_bounds(sizes.sum(), num_nodes)
    oversized = False
    largest = int(np.diff(bounds)[touched].max(initial=0))
    lanes = max(1, min(_threads(), int(touched.sum())))
    # Each lane owns ids and sort scratch for one node at a time, reused node after node.
    buffers = [
        tuple(np.empty(largest, dtype) for dtype in (np.int64, np.float64, np.int64)) for _ in range(lanes)
    ]
    no_ids = np.empty(0, np.int64)
    with ThreadPoolExecutor(lanes, "shardflow-py1e") as pool:
        pending: list = [None] * lanes
        lane = 0
        for node in range(num_nodes):
            size = int(bounds[node + 1] - bounds[node])
            first, stop = int(node_span[node]), int(node_span[node + 1])
            spans = stop - first if touched[node] else 0
            span_state = np.empty((spans, 6), np.uint64)
            span_lower, span_width = np.empty(spans), np.empty(spans)
            if touched[node] and pending[lane] is not None:
                pending[lane].result()  # the lane's buffers are free again
            values, sorted_keys, sorted_values = buffers[lane]
            values = values[:size] if touched[node] else no_ids
            oversized |= bool(
                _py1e_node(
                    now, units, unit, offset, length, first, stop, size, low, high,
                    values, span_state, span_lower, span_width,
                )
            )  # fmt: skip
            if not touched[node]:
                continue
            coarse = np.zeros(((size - 1) >> _COARSE_BITS) + 2, np.int64)
            part = out[node_table[node] : node_table[node] + size]
            pending[lane] = pool.submit(
                _sort_by_key, span_state, span_lower, span_width, length[first:stop],
                values, coarse, sorted_keys[:size], sorted_values[:size], part,
            )  # fmt: skip
            lane = (lane + 1) % lanes
        for done in pending:
            if done is not None:
                done.result()
    return oversized


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@jit
def _py2s(
    sizes: np.ndarray,
    num_nodes: int,
    run: np.ndarray,
    now: np.ndarray,
    units: tuple,
    touched: np.ndarray,
    node_table: np.ndarray,
    out: np.ndarray,
) -> None:
    base, table_start, table = units
    order = np.arange(sizes.shape[0])
    r = shuffle_in(load(run), order)
    unit, offset, length, node_span = _divide(sizes, order, num_nodes)
    bounds = _node_bounds(sizes.sum(), num_nodes)
    # Each unit's samples shuffled once for the run, in the units' new order; the node ranges of that
    # concatenation that touched nodes read are kept (``fixed``, laid out as ``out``).
    fixed = np.empty(out.shape[0], np.int64)
    scratch = np.empty(sizes.max() if sizes.shape[0] else 0, np.int64)
    node = 0
    position = 0
    for index in range(order.shape[0]):
        u = order[index]
        size = sizes[u]
        while node < num_nodes - 1 and bounds[node + 1] <= position:
            node += 1
        needed = False
        c = node
        while c < num_nodes and bounds[c] < position + size:
            needed |= touched[c]
            c += 1
        if needed:
            samples = scratch[:size]
            _unit_ids(base, table_start, table, u, 0, samples)
            r = shuffle_in(r, samples)
            c = node
            while c < num_nodes and bounds[c] < position + size:
                begin = max(position, bounds[c])
                end = min(position + size, bounds[c + 1])
                if touched[c] and end > begin:
                    at = node_table[c] + begin - bounds[c]
                    fixed[at : at + end - begin] = samples[begin - position : end - position]
                c += 1
        else:
            r = skip_shuffle_in(r, size)
        position += size
    store(run, r)
    s = load(now)
    for node in range(num_nodes):
        first, stop = node_span[node], node_span[node + 1]
        pieces = np.arange(first, stop)
        s = shuffle_in(s, pieces)
        slot = np.empty(stop - first, np.int64)  # where each piece starts in the node's fixed range
        at = 0
        for piece in range(first, stop):
            slot[piece - first] = at
            at += length[piece]
        at = node_table[node]
        for piece in pieces:
            count = length[piece]
            if touched[node]:
                begin = node_table[node] + slot[piece - first]
                part = out[at : at + count]
                part[:] = fixed[begin : begin + count]
                s = shuffle_in(s, part)
                at += count
            else:
                s = skip_shuffle_in(s, count)
    store(now, s)


@jit
def _naive(total: int, now: np.ndarray, units: tuple, unit_sizes: np.ndarray, out: np.ndarray) -> None:
    base, table_start, table = units
    position = 0
    for u in range(unit_sizes.shape[0]):
        _unit_ids(base, table_start, table, u, 0, out[position : position + unit_sizes[u]])
        position += unit_sizes[u]
    store(now, shuffle_in(load(now), out))


def exact_tables(
    algo: str,
    unit_sizes: np.ndarray,
    num_canonical_nodes: int,
    run_state: np.ndarray,
    epoch_state: np.ndarray,
    block_size: int,
    units: tuple[np.ndarray, np.ndarray, np.ndarray],
    touched: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The ids of the touched canonical nodes' positions, node after node, as the reference orders them.

    ``units`` is ``(base, table_start, table)`` of a ``UnitMap``; the states are advanced in place.
    Returns ``node_table`` (node ``c``'s ids are ``table[node_table[c]:node_table[c + 1]]``), the table,
    and whether a span was larger than its py1e window. ``naive`` always builds every node.
    """
    code = EXACT_ALGOS.index(algo)
    total = int(unit_sizes.sum())
    bounds = np.arange(num_canonical_nodes + 1, dtype=np.int64) * total // num_canonical_nodes
    if code == _NAIVE:
        touched = np.ones(num_canonical_nodes, np.bool_)
    node_table = np.zeros(num_canonical_nodes + 1, np.int64)
    np.cumsum(np.where(touched, np.diff(bounds), 0), out=node_table[1:])
    out = np.empty(int(node_table[-1]), np.int64)
    low, high = block_limits(block_size)
    oversized = False
    if code == _NAIVE:
        _naive(total, epoch_state, units, unit_sizes, out)
    elif code == _PY1S:
        _py1s(unit_sizes, num_canonical_nodes, run_state, epoch_state, units, touched, node_table, out)
    elif code == _PY2S:
        _py2s(unit_sizes, num_canonical_nodes, run_state, epoch_state, units, touched, node_table, out)
    elif code == _PY1BR:
        _py1br(
            unit_sizes,
            num_canonical_nodes,
            run_state,
            epoch_state,
            units,
            touched,
            node_table,
            out,
            low,
            high,
        )
    else:
        oversized = bool(
            _py1e(
                unit_sizes,
                num_canonical_nodes,
                run_state,
                epoch_state,
                units,
                touched,
                node_table,
                out,
                low,
                high,
            )
        )
    return node_table, out, oversized
