"""The span layout of an epoch: units in run order, cut at canonical node bounds, reordered per epoch.

Every shard-based shuffle starts the same way. Units (shards, or the repeats of a resampled shard) are
put in an order fixed for the whole run (it depends on the seed only), laid end to end and cut where a
canonical node's range begins, so each canonical node owns the same samples in every epoch. Then the
pieces ("spans") of each canonical node are put in an order that changes with the epoch. This costs
O(units + canonical nodes) time and memory, never O(samples).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from shardflow.shuffle._jit import jit
from shardflow.shuffle._random import derive_key, shuffle_in_place, span_order_key, unit_order_key

__all__ = ["Layout", "build_layout"]


class Layout(NamedTuple):
    """Spans of an epoch, grouped by canonical node, in the epoch's order (all int64 arrays).

    ``bounds[c]:bounds[c + 1]`` is canonical node ``c``'s range of positions; its spans are
    ``node_span[c]:node_span[c + 1]``; span ``s`` holds samples ``offset[s]:offset[s] + length[s]`` of
    unit ``unit[s]`` and starts at position ``slot[s]`` within its canonical node.
    """

    bounds: np.ndarray
    node_span: np.ndarray
    unit: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    slot: np.ndarray


@jit
def _cut_spans(unit_sizes: np.ndarray, order: np.ndarray, bounds: np.ndarray) -> tuple:
    num_nodes = bounds.shape[0] - 1
    capacity = unit_sizes.shape[0] + num_nodes
    unit = np.empty(capacity, np.int64)
    offset = np.empty(capacity, np.int64)
    length = np.empty(capacity, np.int64)
    node_span = np.zeros(num_nodes + 1, np.int64)
    count = 0
    node = 0
    position = 0
    for u in order:
        begin = position
        end = position + unit_sizes[u]
        while begin < end:
            while bounds[node + 1] <= begin:
                node += 1
                node_span[node] = count
            stop = min(end, bounds[node + 1])
            unit[count] = u
            offset[count] = begin - position
            length[count] = stop - begin
            count += 1
            begin = stop
        position = end
    for rest in range(node + 1, num_nodes + 1):
        node_span[rest] = count
    return unit[:count], offset[:count], length[:count], node_span


@jit
def _reorder_spans(
    node_span: np.ndarray, unit: np.ndarray, offset: np.ndarray, length: np.ndarray, key: np.uint64
) -> tuple:
    num_spans = unit.shape[0]
    permutation = np.arange(num_spans)
    slot = np.empty(num_spans, np.int64)
    for node in range(node_span.shape[0] - 1):
        begin = node_span[node]
        end = node_span[node + 1]
        shuffle_in_place(permutation[begin:end], derive_key(key, node))
    unit = unit[permutation]
    offset = offset[permutation]
    length = length[permutation]
    for node in range(node_span.shape[0] - 1):
        position = 0
        for s in range(node_span[node], node_span[node + 1]):
            slot[s] = position
            position += length[s]
    return unit, offset, length, slot


@jit
def _build_layout(unit_sizes: np.ndarray, num_canonical_nodes: int, seed: int, epoch: int) -> tuple:
    order = np.arange(unit_sizes.shape[0])
    shuffle_in_place(order, unit_order_key(seed))
    total = unit_sizes.sum()
    bounds = np.empty(num_canonical_nodes + 1, np.int64)
    for node in range(num_canonical_nodes + 1):
        bounds[node] = total * node // num_canonical_nodes
    unit, offset, length, node_span = _cut_spans(unit_sizes, order, bounds)
    unit, offset, length, slot = _reorder_spans(node_span, unit, offset, length, span_order_key(seed, epoch))
    return bounds, node_span, unit, offset, length, slot


def build_layout(unit_sizes: np.ndarray, num_canonical_nodes: int, seed: int, epoch: int) -> Layout:
    """The spans of an epoch for units of the given (positive) sizes; arguments are validated upstream."""
    return Layout(
        *_build_layout(np.ascontiguousarray(unit_sizes, np.int64), num_canonical_nodes, seed, epoch)
    )
