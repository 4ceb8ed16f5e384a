"""Image classification from a class-per-folder tree converted by ``python -m shardflow.convert.imagefolder``.

    python examples/image_classification.py                       # writes a tiny image tree, converts, trains
    python examples/image_classification.py --images ~/imagenette --epochs 5

The conversion keeps each image file's bytes as they are (``x``) with its class index (``y``) and the class
names in ``classes.json``; ``StreamingImageFolder`` decodes them with Pillow and gives ``(image, class)``
pairs through ``transform`` (here a plain numpy-to-tensor step: torchvision is not needed). A small CNN
trains on them and the example reports its accuracy on the training split after each epoch, exiting with 1
below ``--min-accuracy``. Without ``--images`` it draws 3 classes of 16x16 PNGs (mostly red, green or
blue noise) first.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tiny_data import default_folder

from shardflow.dataset import StreamingDataLoader, StreamingImageFolder

COLOURS = ("red", "green", "blue")


def draw_images(root: Path, per_class: int) -> Path:
    """``root/<colour>/<i>.png``: noise whose ``colour`` channel is the brightest."""
    if root.exists():
        return root
    rng = np.random.default_rng(0)
    partial = root.with_name(root.name + ".partial")
    for channel, colour in enumerate(COLOURS):
        (partial / colour).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 150, size=(16, 16, 3), dtype=np.uint8)
            pixels[:, :, channel] += 100
            Image.fromarray(pixels).save(partial / colour / f"{i}.png")
    partial.rename(root)
    return root


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a float tensor (channels, height, width) in [0, 1]."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, default=None, help="root/<class>/<image> (default: drawn)")
    parser.add_argument(
        "--out", type=Path, default=None, help="the converted dataset (default: a temp folder)"
    )
    parser.add_argument("--cache", default=None, help="cache folder (default: shardflow's own)")
    parser.add_argument("--per-class", type=int, default=100, help="images drawn per class")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--min-accuracy", type=float, default=0.8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    images = args.images or draw_images(default_folder(f"images-{args.per_class}"), args.per_class)
    out = args.out or default_folder(f"images-{args.per_class}-mds")
    if not (out / "index.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "shardflow.convert.imagefolder",
                str(images),
                "--out",
                str(out),
                "--quiet",
            ],
            check=True,
        )

    dataset = StreamingImageFolder(remote=str(out), local=args.cache, shuffle=True, transform=to_tensor)
    loader = StreamingDataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    classes = len(dataset.classes)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, classes),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    accuracy = 0.0
    for epoch in range(args.epochs):
        right = seen = 0
        for pictures, targets in loader:
            logits = model(pictures)
            loss = torch.nn.functional.cross_entropy(logits, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            right += int((logits.argmax(dim=1) == targets).sum())
            seen += len(targets)
        accuracy = right / seen
        print(f"epoch {epoch}: {seen} images of {classes} classes {dataset.classes}, accuracy {accuracy:.2f}")
    if accuracy < args.min_accuracy:
        print(f"accuracy {accuracy:.2f} is below {args.min_accuracy}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
