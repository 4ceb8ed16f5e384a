"""_pcg64 reproduces numpy's default_rng draw for draw: raw outputs, shuffle, integers, uniform, jumps."""

from __future__ import annotations

import numpy as np
import pytest

from shardflow.shuffle import _pcg64 as pcg
from shardflow.shuffle._jit import jit


@jit
def _raw(state: np.ndarray, count: int) -> np.ndarray:
    out = np.empty(count, np.uint64)
    s = pcg.load(state)
    for i in range(count):
        s, out[i] = pcg.next64(s)
    pcg.store(state, s)
    return out


@jit
def _integers(state: np.ndarray, low: int, high: int, count: int) -> np.ndarray:
    out = np.empty(count, np.int64)
    s = pcg.load(state)
    for i in range(count):
        s, value = pcg.bounded(s, high - 1 - low)
        out[i] = low + value
    pcg.store(state, s)
    return out


@jit
def _uniform(state: np.ndarray, low: float, high: float, count: int) -> np.ndarray:
    out = np.empty(count, np.float64)
    s = pcg.load(state)
    for i in range(count):
        s, fraction = pcg.next_double(s)
        out[i] = low + (high - low) * fraction
    pcg.store(state, s)
    return out


@pytest.mark.parametrize("seed", [0, 5, 9176, 2**63 - 1, 2**70 + 3])
def test_every_draw_equals_numpys(seed: int) -> None:
    state, rng = pcg.initial_state(seed), np.random.default_rng(seed)
    assert np.array_equal(_raw(state, 500), rng.bit_generator.random_raw(500))
    for k in range(40):  # interleaved, so that the 32-bit half-draw buffer carries between methods
        expected = np.arange(7 + 3 * k)
        rng.shuffle(expected)
        ours = np.arange(7 + 3 * k)
        pcg.shuffle(state, ours)
        assert np.array_equal(ours, expected)
        assert _integers(state, 3, 1000 + 977 * k, 1)[0] == rng.integers(3, 1000 + 977 * k)
        assert np.array_equal(_integers(state, 0, 5 + k, 3), rng.integers(0, 5 + k, 3))
        assert _integers(state, 7, 8, 1)[0] == rng.integers(7, 8)  # one value: no draw
        assert _integers(state, 0, 2**40 + k, 1)[0] == rng.integers(0, 2**40 + k)
        assert _integers(state, 0, 2**32, 1)[0] == rng.integers(0, 2**32)
        assert np.array_equal(_uniform(state, -3.5, 12.0, 5 + k), rng.uniform(-3.5, 12.0, 5 + k))
        listed = list(range(9))
        rng.shuffle(listed)  # a list: the same draws as an array
        ours = np.arange(9)
        pcg.shuffle(state, ours)
        assert ours.tolist() == listed
        assert int(state[4]) == rng.bit_generator.state["has_uint32"]


def test_wide_shuffles_and_jumps() -> None:
    state, rng = pcg.initial_state(1), np.random.default_rng(1)
    ours = np.arange(70_000)
    pcg.shuffle(state, ours)
    assert np.array_equal(ours, rng.permutation(70_000))
    rng.bit_generator.random_raw(123_457)
    pcg.advance(state, 123_457)
    assert np.array_equal(_raw(state, 10), rng.bit_generator.random_raw(10))
