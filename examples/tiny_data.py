"""Small helpers the examples share: a tiny dataset written once, the framework recipes' common options, and
what each rank read.

Not part of shardflow: the examples import it (their folder is on ``sys.path`` when run as scripts).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shardflow.format import MDSWriter

__all__ = [
    "FEATURES",
    "CLASSES",
    "COLUMNS",
    "classes_sample",
    "default_folder",
    "ensure_dataset",
    "recipe_parser",
    "write_record",
]

FEATURES = 8
CLASSES = 4
COLUMNS = {"id": "int", "x": f"ndarray:float32:{FEATURES}", "y": "int"}
"""The classification samples of the framework recipes: ``y`` is the index of ``x``'s largest half-pair."""


def classes_sample(i: int) -> dict[str, Any]:
    """Sample ``i``: features drawn from ``i``, and a class a linear model can learn."""
    x = np.random.default_rng(i).normal(size=FEATURES).astype(np.float32)
    return {"id": i, "x": x, "y": int(x.reshape(CLASSES, -1).sum(axis=1).argmax())}


def default_folder(name: str) -> Path:
    """``<tmp>/shardflow-examples/<name>``: where an example writes its data when given no folder."""
    return Path(tempfile.gettempdir()) / "shardflow-examples" / name


def _write(folder: Path, samples: Iterator[dict[str, Any]], columns: dict[str, str], size_limit: int) -> None:
    with MDSWriter(out=str(folder), columns=columns, compression="zstd", size_limit=size_limit) as writer:
        for sample in samples:
            writer.write(sample)


def ensure_dataset(
    folder: Path,
    count: int,
    sample: Callable[[int], dict[str, Any]] = classes_sample,
    columns: dict[str, str] = COLUMNS,
    size_limit: int = 1 << 12,
) -> Path:
    """Write ``count`` samples into ``folder`` as MDS unless it holds a dataset already.

    Under a launcher that starts every rank at once (torchrun), rank 0 writes into a temporary folder that
    it renames when complete, and the other ranks wait for it.
    """
    if (folder / "index.json").exists():
        return folder
    if int(os.environ.get("RANK", "0")) == 0:
        partial = folder.with_name(f".{folder.name}.{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        _write(partial, (sample(i) for i in range(count)), columns, size_limit)
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, folder)
        return folder
    deadline = time.monotonic() + 120
    while not (folder / "index.json").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not write the example dataset {folder} within 120 s")
        time.sleep(0.2)
    return folder


def recipe_parser(description: str | None, workers: int = 1) -> argparse.ArgumentParser:
    """The options every framework recipe takes: the dataset and its cache, the run's size, ``--resume`` and
    ``--record``. Each recipe adds its checkpoint folder and where to stop."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--remote", type=Path, default=default_folder("classes"), help="the dataset")
    parser.add_argument("--cache", default=None, help="cache folder (default: shardflow's own)")
    parser.add_argument("--samples", type=int, default=512, help="samples to write when --remote is empty")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="per rank")
    parser.add_argument("--workers", type=int, default=workers, help="DataLoader workers per rank")
    parser.add_argument("--resume", default=None, help="a checkpoint to continue from")
    parser.add_argument("--record", default=None, help="write each rank's ids to this path ({rank})")
    return parser


def write_record(pattern: str | None, rank: int, ids: list[int], samples_per_epoch: int, **more: Any) -> None:
    """Save the ids a rank trained on, in order, to ``pattern.format(rank=rank)`` (for the tests)."""
    if pattern is None:
        return
    record = {"rank": rank, "ids": ids, "samples_per_epoch": samples_per_epoch, **more}
    Path(pattern.format(rank=rank)).write_text(json.dumps(record))
