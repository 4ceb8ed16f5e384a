"""Large result arrays mapped straight from the kernel, for steady first-touch times."""

from __future__ import annotations

import mmap

import numpy as np

__all__ = ["empty_int64"]

_SMALL = 1 << 22  # bytes: below this numpy's allocator is as good


def empty_int64(shape: int | tuple[int, ...]) -> np.ndarray:
    """An uninitialised int64 array; a large one is an anonymous memory map of its own.

    numpy asks for transparent huge pages on large allocations; where the kernel then compacts memory on
    the first touch (``defrag=madvise``), an epoch-sized array can take seconds longer to fill, varying from
    run to run. A plain anonymous map gets ordinary pages: the same time every run. It is unmapped when
    the array is freed.
    """
    count = int(np.prod(shape))
    if count * 8 < _SMALL:
        return np.empty(shape, np.int64)
    return np.frombuffer(mmap.mmap(-1, count * 8), np.int64).reshape(shape)
