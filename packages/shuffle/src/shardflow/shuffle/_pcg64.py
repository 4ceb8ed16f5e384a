"""numpy's ``default_rng`` stream in compiled code: PCG64 and the Generator methods the reference draws with.

mosaicml-streaming orders an epoch with ``np.random.default_rng(seed)`` (a ``Generator`` over ``PCG64``):
``shuffle``/``permutation``, scalar and array ``integers`` and ``uniform``. Their algorithms are numpy's
documented, deterministic ones, so reproducing them draw for draw gives the reference's order bit for
bit, in numba, without building Python lists or calling back into numpy per span:

* PCG64 (XSL-RR 128/64): a 128-bit LCG stepped before each output; 32-bit draws take the low half of a
  64-bit draw, then its high half on the next call (the ``has_uint32`` buffer, part of the state).
* ``shuffle`` (1-D arrays and lists alike): Fisher-Yates from the last element down, ``j`` drawn by
  ``random_interval(i)``: the next 32-bit draw (64-bit when ``i`` needs it) masked to the smallest
  ``2**k - 1 >= i``, rejected while above ``i``.
* ``integers(low, high)`` (int64, scalar or array): ``low`` plus Lemire's bounded draw over
  ``high - low`` values (32-bit draws when the range fits, else 64-bit); a range of one value draws
  nothing.
* ``uniform(low, high)``: ``low + (high - low) * (next64 >> 11) * 2**-53``, one 64-bit draw each.

The seeding (``SeedSequence``) runs in numpy (``initial_state``), once per generator. A generator's
state lives in a uint64 array ``[state_hi, state_lo, inc_hi, inc_lo, has_uint32, uinteger]``; hot loops
``load`` it into a tuple of the same six values, thread the tuple through the inlined draws (``s, value =
next64(s)``: kept in registers, twice as fast as reading the array each draw) and ``store`` it back.
``tests/shuffle/test_pcg64.py`` checks every function against numpy's own draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from shardflow.shuffle._jit import jit

__all__ = [
    "initial_state",
    "load",
    "store",
    "next64",
    "next32",
    "next_double",
    "random_interval",
    "bounded",
    "shuffle_in",
    "skip_shuffle_in",
    "shuffle",
    "advance",
]

_MULT_HI = np.uint64(0x2360ED051FC65DA4)
_MULT_LO = np.uint64(0x4385DF649FCCF645)
_LOW32 = np.uint64(0xFFFFFFFF)
_TWO_POW_MINUS_53 = 1.0 / 9007199254740992.0


def initial_state(seed: int) -> np.ndarray:
    """The state of ``np.random.default_rng(seed)`` as the kernels' uint64 array (numpy seeds it)."""
    state = np.random.PCG64(seed).state
    mask = (1 << 64) - 1
    value, inc = state["state"]["state"], state["state"]["inc"]
    return np.array(
        [value >> 64, value & mask, inc >> 64, inc & mask, state["has_uint32"], state["uinteger"]],
        np.uint64,
    )


def _mul_hi_typing(typingctx, a, b):  # noqa: ANN001, ANN202 (numba intrinsic)
    """The high 64 bits of the 128-bit product ``a * b`` (one machine multiply)."""
    signature = types.uint64(types.uint64, types.uint64)

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        wide = ir.IntType(128)
        product = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        return builder.trunc(builder.lshr(product, ir.Constant(wide, 64)), ir.IntType(64))

    return signature, codegen


# Called as ``_mul_hi(a, b)`` in jitted code (numba supplies the typing context).
_mul_hi: Any = intrinsic(_mul_hi_typing)


@jit
def load(state: np.ndarray) -> tuple:
    """The state array as the tuple the draws thread through."""
    return state[0], state[1], state[2], state[3], state[4], state[5]


@jit
def store(state: np.ndarray, s: tuple) -> None:
    """Write a state tuple back into its array."""
    state[0], state[1], state[2], state[3], state[4], state[5] = s


@jit
def next64(s: tuple) -> tuple:
    """The next 64-bit output: step the LCG, then XSL-RR of the new state (numpy's ``next_uint64``)."""
    hi, lo, inc_hi, inc_lo, has32, buffer = s
    new_lo = lo * _MULT_LO
    new_hi = _mul_hi(lo, _MULT_LO) + lo * _MULT_HI + hi * _MULT_LO
    lo = new_lo + inc_lo
    hi = new_hi + inc_hi + (np.uint64(1) if lo < new_lo else np.uint64(0))
    mixed = hi ^ lo
    rotation = hi >> np.uint64(58)
    value = (mixed >> rotation) | (mixed << ((np.uint64(64) - rotation) & np.uint64(63)))
    return (hi, lo, inc_hi, inc_lo, has32, buffer), value


@jit
def next32(s: tuple) -> tuple:
    """The next 32-bit output: the buffered high half of the last 64-bit draw, else a new draw's low half."""
    if s[4]:
        return (s[0], s[1], s[2], s[3], np.uint64(0), s[5]), s[5]
    s, value = next64(s)
    return (s[0], s[1], s[2], s[3], np.uint64(1), value >> np.uint64(32)), value & _LOW32


@jit
def next_double(s: tuple) -> tuple:
    """A uniform float in ``[0, 1)`` from the top 53 bits of a 64-bit draw."""
    s, value = next64(s)
    return s, np.float64(value >> np.uint64(11)) * _TWO_POW_MINUS_53


@jit
def random_interval(s: tuple, maximum: int) -> tuple:
    """A uniform integer in ``[0, maximum]`` by masked rejection (numpy's ``random_interval``)."""
    if maximum == 0:
        return s, 0
    bound = np.uint64(maximum)
    mask = bound
    mask |= mask >> np.uint64(1)
    mask |= mask >> np.uint64(2)
    mask |= mask >> np.uint64(4)
    mask |= mask >> np.uint64(8)
    mask |= mask >> np.uint64(16)
    mask |= mask >> np.uint64(32)
    wide = bound > _LOW32
    while True:
        if wide:
            s, value = next64(s)
        else:
            s, value = next32(s)
        value &= mask
        if value <= bound:
            return s, np.int64(value)


@jit
def bounded(s: tuple, span: int) -> tuple:
    """A uniform integer in ``[0, span]`` by Lemire's method (numpy's ``random_bounded_uint64``).

    ``Generator.integers(low, high)`` (int64, scalar or array) is ``low + bounded(s, high - 1 - low)``.
    """
    if span == 0:
        return s, 0
    bound = np.uint64(span)
    if bound == _LOW32:
        s, value = next32(s)
        return s, np.int64(value)
    excl = bound + np.uint64(1)
    if bound < _LOW32:
        s, value = next32(s)
        product = value * excl
        leftover = product & _LOW32
        if leftover < excl:
            threshold = (_LOW32 - bound) % excl
            while leftover < threshold:
                s, value = next32(s)
                product = value * excl
                leftover = product & _LOW32
        return s, np.int64(product >> np.uint64(32))
    s, draw = next64(s)
    leftover = draw * excl
    if leftover < excl:
        threshold = (np.uint64(0xFFFFFFFFFFFFFFFF) - bound) % excl
        while leftover < threshold:
            s, draw = next64(s)
            leftover = draw * excl
    return s, np.int64(_mul_hi(draw, excl))


@jit
def shuffle_in(s: tuple, values: np.ndarray) -> tuple:
    """``Generator.shuffle`` of a 1-D array (or of a list: the same draws), in place."""
    for i in range(values.shape[0] - 1, 0, -1):
        s, j = random_interval(s, i)
        values[i], values[j] = values[j], values[i]
    return s


@jit
def skip_shuffle_in(s: tuple, length: int) -> tuple:
    """The state after ``shuffle_in`` of ``length`` elements, without an array."""
    for i in range(length - 1, 0, -1):
        s, _ = random_interval(s, i)
    return s


@jit
def shuffle(state: np.ndarray, values: np.ndarray) -> None:
    """``Generator.shuffle`` of a 1-D array, advancing the state array."""
    store(state, shuffle_in(load(state), values))


@jit
def _mul128(a_hi: np.uint64, a_lo: np.uint64, b_hi: np.uint64, b_lo: np.uint64) -> tuple:
    return _mul_hi(a_lo, b_lo) + a_lo * b_hi + a_hi * b_lo, a_lo * b_lo


@jit
def _add128(a_hi: np.uint64, a_lo: np.uint64, b_hi: np.uint64, b_lo: np.uint64) -> tuple:
    lo = a_lo + b_lo
    return a_hi + b_hi + (np.uint64(1) if lo < a_lo else np.uint64(0)), lo


@jit
def advance(state: np.ndarray, steps: int) -> None:
    """Jump the LCG ``steps`` 64-bit draws ahead in O(log steps) (the 32-bit buffer is left as is)."""
    acc_mult_hi, acc_mult_lo = np.uint64(0), np.uint64(1)
    acc_plus_hi, acc_plus_lo = np.uint64(0), np.uint64(0)
    mult_hi, mult_lo = _MULT_HI, _MULT_LO
    plus_hi, plus_lo = state[2], state[3]
    delta = np.uint64(steps)
    while delta:
        if delta & np.uint64(1):
            acc_mult_hi, acc_mult_lo = _mul128(acc_mult_hi, acc_mult_lo, mult_hi, mult_lo)
            acc_plus_hi, acc_plus_lo = _mul128(acc_plus_hi, acc_plus_lo, mult_hi, mult_lo)
            acc_plus_hi, acc_plus_lo = _add128(acc_plus_hi, acc_plus_lo, plus_hi, plus_lo)
        one_hi, one_lo = _add128(mult_hi, mult_lo, np.uint64(0), np.uint64(1))
        plus_hi, plus_lo = _mul128(one_hi, one_lo, plus_hi, plus_lo)
        mult_hi, mult_lo = _mul128(mult_hi, mult_lo, mult_hi, mult_lo)
        delta >>= np.uint64(1)
    hi, lo = _mul128(acc_mult_hi, acc_mult_lo, state[0], state[1])
    state[0], state[1] = _add128(hi, lo, acc_plus_hi, acc_plus_lo)
