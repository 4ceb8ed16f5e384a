"""Compile the kernels ahead of the first epoch: ``python -m shardflow.shuffle.warm [--algos ...]``.

numba compiles a kernel on its first call and caches the machine code on disk (see ``_jit``), so the first
epoch on a fresh machine, container or CI job waits for the compiler (about 5 s for the default ``py1e``
order on 2 cores) and every later process loads the cache (about 0.1 s). Running this once where the
package is installed (an image's build step, an environment's set-up: the repository's hatch environments
do) moves that wait out of training. It orders a tiny epoch the way a ``StreamingDataset`` worker does,
for each algorithm asked.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

import numpy as np

from shardflow.shuffle.order import SampleOrder, WorldShape
from shardflow.shuffle.shuffle import SHUFFLE_ALGOS

__all__ = ["warm", "main"]

logger = logging.getLogger("shardflow.shuffle.warm")

DEFAULT_ALGOS = ("py1e",)


def warm(algos: Sequence[str] = DEFAULT_ALGOS, unshuffled: bool = True) -> float:
    """Compile (or load from the disk cache) what a worker's epoch runs with each of ``algos``.

    Returns the seconds it took. ``unshuffled`` also covers ``shuffle=False``.
    """
    started = time.perf_counter()
    world = WorldShape(1, 1, 1)
    cases = [(True, algo) for algo in algos] + ([(False, "py1e")] if unshuffled else [])
    for shuffle, algo in cases:
        order = SampleOrder(
            np.full(8, 64), num_canonical_nodes=2, batch_size=4, shuffle=shuffle, shuffle_algo=algo
        )
        ids = order.worker_sample_ids(0, world, 0, 0, 0)
        if not np.array_equal(np.sort(ids), np.arange(512)):
            raise RuntimeError(f"the warm-up epoch of {algo!r} is not a permutation of its samples")
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shardflow.shuffle.warm",
        description="Compile the shuffle kernels into numba's disk cache ahead of the first epoch.",
    )
    parser.add_argument(
        "--algos",
        default=",".join(DEFAULT_ALGOS),
        help=f"comma-separated algorithms or 'all' (default: %(default)s; known: {', '.join(SHUFFLE_ALGOS)})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    algos = SHUFFLE_ALGOS if args.algos == "all" else tuple(a for a in args.algos.split(",") if a)
    unknown = sorted(set(algos) - set(SHUFFLE_ALGOS))
    if unknown:
        parser.error(f"unknown shuffle algorithm(s) {', '.join(unknown)}; known: {', '.join(SHUFFLE_ALGOS)}")
    seconds = warm(algos)
    logger.info("shardflow.shuffle: kernels for %s ready in %.1f s", ", ".join(algos), seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
