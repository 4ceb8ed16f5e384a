"""Bundles of batches: sizes, and the one-by-one order restored from what a DataLoader delivers."""

from __future__ import annotations

import itertools
import random

import pytest

from shardflow.dataset._bundles import BUNDLE, BUNDLE_BYTES, batches_per_bundle, bundle, unbundle


def _round_robin(streams: list[list]) -> list:
    """What a DataLoader delivers from per-worker streams of items: each live worker's next item in turn,
    a worker skipped once it has no more."""
    iterators = [iter(stream) for stream in streams]
    live = list(range(len(streams)))
    out = []
    while live:
        for w in list(live):
            item = next(iterators[w], None)
            if item is None:
                live.remove(w)
            else:
                out.append(item)
    return out


def test_bundles_grow_to_the_most_and_keep_every_batch() -> None:
    sizes = [len(b.batches) for b in bundle(iter(range(100)), worker=3)]
    assert sizes[:5] == [1, 2, 4, 8, 8] and max(sizes) == BUNDLE
    assert [x for b in bundle(iter(range(100)), 3) for x in b.batches] == list(range(100))
    assert all(b.worker == 3 for b in bundle(iter(range(10)), 3))
    assert list(bundle(iter([]), 0)) == []


@pytest.mark.parametrize(
    "lengths", [(5, 5), (5, 3), (3, 5), (0, 4), (17, 9, 1), (1,), (30, 30, 29, 0), (64, 65), (0, 0)]
)
def test_unbundle_restores_the_one_by_one_order(lengths: tuple[int, ...]) -> None:
    streams = [[(w, i) for i in range(n)] for w, n in enumerate(lengths)]
    delivered = _round_robin([list(bundle(iter(s), w)) for w, s in enumerate(streams)])
    assert list(unbundle(iter(delivered), len(lengths))) == _round_robin(streams)


def test_unbundle_drops_nothing_when_bundles_come_out_of_turn() -> None:
    streams = [[(w, i) for i in range(n)] for w, n in enumerate((20, 7, 13))]
    delivered = [b for w, s in enumerate(streams) for b in bundle(iter(s), w)]
    random.Random(4).shuffle(delivered)
    got = list(unbundle(iter(delivered), 3))
    assert sorted(got) == sorted(itertools.chain(*streams))
    for w in range(len(streams)):
        order = [b.batches for b in delivered if b.worker == w]
        assert [x for x in got if x[0] == w] == [x for batches in order for x in batches]



def test_big_batches_go_fewer_at_a_time() -> None:
    assert batches_per_bundle(0) == batches_per_bundle(768_000) == BUNDLE
    assert batches_per_bundle(BUNDLE_BYTES / 2) == 2
    assert batches_per_bundle(38_000_000) == 1
