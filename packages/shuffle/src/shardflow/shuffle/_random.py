"""Counter-based randomness: keyed hashes, random-access permutations (Feistel) and in-place shuffles.

Everything here is a pure function of integer keys and counters, so any process computes the same value
for the same inputs with no shared state, on any platform and numpy version.
"""

from __future__ import annotations

import numpy as np

from shardflow.shuffle._jit import inline, jit

__all__ = ["mix64", "derive_key", "random_below", "bit_length", "permute_index", "shuffle_in_place"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ROUNDS = 4
_TWO_POW_MINUS_53 = 1.0 / 9007199254740992.0


@inline
def mix64(x: np.uint64) -> np.uint64:
    """The splitmix64 finalizer: a bijective, well-mixing hash of 64 bits."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@inline
def derive_key(key: np.uint64, value: int) -> np.uint64:
    """A new key from ``key`` and an integer (a tag, an epoch, an index): independent for each value."""
    return mix64(np.uint64(key) ^ mix64(np.uint64(value) * _GOLDEN + _GOLDEN))


@inline
def random_below(key: np.uint64, counter: int, bound: int) -> int:
    """A uniform integer in ``[0, bound)``, the ``counter``-th draw of the stream ``key`` (bound < 2**53)."""
    bits = derive_key(key, counter) >> np.uint64(11)
    return np.int64(np.float64(bits) * _TWO_POW_MINUS_53 * bound)


@inline
def bit_length(value: int) -> int:
    """The number of bits needed to write the non-negative ``value`` (0 for 0)."""
    length = 0
    for step in (32, 16, 8, 4, 2, 1):
        if value >> step:
            value >>= step
            length += step
    return length + (1 if value else 0)


@inline
def permute_index(index: int, size: int, key: np.uint64) -> int:
    """Where ``index`` goes under the random permutation of ``range(size)`` named by ``key``.

    A 4-round Feistel network over the smallest power-of-two domain that holds ``size`` (at least 4),
    cycle-walked back into range: O(1) expected time and no memory, so any one element of a permutation
    of billions can be computed on its own.
    """
    if size <= 1:
        return 0
    bits = max(bit_length(size - 1), 2)
    high_bits = bits >> 1
    low_bits = bits - high_bits
    low_mask = (np.uint64(1) << np.uint64(low_bits)) - np.uint64(1)
    high_mask = (np.uint64(1) << np.uint64(high_bits)) - np.uint64(1)
    x = np.uint64(index)
    while True:
        low = x & low_mask
        high = x >> np.uint64(low_bits)
        round_key = np.uint64(key)
        for step in range(_ROUNDS):
            round_key += _GOLDEN
            if step & 1:
                low ^= mix64(high ^ round_key) & low_mask
            else:
                high ^= mix64(low ^ round_key) & high_mask
        x = (high << np.uint64(low_bits)) | low
        if x < np.uint64(size):
            return np.int64(x)


@jit
def shuffle_in_place(values: np.ndarray, key: np.uint64) -> None:
    """Fisher-Yates shuffle of a 1-D array, drawing from the sequential stream ``key``."""
    state = np.uint64(key)
    for i in range(values.shape[0] - 1, 0, -1):
        state += _GOLDEN
        j = np.int64(np.float64(mix64(state) >> np.uint64(11)) * _TWO_POW_MINUS_53 * (i + 1))
        values[i], values[j] = values[j], values[i]
