"""Equal convergence, measured: a small CNN trained on a dataset written in class order, per shuffle.

    python benchmarks/convergence.py                          # the table: 4 shuffles x 3 seeds, 5-10 min
    python benchmarks/convergence.py --seeds 0 --epochs 1 --samples 2000 --test 500   # a smoke run

Run it with ``python3 -m hatch run python benchmarks/convergence.py`` from the repository root. It
answers, at this machine's scale, the reference's claim that its shuffle trains ResNet-50 on ImageNet to the
accuracy of a global shuffle (76.51% top-1 against ImageFolder's 76.57%).

The dataset: ``--samples`` synthetic CIFAR-like images (3x32x32 ``uint8``) of ``CLASSES`` classes, written
by ``MDSWriter`` sorted by class (all of class 0, then all of class 1, ...: the worst case for shuffles that
mix only nearby samples) in shards of ``SHARD_SAMPLES`` samples. Each class is a random smooth pattern
(1/f noise: blobs and edges at several scales) at half the weight of one pattern common to all classes;
a sample is its class's pattern shifted by up to ``SHIFT`` pixels, with a random contrast and brightness,
a random smooth pattern of no class mixed in, and pixel noise, so that a small CNN learns it to a useful,
not a perfect, accuracy within the budget (about 75% after 3 epochs of 8,000 images). The test set
(``--test`` samples, drawn alike) is held in memory.

Every run trains the same CNN (two conv blocks and a linear layer; SGD with momentum, a cosine learning
rate, batch ``BATCH``) for ``--epochs`` epochs from the same initial weights per seed, and reports its
test accuracy. The runs differ only in the order of the samples:

- ``shardflow default``: ``StreamingDataset(shuffle=True)`` with every other argument left as it is
  (``py1e``, the default block size);
- ``py1e block N``: ``shuffle_algo="py1e", shuffle_block_size=--small-block``;
- ``no shuffle``: ``shuffle=False``, the class order as written;
- ``random permutation``: the whole training set in memory, a fresh ``torch.randperm`` each epoch.

The shardflow runs read through ``StreamingDataLoader(num_workers=0)`` (``shuffle_seed`` is the seed).
torch runs one thread by default (``--threads``): on two shared cores, two threads were 3x slower.
The table gives each shuffle's mean accuracy over ``--seeds`` with its spread (lowest-highest), and
checks the issue's bars: the default within 1 point of the random permutation's mean, and no shuffle
clearly worse (at least ``WORSE_BY`` points below it).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger("convergence")

CLASSES = 10
SIDE = 32
SHIFT = 4  # pixels a sample's pattern moves, each way
SEPARATION = 0.5  # weight of each class's own pattern beside the one common to all (lower: harder)
SHARD_SAMPLES = 500
BATCH = 64
LEARNING_RATE = 0.05
WORSE_BY = 5.0  # points below the random permutation that "clearly worse" means
SHUFFLES = ("shardflow default", "py1e small block", "no shuffle", "random permutation")

# -- the data -----------------------------------------------------------------------------------------


def smooth_patterns(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` patterns ``(3, SIDE, SIDE)`` of 1/f noise, each of unit standard deviation."""
    freq = np.hypot(np.fft.fftfreq(SIDE)[:, None], np.fft.rfftfreq(SIDE)[None, :])
    freq[0, 0] = np.inf
    spectrum = np.fft.rfft2(rng.standard_normal((count, 3, SIDE, SIDE))) / freq
    patterns = np.fft.irfft2(spectrum, s=(SIDE, SIDE))
    return patterns / patterns.std(axis=(1, 2, 3), keepdims=True)


class Generator:
    """The samples of one dataset: class patterns drawn once, then images of any class on demand."""

    def __init__(self, seed: int, noise: float) -> None:
        self.rng = np.random.default_rng(seed)
        patterns = smooth_patterns(np.random.default_rng(1234), CLASSES + 1)  # the same in every split
        self.classes = patterns[:1] + SEPARATION * patterns[1:]  # a part common to all, and each one's own
        self.noise = noise

    def images(self, labels: np.ndarray) -> np.ndarray:
        """``uint8`` images ``(len(labels), 3, SIDE, SIDE)`` of the given classes."""
        rng, count = self.rng, len(labels)
        shifts = rng.integers(-SHIFT, SHIFT + 1, (count, 2))
        base = np.stack(
            [
                np.roll(self.classes[c], (dy, dx), axis=(1, 2))
                for c, (dy, dx) in zip(labels, shifts, strict=True)
            ]
        )
        contrast = rng.uniform(0.6, 1.4, (count, 1, 1, 1))
        brightness = rng.uniform(-0.5, 0.5, (count, 3, 1, 1))
        clutter = smooth_patterns(rng, count)
        pixels = contrast * base + brightness + clutter + self.noise * rng.standard_normal(base.shape)
        return (128 + 40 * pixels).clip(0, 255).astype(np.uint8)


def write_class_ordered(folder: Path, samples: int, noise: float) -> None:
    """``samples`` training images in class order as MDS ``{x: ndarray uint8 (3, SIDE, SIDE), y: int}``."""
    from shardflow.format import MDSWriter

    generator = Generator(seed=1, noise=noise)
    labels = np.repeat(np.arange(CLASSES), -(-samples // CLASSES))[:samples]
    shard_bytes = SHARD_SAMPLES * (3 * SIDE * SIDE + 16)
    columns = {"x": f"ndarray:uint8:3,{SIDE},{SIDE}", "y": "int"}
    with MDSWriter(out=str(folder), columns=columns, size_limit=shard_bytes) as writer:
        for begin in range(0, samples, 1000):
            chunk = labels[begin : begin + 1000]
            for image, label in zip(generator.images(chunk), chunk.tolist(), strict=True):
                writer.write({"x": image, "y": label})


def test_set(count: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out images and labels, in memory."""
    generator = Generator(seed=2, noise=noise)
    labels = np.arange(count) % CLASSES
    return torch.from_numpy(generator.images(labels)), torch.from_numpy(labels)


# -- training -----------------------------------------------------------------------------------------


def small_cnn() -> nn.Module:
    """Two conv blocks and a linear classifier (about 10k parameters)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, CLASSES),
    )


def as_input(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images to the network's float input."""
    return (images.float() - 128) / 64


def batches(shuffle: str, folder: Path, seed: int, small_block: int, memory: Any) -> Any:
    """A function of no argument returning one epoch's ``(images, labels)`` batches for ``shuffle``."""
    if shuffle == "random permutation":
        images, labels = memory
        generator = torch.Generator().manual_seed(seed)

        def epoch() -> Any:
            order = torch.randperm(len(labels), generator=generator)
            for begin in range(0, len(order), BATCH):
                ids = order[begin : begin + BATCH]
                yield images[ids], labels[ids]

        return epoch
    from shardflow.dataset import StreamingDataLoader, StreamingDataset

    options: dict[str, Any] = {"shuffle": shuffle != "no shuffle", "shuffle_seed": seed}
    if shuffle == "py1e small block":
        options.update(shuffle_algo="py1e", shuffle_block_size=small_block)
    dataset = StreamingDataset(local=str(folder), batch_size=BATCH, **options)
    loader = StreamingDataLoader(dataset, batch_size=BATCH, num_workers=0)

    def epoch_of_loader() -> Any:
        for batch in loader:
            yield batch["x"], batch["y"]

    return epoch_of_loader


def train(shuffle: str, seed: int, args: argparse.Namespace, memory: Any, test: Any) -> float:
    """Test accuracy (%) of the CNN trained for ``args.epochs`` epochs in ``shuffle``'s order."""
    torch.manual_seed(seed)
    model = small_cnn()
    epoch = batches(shuffle, args.folder, seed, args.small_block, memory)
    steps = args.epochs * math.ceil(args.samples / BATCH)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(args.epochs):
        for images, labels in epoch():
            loss = nn.functional.cross_entropy(model(as_input(images)), labels.long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    images, labels = test
    with torch.no_grad():
        predicted = torch.cat(
            [model(as_input(images[k : k + 1000])).argmax(1) for k in range(0, len(labels), 1000)]
        )
    return 100.0 * float((predicted == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=12_000, help="training images (default 12000)")
    parser.add_argument("--test", type=int, default=5_000, help="test images (default 5000)")
    parser.add_argument("--epochs", type=int, default=4, help="the budget, in epochs (default 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--small-block", type=int, default=1000, help="py1e's small shuffle_block_size")
    parser.add_argument("--noise", type=float, default=1.0, help="pixel noise, in pattern units (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch's threads (default 1)")
    parser.add_argument("--only", nargs="+", choices=SHUFFLES, help="these shuffles only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    shuffles = list(args.only or SHUFFLES)
    workdir = Path(tempfile.mkdtemp(prefix="convergence-"))
    args.folder = workdir / "train"
    try:
        started = time.perf_counter()
        write_class_ordered(args.folder, args.samples, args.noise)
        memory = None
        if "random permutation" in shuffles:
            from shardflow.format import LocalDataset

            samples = LocalDataset(str(args.folder)).get_batch(np.arange(args.samples))
            memory = (
                torch.from_numpy(np.stack([sample["x"] for sample in samples])),
                torch.tensor([sample["y"] for sample in samples]),
            )
        test = test_set(args.test, args.noise)
        logger.info("data written in %.0f s", time.perf_counter() - started)
        results: dict[str, list[float]] = {}
        for shuffle in shuffles:
            for seed in args.seeds:
                began = time.perf_counter()
                accuracy = train(shuffle, seed, args, memory, test)
                results.setdefault(shuffle, []).append(accuracy)
                logger.info(
                    "%s, seed %d: %.2f%% in %.0f s", shuffle, seed, accuracy, time.perf_counter() - began
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, list[float]]) -> None:
    """The markdown table of accuracies per shuffle, then the bars."""
    random_mean = np.mean(results["random permutation"]) if "random permutation" in results else None
    print("| shuffle | test accuracy % (mean) | spread (lowest-highest) | per seed | vs random permutation |")
    print("| --- | ---: | ---: | --- | ---: |")
    for shuffle, found in results.items():
        name = f"py1e block {args.small_block}" if shuffle == "py1e small block" else shuffle
        versus = "-" if random_mean is None else f"{np.mean(found) - random_mean:+.2f}"
        seeds = ", ".join(f"{value:.2f}" for value in found)
        print(f"| {name} | {np.mean(found):.2f} | {min(found):.2f}-{max(found):.2f} | {seeds} | {versus} |")
    print(
        f"\n{args.samples:,} training images in class order ({CLASSES} classes, shards of {SHARD_SAMPLES}), "
        f"{args.test:,} test images, {args.epochs} epochs of batch {BATCH}, seeds {args.seeds}; "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads."
    )
    if random_mean is None:
        return
    for shuffle, bar, holds in (
        ("shardflow default", "within 1 point of the random permutation", lambda d: abs(d) <= 1.0),
        (
            "no shuffle",
            f"at least {WORSE_BY:g} points below the random permutation",
            lambda d: d <= -WORSE_BY,
        ),
    ):
        if shuffle in results:
            delta = float(np.mean(results[shuffle]) - random_mean)
            print(f"- {shuffle}: {delta:+.2f} points, {bar}: {'pass' if holds(delta) else '**FAIL**'}")


if __name__ == "__main__":
    main()
