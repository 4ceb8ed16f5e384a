"""Process vs thread loader workers on an image pipeline: rate and time to the first batch.

Writes ``--images`` JPEG images (``--size`` pixels square, smooth noise so they compress as photos do) with
``MDSWriter`` into ``FOLDER/remote`` once, then reads an epoch with ``StreamingDataLoader(num_workers=W,
worker_kind=...)`` for each kind, alternating, ``--rounds`` times: each sample's JPEG bytes are decoded with
Pillow, resized to 224x224, flipped and made a ``uint8`` tensor ``(3, 224, 224)``. Prints, per kind, the
median images per second over the epoch and the median time from ``iter(loader)`` to the first batch.
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shardflow.dataset import StreamingDataLoader, StreamingDataset
from shardflow.format import MDSWriter

logger = logging.getLogger("thread_loader_bench")


class ImagePipeline(StreamingDataset):
    """Each sample's JPEG decoded (Pillow), resized to 224, flipped, as a tensor; its label kept."""

    def get_item(self, sample_id: int) -> Any:
        from PIL import Image

        sample = super().get_item(sample_id)
        with Image.open(io.BytesIO(sample["jpeg"])) as image:
            image = image.convert("RGB").resize((224, 224)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        return {"image": pixels, "label": sample["label"]}


def write_images(remote: Path, count: int, size: int) -> None:
    """``count`` JPEG images of ``size`` x ``size`` pixels, labelled ``i % 1000``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with MDSWriter(out=str(remote), columns={"jpeg": "bytes", "label": "int"}, size_limit=1 << 24) as writer:
        for i in range(count):
            coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR)
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=90)
            writer.write({"jpeg": out.getvalue(), "label": i % 1000})


def one_epoch(remote: Path, kind: str, workers: int, batch_size: int) -> tuple[float, float]:
    """``(images per second, seconds to the first batch)`` of one epoch read with ``kind`` workers."""
    dataset = ImagePipeline(remote=str(remote), batch_size=batch_size)
    loader = StreamingDataLoader(dataset, batch_size=batch_size, num_workers=workers, worker_kind=kind)
    started = time.perf_counter()
    first = None
    images = 0
    for batch in loader:
        if first is None:
            first = time.perf_counter() - started
        images += len(batch["label"])
    return images / (time.perf_counter() - started), first or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the images are written (once)")
    parser.add_argument("--images", type=int, default=2000, help="images in the dataset (default 2000)")
    parser.add_argument("--size", type=int, default=384, help="side of each stored image (default 384)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of each kind (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="epochs per kind, alternating (default 3)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    remote = args.folder / "remote"
    if not (remote / "index.json").exists():
        write_images(remote, args.images, args.size)
    results: dict[str, list[tuple[float, float]]] = {"process": [], "thread": []}
    for _ in range(args.rounds):
        for kind in results:
            results[kind].append(one_epoch(remote, kind, args.workers, args.batch_size))
    for kind, runs in results.items():
        rate = statistics.median(run[0] for run in runs)
        first = statistics.median(run[1] for run in runs)
        logger.info("%-7s x%d: %7.0f images/s, first batch after %.3f s", kind, args.workers, rate, first)


if __name__ == "__main__":
    main()
