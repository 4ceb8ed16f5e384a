"""``python -m shardflow.convert``: list the converters and how to run each."""

from __future__ import annotations

import importlib
import logging
import sys

__all__ = ["CONVERTERS", "main"]

CONVERTERS = [
    "imagefolder",
    "cifar10",
    "jsonl",
    "parquet",
    "webdataset",
    "coco",
    "ade20k",
    "laion",
    "enwiki",
    "pile",
    "webvid",
]


def main() -> int:
    """Log one line per converter: its command and the first line of its description."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    log = logging.getLogger("shardflow.convert")
    log.info("shardflow.convert: converters into MDS shards (each takes --help):\n")
    for name in CONVERTERS:
        module = importlib.import_module(f"shardflow.convert.{name}")
        summary = (module.__doc__ or "").strip().splitlines()[0].partition(": ")[2].replace("``", "")
        log.info("  python -m shardflow.convert.%-12s %s", name, summary)
    log.info("\nA PySpark DataFrame, from Python: shardflow.convert.spark.dataframe_to_mds(dataframe, out)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
