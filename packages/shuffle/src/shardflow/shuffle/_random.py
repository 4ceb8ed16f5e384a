"""Every random key and draw of the shuffle: counter-based hashes, keys derived from the seed, permutations.

Everything here is a pure function of integer keys and counters, so any process computes the same value
for the same inputs with no shared state, on any platform and numpy version. The seed and epoch are
validated by the public functions; the functions here trust them (``0 <= seed, epoch < 2**63``).

How keys are derived (the numbers are tags; changing one changes every order of every run):

* ``run_key(seed)``: draws fixed for a whole run (of the ``*_fast`` shuffles; the exact ones draw from
  numpy's PCG64 as the reference does, ``_exact``). From it: the units' run order (tag 1), py2s's unit
  shuffles (11) and naive's affine map (12).
* ``epoch_key(seed, epoch)``: draws that change every epoch. From it: the spans' order within each
  canonical node (tag 2, then the node), each span's shuffle (10, then the span), the per-node streams
  (13, then the node, then ``NODE_*``; chunks then by chunk index) and py1e's window sizes (14).
"""

from __future__ import annotations

import numpy as np

from shardflow.shuffle._jit import jit

__all__ = [
    "mix64",
    "derive_key",
    "random_fraction",
    "random_below",
    "bit_length",
    "permute_index",
    "random_affine",
    "shuffle_in_place",
    "run_key",
    "epoch_key",
    "unit_order_key",
    "span_order_key",
    "epoch_keys",
    "node_stream_key",
    "KEY_SPAN",
    "KEY_UNIT_RUN",
    "KEY_NAIVE_RUN",
    "KEY_NODE",
    "KEY_SPAN_WINDOW",
    "NODE_BLOCK_SIZES",
    "NODE_TILES",
    "NODE_PHASE",
    "NODE_CHUNKS",
]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_EPOCH_SALT = np.uint64(0x5DEECE66D)
_ROUNDS = 4
_TWO_POW_MINUS_53 = 1.0 / 9007199254740992.0

# Tags of the streams derived from the run key and the epoch key (see the module docstring).
_TAG_RUN_ORDER, _TAG_SPAN_ORDER = 1, 2
_TAG_SPAN, _TAG_UNIT_RUN, _TAG_NAIVE_RUN, _TAG_NODE, _TAG_SPAN_WINDOW = 10, 11, 12, 13, 14

# Slots of the array of one epoch's keys that the kernels take (``epoch_keys``).
KEY_SPAN, KEY_UNIT_RUN, KEY_NAIVE_RUN, KEY_NODE, KEY_SPAN_WINDOW = range(5)
_NUM_KEYS = 5
# Sub-streams of a canonical node's key (``node_stream_key``).
NODE_BLOCK_SIZES, NODE_TILES, NODE_PHASE, NODE_CHUNKS = range(4)


# --- counter-based hashes and draws ----------------------------------------------------------------


@jit
def mix64(x: np.uint64) -> np.uint64:
    """The splitmix64 finalizer: a bijective, well-mixing hash of 64 bits."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@jit
def derive_key(key: np.uint64, value: int) -> np.uint64:
    """A new key from ``key`` and an integer (a tag, an epoch, an index): independent for each value."""
    return mix64(np.uint64(key) ^ mix64(np.uint64(value) * _GOLDEN + _GOLDEN))


@jit
def random_fraction(key: np.uint64, counter: int) -> float:
    """A uniform float in ``[0, 1)`` with 53 random bits, the ``counter``-th draw of the stream ``key``."""
    return np.float64(derive_key(key, counter) >> np.uint64(11)) * _TWO_POW_MINUS_53


@jit
def random_below(key: np.uint64, counter: int, bound: int) -> int:
    """A uniform integer in ``[0, bound)``, the ``counter``-th draw of the stream ``key`` (bound < 2**53)."""
    return np.int64(random_fraction(key, counter) * bound)


@jit
def bit_length(value: int) -> int:
    """The number of bits needed to write the non-negative ``value`` (0 for 0)."""
    length = 0
    for step in (32, 16, 8, 4, 2, 1):
        if value >> step:
            value >>= step
            length += step
    return length + (1 if value else 0)


@jit
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
def random_affine(length: int, key: np.uint64) -> tuple:
    """A random bijection ``i -> (step * i + first) % length`` of ``range(length)`` (step coprime with it)."""
    if length <= 1:
        return 1, 0
    first = random_below(key, 0, length)
    limit = min(length, np.int64(1) << 31)
    counter = 1
    while True:
        step = 1 + random_below(key, counter, limit - 1)
        a, b = step, length
        while b:
            a, b = b, a % b
        if a == 1:
            return step, first
        counter += 1


@jit
def shuffle_in_place(values: np.ndarray, key: np.uint64) -> None:
    """Fisher-Yates shuffle of a 1-D array, drawing from the sequential stream ``key``."""
    state = np.uint64(key)
    for i in range(values.shape[0] - 1, 0, -1):
        state += _GOLDEN
        j = np.int64(np.float64(mix64(state) >> np.uint64(11)) * _TWO_POW_MINUS_53 * (i + 1))
        values[i], values[j] = values[j], values[i]


# --- the keys derived from the seed ----------------------------------------------------------------


@jit
def run_key(seed: int) -> np.uint64:
    """The key of everything that is fixed for a whole run (it depends on the seed only)."""
    return mix64(np.uint64(seed))


@jit
def epoch_key(seed: int, epoch: int) -> np.uint64:
    """The key of everything that changes from one epoch to the next."""
    return derive_key(mix64(np.uint64(seed) ^ _EPOCH_SALT), epoch)


@jit
def unit_order_key(seed: int) -> np.uint64:
    """The key of the units' order, fixed for the run (the span layout cuts it at canonical nodes)."""
    return derive_key(run_key(seed), _TAG_RUN_ORDER)


@jit
def span_order_key(seed: int, epoch: int) -> np.uint64:
    """The key of the spans' order in an epoch; each canonical node draws from ``derive_key(it, node)``."""
    return derive_key(epoch_key(seed, epoch), _TAG_SPAN_ORDER)


@jit
def epoch_keys(seed: int, epoch: int) -> np.ndarray:
    """The keys of one epoch's kernels, by slot (``KEY_*``), each from the run key or the epoch key."""
    run = run_key(seed)
    now = epoch_key(seed, epoch)
    keys = np.empty(_NUM_KEYS, np.uint64)
    keys[KEY_SPAN] = derive_key(now, _TAG_SPAN)
    keys[KEY_UNIT_RUN] = derive_key(run, _TAG_UNIT_RUN)
    keys[KEY_NAIVE_RUN] = derive_key(run, _TAG_NAIVE_RUN)
    keys[KEY_NODE] = derive_key(now, _TAG_NODE)
    keys[KEY_SPAN_WINDOW] = derive_key(now, _TAG_SPAN_WINDOW)
    return keys


@jit
def node_stream_key(nodes_key: np.uint64, node: int, stream: int) -> np.uint64:
    """Canonical node ``node``'s stream ``stream`` (a ``NODE_*``), from the epoch's ``keys[KEY_NODE]``."""
    return derive_key(derive_key(nodes_key, node), stream)
