"""Batches that DataLoader workers send several at a time, yielded in the order of the one-by-one path.

torch's DataLoader moves one item per worker task: a pickle, a pipe write, a wake-up and its bookkeeping
on both sides, about 0.1-0.2 ms per item on a small machine, as much as reading a batch of small images
takes. The batch path's workers therefore yield :class:`Bundle` s of up to :data:`BUNDLE` batches (1, 2,
4, ... at first, so that the first batch waits for itself only; fewer for big batches), and
:func:`unbundle` restores the order of the one-by-one path: round robin over the workers, each worker's
batches in its order, a worker left out once it has no more. This holds because the DataLoader hands out
each worker's items in turn and skips a worker that has stopped, and every worker's bundles have the same
sizes (only a last one is shorter).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

__all__ = ["BUNDLE", "BUNDLE_BYTES", "Bundle", "batches_per_bundle", "bundle", "unbundle"]

BUNDLE = 8
"""The most batches a worker sends at a time."""

BUNDLE_BYTES = 8 << 20
"""About the most bytes of batches a worker sends at a time (big batches go one by one)."""


@dataclass(frozen=True)
class Bundle:
    """Consecutive batches of worker ``worker``."""

    worker: int
    batches: list[Any]


def batches_per_bundle(batch_bytes: float) -> int:
    """Batches in a full bundle when a batch holds about ``batch_bytes``: :data:`BUNDLE`, fewer when they
    would exceed :data:`BUNDLE_BYTES`, at least one. Every worker must reckon the same number (from the
    dataset's index, not from the batches it reads), for :func:`unbundle` to restore the order."""
    return max(1, min(BUNDLE, int(BUNDLE_BYTES // max(batch_bytes, 1))))


def bundle(batches: Iterator[Any], worker: int, most: int = BUNDLE) -> Iterator[Bundle]:
    """``batches`` in bundles of 1, 2, 4, ... up to ``most``; only the last one may be shorter."""
    size = 1
    while chunk := list(islice(batches, size)):
        yield Bundle(worker, chunk)
        size = min(2 * size, most)


def unbundle(bundles: Iterator[Bundle], workers: int) -> Iterator[Any]:
    """The batches of ``bundles`` (from a DataLoader of ``workers`` workers) in round-robin order.

    At a worker's turn with none of its batches at hand, the next bundle is its own unless it has stopped:
    then the bundle is another's, and the worker is left out from then on (taken back should a bundle of
    its own still come, so that no batch is ever dropped).
    """
    queues: list[deque[Any]] = [deque() for _ in range(workers)]
    live = [True] * workers
    turn = 0
    while True:
        queue = queues[turn]
        if not queue and live[turn]:
            item = next(bundles, None)
            if item is None:
                live = [False] * workers
            else:
                queues[item.worker].extend(item.batches)
                live[item.worker] = True
                live[turn] = item.worker == turn
        if queue:
            yield queue.popleft()
        elif not any(live) and not any(queues):
            return
        turn = (turn + 1) % workers
