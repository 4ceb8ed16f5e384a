"""Time from a StreamingDataset's construction to its first sample, cold (empty numba cache) or warm.

Writes 1M ``int`` samples with ``MDSWriter`` into ``FOLDER/remote`` once, then times
``StreamingDataset(remote, local, shuffle=True)`` to ``next(iter(ds))``. Run it with ``NUMBA_CACHE_DIR``
pointing at an empty folder for the cold figure, again (after removing ``FOLDER/cache``) for the warm one;
``benchmarks/RESULTS.md`` has the commands.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from shardflow.dataset import StreamingDataset
from shardflow.format import MDSWriter

logger = logging.getLogger("cold_start_bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the dataset and its cache go")
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples of the dataset (default 1M)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    remote = args.folder / "remote"
    if not (remote / "index.json").exists():
        with MDSWriter(out=str(remote), columns={"x": "int"}, size_limit=1 << 20) as writer:
            for i in range(args.samples):
                writer.write({"x": i})
    started = time.monotonic()
    dataset = StreamingDataset(remote=str(remote), local=str(args.folder / "cache"), shuffle=True)
    next(iter(dataset))
    logger.info("construction to first sample: %.1f s", time.monotonic() - started)


if __name__ == "__main__":
    main()
