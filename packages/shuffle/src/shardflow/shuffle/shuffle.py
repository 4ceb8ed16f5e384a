"""The shuffle algorithms by name: build one epoch's shuffle, look positions up in it, or materialise it.

Names, arguments and guarantees follow mosaicml-streaming's ``get_shuffle``: the result is a
permutation of the epoch's positions in which the set of samples inside each canonical node's range
(``[c * n // C, (c + 1) * n // C)``) is the same in every epoch, so that a node can cache its shards.
The reference's names give the reference's values, draw for draw (``_exact``); the ``*_fast`` variants
draw from counter-based hashes instead (``_kernels``), so any single position can be looked up without
building the rest.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shardflow.shuffle._checks import as_sizes, check_non_negative, check_positive
from shardflow.shuffle._exact import block_limits, exact_tables
from shardflow.shuffle._kernels import (
    ALGO_CODES,
    FIRST_EXACT,
    NO_SHUFFLE,
    Shuffler,
    UnitMap,
    build_node_tables,
    materialize_all,
    tile_bits_for,
)
from shardflow.shuffle._layout import Layout, build_layout
from shardflow.shuffle._pcg64 import initial_state
from shardflow.shuffle._random import _NUM_KEYS, epoch_keys
from shardflow.shuffle.errors import ShuffleError

__all__ = ["SHUFFLE_ALGOS", "get_shuffle", "make_shuffler", "identity_units"]

SHUFFLE_ALGOS = tuple(ALGO_CODES)
_EMPTY = np.empty(0, np.int64)
_NO_KEYS = np.zeros(_NUM_KEYS, np.uint64)  # unshuffled: no kernel reads a key (and none is loaded for them)


# The reference's algorithms that order an epoch with empty canonical nodes (fewer samples than nodes).
_EMPTY_NODES_OK = ("naive", "py1s", "py1br", "py2s")


def make_shuffler(
    algo: str | None,
    unit_sizes: NDArray[np.int64],
    num_canonical_nodes: int,
    seed: int,
    epoch: int,
    block_size: int,
    touched: NDArray[np.bool_] | None = None,
    units: UnitMap | None = None,
) -> Shuffler:
    """Build one epoch's shuffle over units of the given sizes (``algo=None``: positions in unit order).

    ``touched`` marks the canonical nodes whose per-node tables are built (default: all); only positions
    in those nodes may then be looked up. The reference's algorithms (``naive``, ``py1s``, ...) hold the
    ids of every position of a touched node (``naive``: of the whole epoch), so they need ``units``
    (default: positions are ids); the ``*_fast`` ones hold O(units + samples / block_size) per node.
    The caller (a public function) has validated ``algo``, ``seed``, ``epoch`` and ``block_size``.

    Raises:
        ShuffleError: an epoch without samples, fewer samples than canonical nodes for ``py1e`` and the
            ``*_fast`` algorithms (the reference's other algorithms leave such nodes empty, and so do these),
            or a block size the reference's ``py1br`` refuses.
    """
    total = int(unit_sizes.sum())
    if total < 1:
        raise ShuffleError("the epoch has no samples to shuffle: every shard (or stream weight) is empty")
    if algo is not None and num_canonical_nodes > total and algo not in _EMPTY_NODES_OK:
        raise ShuffleError(
            f"num_canonical_nodes={num_canonical_nodes} is more than the {total} samples of the epoch, so a "
            f"canonical node would get no samples, which shuffle_algo={algo!r} cannot shuffle: use at most "
            f"{total} canonical nodes, or py1s, py1br, py2s or naive (or check that the dataset's index "
            f"lists every shard)"
        )
    unit_start = np.zeros(unit_sizes.shape[0] + 1, np.int64)
    np.cumsum(unit_sizes, out=unit_start[1:])
    code = NO_SHUFFLE if algo is None else ALGO_CODES[algo]
    if code >= FIRST_EXACT:
        assert algo is not None  # NO_SHUFFLE is below FIRST_EXACT
        return _exact_shuffler(
            algo, code, unit_sizes, unit_start, num_canonical_nodes, seed, epoch, block_size, touched, units
        )
    if code in (NO_SHUFFLE, ALGO_CODES["naive_fast"]):  # no spans: only the canonical node bounds
        bounds = np.arange(num_canonical_nodes + 1, dtype=np.int64) * total // num_canonical_nodes
        layout = Layout(bounds, _EMPTY, _EMPTY, _EMPTY, _EMPTY, _EMPTY)
    else:
        layout = build_layout(unit_sizes, num_canonical_nodes, seed, epoch)
    num_nodes = num_canonical_nodes
    shuffler = Shuffler(
        algo=code,
        block_size=int(block_size),
        tile_bits=tile_bits_for(int(block_size)),
        keys=_NO_KEYS if code == NO_SHUFFLE else epoch_keys(seed, epoch),
        unit_start=unit_start,
        bounds=layout.bounds,
        node_span=layout.node_span,
        span_unit=layout.unit,
        span_offset=layout.offset,
        span_length=layout.length,
        span_slot=layout.slot,
        unit_size=unit_sizes,
        node_table=np.zeros(num_nodes + 1, np.int64),
        table=_EMPTY,
        node_phase=np.zeros(num_nodes, np.int64),
    )
    if code in (ALGO_CODES["py1br_fast"], ALGO_CODES["py1e_fast"]):
        if touched is None:
            touched = np.ones(num_nodes, np.bool_)
        shuffler, oversized = build_node_tables(shuffler, touched)
        if oversized:
            _warn_small_block(block_size)
    return shuffler


def _warn_small_block(block_size: int) -> None:
    """A UserWarning, as the reference's: some shards outgrow the shuffle's blocks."""
    warnings.warn(
        f"shuffle_block_size={block_size} is smaller than some shards: their samples only move within "
        "their own shard; raise shuffle_block_size for a better shuffle",
        UserWarning,
        stacklevel=3,
    )


def _exact_shuffler(
    algo: str,
    code: int,
    unit_sizes: NDArray[np.int64],
    unit_start: NDArray[np.int64],
    num_canonical_nodes: int,
    seed: int,
    epoch: int,
    block_size: int,
    touched: NDArray[np.bool_] | None,
    units: UnitMap | None,
) -> Shuffler:
    """The reference's order of ``algo``: the ids of every touched canonical node, from numpy's draws."""
    low, high = block_limits(block_size)
    if algo == "py1br" and low < 1:
        raise ShuffleError(
            f"shuffle_block_size={block_size} is too small for py1br: its stagger is drawn below "
            f"0.75 * block_size, so use a block size of at least 2"
        )
    if touched is None:
        touched = np.ones(num_canonical_nodes, np.bool_)
    if units is None:
        units = _identity(unit_start[:-1])
    node_table, table, oversized = exact_tables(
        algo,
        unit_sizes,
        num_canonical_nodes,
        initial_state(seed),
        initial_state(seed + epoch),
        block_size,
        (units.base, units.table_start, units.table),
        np.ascontiguousarray(touched, np.bool_),
    )
    if oversized:
        _warn_small_block(block_size)
    bounds = np.arange(num_canonical_nodes + 1, dtype=np.int64) * unit_start[-1] // num_canonical_nodes
    return Shuffler(
        algo=code,
        block_size=int(block_size),
        tile_bits=0,
        keys=_NO_KEYS,
        unit_start=unit_start,
        bounds=bounds,
        node_span=_EMPTY,
        span_unit=_EMPTY,
        span_offset=_EMPTY,
        span_length=_EMPTY,
        span_slot=_EMPTY,
        unit_size=unit_sizes,
        node_table=node_table,
        table=table,
        node_phase=_EMPTY,
    )


def _identity(unit_start: NDArray[np.int64]) -> UnitMap:
    num_units = unit_start.shape[0]
    return UnitMap(unit_start, np.full(num_units, -1, np.int64), _EMPTY, 1)


def identity_units(shuffler: Shuffler) -> UnitMap:
    """Map (unit, index) back to the position in the unshuffled sample space."""
    return _identity(shuffler.unit_start[: shuffler.unit_size.shape[0]])


def get_shuffle(
    algo: str,
    shard_sizes: ArrayLike,
    num_canonical_nodes: int,
    seed: int,
    epoch: int,
    block_size: int = 1 << 18,
) -> NDArray[np.int64]:
    """The shuffled order of one epoch, as mosaicml-streaming's ``get_shuffle``.

    Args:
        algo: One of ``naive``, ``py1s``, ``py2s``, ``py1br``, ``py1e`` (the reference's orders, value for
            value) or their ``*_fast`` variants (shardflow's own draws, the same guarantees).
        shard_sizes: Samples in each shard, in order.
        num_canonical_nodes: Canonical nodes; each owns a fixed set of samples across epochs.
        seed: Base seed, constant over a run.
        epoch: The epoch; each epoch orders samples differently.
        block_size: Unit of shuffle for ``py1br`` and ``py1e`` and their fast variants (ignored by the
            others).

    Returns:
        ``ids`` with ``ids[position]`` = the sample id at that position of the epoch; a permutation of
        ``range(sum(shard_sizes))``. Memory O(samples); use ``make_shuffler`` to look up a few positions.
    """
    sizes = as_sizes("shard_sizes", shard_sizes)
    check_positive("num_canonical_nodes", num_canonical_nodes)
    if algo not in ALGO_CODES:
        raise ShuffleError(f"shuffle_algo={algo!r} is unknown: use one of {', '.join(SHUFFLE_ALGOS)}")
    seed = check_non_negative("shuffle_seed", seed)
    epoch = check_non_negative("epoch", epoch)
    block_size = check_positive("shuffle_block_size", block_size)
    shuffler = make_shuffler(algo, sizes, int(num_canonical_nodes), seed, epoch, block_size)
    return materialize_all(shuffler, identity_units(shuffler))
