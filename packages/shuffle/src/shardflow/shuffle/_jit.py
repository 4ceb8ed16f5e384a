"""The numba decorators of every kernel: compiled on first use and cached on disk beside the source.

Compiled kernels are written to ``$NUMBA_CACHE_DIR`` when set, else to ``__pycache__`` beside this package,
else (a read-only install) to the user's cache folder (``~/.cache/numba``): the compile cost (tens of
seconds) is paid once, not in every process. numba only notices edits to the file of the function it
compiled: after changing a helper that others inline, delete the ``__pycache__`` folders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

__all__ = ["jit", "inline"]

_Function = TypeVar("_Function", bound=Callable[..., Any])


def jit(function: _Function) -> _Function:
    """Compile ``function`` with numba (no Python objects), caching the machine code on disk."""
    # error_model="numpy": no zero-division checks in hot loops; every divisor is validated up front.
    return cast(_Function, numba.njit(function, cache=True, nogil=True, error_model="numpy"))


def inline(function: _Function) -> _Function:
    """As ``jit``, and inlined into its callers at numba IR level: for small scalar helpers of hot loops.

    A call that passes arrays costs a reference count each time, so per-sample helpers take scalars only.
    """
    return cast(_Function, numba.njit(function, cache=True, nogil=True, error_model="numpy", inline="always"))
