"""WebDataset tars read by shardflow and by the webdataset library's own loader, shuffling on, side by side.

Writes ``--tars`` tars of ``--per-tar`` samples ``{"jpg": <--bytes random bytes>, "cls": i}`` with the
webdataset library's ``TarWriter`` into ``FOLDER/tars`` once. Then, alternating ``--rounds`` times, reads an
epoch with:

- shardflow: ``StreamingDataset(local=FOLDER/tars, shuffle=True)`` (the tars detected and indexed from their
  headers, read in place; a global shuffle) through ``StreamingDataLoader(num_workers=W)``;
- webdataset: ``WebDataset(urls, shardshuffle=len(urls)).shuffle(--buffer)`` (tar order shuffled, then a
  shuffle buffer: the library's way of shuffling) through ``WebLoader(num_workers=W)``.

Both hand back the raw bytes (no decoding), in batches of ``--batch-size``. Prints the median samples per
second of each and their ratio. Needs ``pip install webdataset``. The defaults run in well under a minute.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from pathlib import Path

logger = logging.getLogger("webdataset_bench")


def write_tars(folder: Path, tars: int, per_tar: int, size: int) -> list[str]:
    """The tars' paths, written once."""
    import webdataset

    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / f"part-{t:04d}.tar") for t in range(tars)]
    for t, path in enumerate(paths):
        if os.path.exists(path):
            continue
        with webdataset.TarWriter(path + ".tmp") as writer:
            for i in range(t * per_tar, (t + 1) * per_tar):
                writer.write({"__key__": f"s{i:08d}", "jpg": os.urandom(size), "cls": i})
        os.replace(path + ".tmp", path)
    return paths


def shardflow_epoch(folder: Path, workers: int, batch_size: int) -> float:
    """Samples per second of one shuffled epoch read by shardflow."""
    from shardflow.dataset import StreamingDataLoader, StreamingDataset

    dataset = StreamingDataset(local=str(folder), shuffle=True, batch_size=batch_size)
    loader = StreamingDataLoader(dataset, batch_size=batch_size, num_workers=workers)
    started, samples = time.perf_counter(), 0
    for batch in loader:
        samples += len(batch["cls"])
    return samples / (time.perf_counter() - started)


def webdataset_epoch(paths: list[str], workers: int, batch_size: int, buffer: int) -> float:
    """Samples per second of one shuffled epoch read by the webdataset library's own loader."""
    import webdataset

    dataset = webdataset.WebDataset(paths, shardshuffle=len(paths), empty_check=False).shuffle(buffer)
    loader = webdataset.WebLoader(dataset.batched(batch_size), batch_size=None, num_workers=workers)
    started, samples = time.perf_counter(), 0
    for batch in loader:
        samples += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch["cls"])
    return samples / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the tars are written (once)")
    parser.add_argument("--tars", type=int, default=8, help="tars (default 8)")
    parser.add_argument("--per-tar", type=int, default=2500, help="samples per tar (default 2500)")
    parser.add_argument("--bytes", type=int, default=2048, help="bytes of each sample's jpg (default 2048)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of each (default 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--buffer", type=int, default=1000, help="webdataset's shuffle buffer (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="epochs of each, alternating (default 3)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tars = args.folder / "tars"
    paths = write_tars(tars, args.tars, args.per_tar, args.bytes)
    shardflow_epoch(tars, 0, args.batch_size)  # builds and caches the index: not part of the timings
    rates: dict[str, list[float]] = {"shardflow": [], "webdataset": []}
    for _ in range(args.rounds):
        rates["shardflow"].append(shardflow_epoch(tars, args.workers, args.batch_size))
        rates["webdataset"].append(webdataset_epoch(paths, args.workers, args.batch_size, args.buffer))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    samples = args.tars * args.per_tar
    logger.info("%d samples of %d bytes in %d tars, %d workers, batch %d, shuffled; load average %s", samples,
                args.bytes, args.tars, args.workers, args.batch_size,
                " ".join(f"{x:.1f}" for x in os.getloadavg()))  # fmt: skip
    logger.info("| reader | samples/s (median of %d) |", args.rounds)
    logger.info("| --- | --- |")
    for name, rate in medians.items():
        logger.info("| %s | %.0f |", name, rate)
    logger.info("shardflow / webdataset: %.2fx", medians["shardflow"] / medians["webdataset"])


if __name__ == "__main__":
    main()
