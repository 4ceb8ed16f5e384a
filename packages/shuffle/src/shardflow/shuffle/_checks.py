"""Argument checks shared by the modules: each failure is a ShuffleError naming the argument and value."""

from __future__ import annotations

from typing import Any, TypeGuard

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shardflow.shuffle.errors import ShuffleError

__all__ = ["is_integer", "check_positive", "check_non_negative", "as_sizes"]


def is_integer(value: object) -> TypeGuard[int | np.integer[Any]]:
    """Whether ``value`` is a Python or numpy integer (``bool`` is not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_positive(name: str, value: object) -> int:
    """``value`` as an int, or a ShuffleError unless it is an integer of at least 1."""
    if not is_integer(value) or value < 1:
        raise ShuffleError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_non_negative(name: str, value: object) -> int:
    """``value`` as an int, or a ShuffleError unless it is an integer in ``[0, 2**63)`` (seeds, epochs)."""
    if not is_integer(value) or not 0 <= value < 2**63:
        raise ShuffleError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def as_sizes(name: str, sizes: ArrayLike) -> NDArray[np.int64]:
    """A 1-D int64 copy of non-negative sizes, or a ShuffleError naming ``name`` and the first bad entry."""
    array = np.asarray(sizes)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ShuffleError(
            f"{name} must be a 1-D sequence of integers, got shape {array.shape} of {array.dtype}"
        )
    array = array.astype(np.int64)
    negative = np.flatnonzero(array < 0)
    if negative.size:
        raise ShuffleError(f"{name}[{negative[0]}] = {array[negative[0]]}: sizes cannot be negative")
    return array
