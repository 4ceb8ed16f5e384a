"""The numba decorators of every kernel: compiled on first use and cached on disk beside the source.

Compiled kernels are written to ``$NUMBA_CACHE_DIR`` when set, else to ``__pycache__`` beside this package,
else (a read-only install) to the user's cache folder (``~/.cache/numba``): the compile cost (tens of
seconds) is paid once, not in every process. numba only notices edits to the file of the function it
compiled: after changing a helper that kernels of other files call, delete the ``__pycache__`` folders.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import numba
import numpy as np

__all__ = ["jit", "in_threads"]

_Function = TypeVar("_Function", bound=Callable[..., Any])


def jit(function: _Function) -> _Function:
    """Compile ``function`` with numba (no Python objects), caching the machine code on disk.

    Small helpers (the PCG64 draws, hashes) are kernels of their own too, not inlined at numba's IR level:
    LLVM inlines them into their callers all the same (as fast, measured), and each is typed and compiled
    once instead of once per call site, which halves the compile time of a cold epoch's largest kernel.
    Per-sample helpers take scalars only (a call that passes arrays would cost reference counts).
    """
    # error_model="numpy": no zero-division checks in hot loops; every divisor is validated up front.
    return cast(_Function, numba.njit(function, cache=True, nogil=True, error_model="numpy"))


def in_threads(count: int, task: Callable[[int, int], None]) -> None:
    """Run ``task(start, stop)`` over ``[0, count)`` split among this process's CPUs, in plain threads.

    The kernels release the GIL (``nogil``), so threads run them in parallel; unlike numba's own parallel
    mode this starts no OpenMP/TBB pool, so processes forked afterwards (DataLoader workers) stay safe.
    """
    parts = max(1, min(count, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
    if parts == 1:
        task(0, count)
        return
    bounds = [count * k // parts for k in range(parts + 1)]
    with ThreadPoolExecutor(parts, "shardflow-shuffle") as pool:
        for future in [pool.submit(task, bounds[k], bounds[k + 1]) for k in range(parts)]:
            future.result()


@jit
def _ready(array: np.ndarray) -> int:
    return array.shape[0]


# numba builds its CPU target (typing and lowering registries: about 0.3 s of imports) at the first call of
# any jitted function, and imports numpy.ma (about 10 ms) the first time it types an array argument. Doing
# both at import keeps them out of the first epoch's latency, and DataLoader workers forked afterwards
# inherit them.
_ready(np.empty(0, np.int64))
