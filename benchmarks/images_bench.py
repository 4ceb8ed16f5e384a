"""JPEG training pipelines side by side: images/s into the training loop, shardflow against its peers.

    python benchmarks/images_bench.py                                    # this machine: 2 workers, ~4 min
    python benchmarks/images_bench.py --images 200 --seconds 3           # a smoke run
    python benchmarks/images_bench.py --only shardflow-thread imagefolder   # some loaders only
    python benchmarks/images_bench.py --workers 1 4 12 --images 60000 --seconds 15 --train resnet50
                                                                         # the GPU host (CUDA torch):
                                                                         # shardflow-gpu-decode included

Run it with ``PYTHONPATH=/tmp/tvlib python3 -m hatch run python benchmarks/images_bench.py`` from the
repository root after ``pip install --no-deps --target /tmp/tvlib torchvision==0.28.0`` (the dev
environment has ``webdataset`` but not torchvision: see ``benchmarks/README.md``). It reproduces, at this
machine's scale, the throughput table of mosaicml-streaming's README (StreamingDataset, ImageFolder and
WebDataset on ImageNet): every loader delivers batches of ``uint8`` CHW tensors of 224x224 after the same
augmentation, torchvision's ``RandomResizedCrop(224)`` and ``RandomHorizontalFlip()`` on the
Pillow-decoded image, at the same number of workers, shuffled.

The images are ImageNet-like JPEGs (400x350, quality 90, 4:2:0): a "dead leaves" picture (1,500
overlapping ellipses with power-law radii, coloured from a smooth 1/f colour field: sharp occlusion edges
at every scale, as in photographs) plus a 1/f ("pink") noise texture. Their spectrum falls off as natural
images' does, so they compress as photographs do; a per-image sensor-like grain varies their size (the
run logs them: about 110 KB on average, 100-116 KB, as ImageNet's ~110 KB average at 500x375).
``--unique`` distinct images are generated and repeated up to ``--images``; every copy is stored, so
every loader reads as many bytes as distinct images would need.

Written once per run into a temporary folder: MDS (shardflow's ``MDSWriter``, columns ``{x: bytes,
y: int}`` as ``shardflow.convert.imagefolder`` writes; read by shardflow and by mosaicml-streaming 0.13),
an ImageFolder tree (hard links), LitData chunks (its ``BinaryWriter``, in the reference venv) and
WebDataset tars (``.jpg`` + ``.cls``). The loaders, each measured in a fresh process:

- ``imagefolder``: ``torchvision.datasets.ImageFolder`` + torch's ``DataLoader(shuffle=True)``
  (the reference table's "ImageFolder" row);
- ``mosaicml``: mosaicml-streaming 0.13's ``StreamingDataset`` (``__getitem__`` decodes and augments) +
  ``DataLoader``, in the reference venv of ../shared/reference/setup.sh;
- ``litdata``: ``litdata.StreamingDataset`` + its ``StreamingDataLoader``, in the same venv;
- ``webdataset``: ``webdataset.WebDataset`` (shards shuffled, a 1,000-sample shuffle buffer) +
  ``DataLoader``;
- ``shardflow-process`` / ``shardflow-thread``: ``StreamingImageFolder(transform=...)`` +
  ``StreamingDataLoader(worker_kind=...)``, the per-sample path (the augmentation behind a plain callable,
  which no fast path recognises);
- ``shardflow-fast-process`` / ``shardflow-fast-thread``: the same with the augmentation as it is, which
  shardflow's JPEG fast path (``shardflow.dataset.images``) recognises: crops decoded at a reduced scale, a
  batch at a time. Where this shardflow has none, ``--fast-path auto`` (the default) writes "absent" in
  those rows, ``require`` stops, ``off`` leaves them out (and the next);
- ``shardflow-gpu-decode``: the fast path with ``StreamingImageFolder(decode_device="cuda")`` and thread
  workers: nvJPEG decodes each batch whole (torchvision's ``decode_jpeg``) and the crops are cut on the
  GPU, so the batches arrive there (the clock waits for the GPU's queue). The row reads "absent" where
  torch has no CUDA (or this shardflow no ``decode_device``); run it with ``--only shardflow-gpu-decode``.

Each rate is images per second over ``--seconds`` (or to the end of the epoch: a log line says when,
then pass more ``--images``), timed from the batch after the first one per worker (five when training:
CUDA and cuDNN start-up), so that what workers prepared while the first batch was awaited does not count;
the time to the first batch is a column of its own.

``--train resnet50`` adds, per loader, the rate while every batch also feeds a ResNet-50 training step on
the GPU (``channels_last``, bf16 autocast, SGD; batches pinned and copied with ``non_blocking``), and a
row of the model alone on a batch that stays on the GPU: the loader keeps the GPU busy when its row comes
near that one. It needs a CUDA build of torch (and torchvision) in the python that runs the row: the
mosaicml and litdata rows read "error" there unless the reference venv has one too (``--train-device
cpu`` runs the same steps on the CPU, only to try the code path).

torchvision: the only wheel of it these machines have is a CUDA build, whose ``import`` fails beside the
CPU torch; :func:`import_torchvision` then imports it without its compiled ops, which nothing here uses.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _torchvision import import_torchvision

logger = logging.getLogger("images_bench")

WIDTH, HEIGHT = 400, 350
QUALITY = 90
LEAVES = 1500
TEXTURE = (40, 80)  # range of the pink-noise texture's standard deviation, in grey levels
GRAIN = (4, 16)  # range of the sensor-like white noise's standard deviation
CLASSES = 100
CROP = 224
SHUFFLE_BUFFER = 1000  # WebDataset's sample shuffle buffer
PEERS = ("imagefolder", "mosaicml", "litdata", "webdataset")
GPU_DECODE = "shardflow-gpu-decode"
OURS = (
    "shardflow-process",
    "shardflow-thread",
    "shardflow-fast-process",
    "shardflow-fast-thread",
    GPU_DECODE,
)
LOADERS = PEERS + OURS
IN_REFERENCE_VENV = ("mosaicml", "litdata")
GPU_ALONE = "resnet50-alone"
TRAIN_WARMUP = 5  # batches before the clock starts when training (CUDA and cuDNN start-up)

# -- the images ---------------------------------------------------------------------------------------


def _pink(rng: np.random.Generator, channels: int) -> np.ndarray:
    """``(HEIGHT, WIDTH, channels)`` noise whose amplitude falls as 1/frequency, unit variance."""
    fy = np.fft.fftfreq(HEIGHT)[:, None]
    fx = np.fft.rfftfreq(WIDTH)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = np.inf  # no constant term
    spectrum = np.fft.rfft2(rng.standard_normal((channels, HEIGHT, WIDTH))) / radius
    noise = np.fft.irfft2(spectrum, s=(HEIGHT, WIDTH))
    return (noise / noise.std()).transpose(1, 2, 0)


def photo_like(rng: np.random.Generator) -> bytes:
    """One JPEG of WIDTH x HEIGHT that compresses like a photograph (see the module docstring)."""
    from PIL import Image, ImageDraw

    field = 128 + 55 * _pink(rng, 3) + rng.uniform(-40, 40, 3)
    image = Image.fromarray(field.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    radii = np.sort(np.minimum(3 * (1 - rng.random(LEAVES)) ** (-1 / 1.5), 200))[::-1]
    widths = radii * rng.uniform(0.5, 1.5, LEAVES)
    xs, ys = rng.uniform(-20, WIDTH + 20, LEAVES), rng.uniform(-20, HEIGHT + 20, LEAVES)
    centres = field[ys.clip(0, HEIGHT - 1).astype(int), xs.clip(0, WIDTH - 1).astype(int)]
    colours = (centres + rng.normal(0, 35, (LEAVES, 3))).clip(0, 255).astype(int)
    for x, y, w, r, colour in zip(xs, ys, widths, radii, colours.tolist(), strict=True):
        draw.ellipse((x - w, y - r, x + w, y + r), fill=tuple(colour))
    texture = rng.uniform(*TEXTURE) * (_pink(rng, 1) + 0.4 * _pink(rng, 3))
    grain = rng.normal(0, rng.uniform(*GRAIN), (HEIGHT, WIDTH, 1))
    pixels = np.asarray(image, np.float32) + texture + grain
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out, format="JPEG", quality=QUALITY)
    return out.getvalue()


def write_datasets(workdir: Path, images: int, unique: int, shards: int) -> None:
    """The images as an ImageFolder tree, MDS and WebDataset tars under ``workdir`` (LitData: later)."""
    from shardflow.format import MDSWriter

    rng = np.random.default_rng(0)
    distinct = [photo_like(rng) for _ in range(min(unique, images))]
    sizes = np.array([len(data) for data in distinct]) / 1000
    logger.info(
        "%d distinct JPEGs of %dx%d at quality %d: %.0f KB on average (%.0f-%.0f KB)",
        len(distinct),
        WIDTH,
        HEIGHT,
        QUALITY,
        sizes.mean(),
        sizes.min(),
        sizes.max(),
    )
    source = workdir / "distinct"
    source.mkdir()
    for k, data in enumerate(distinct):
        (source / f"{k:06d}.jpg").write_bytes(data)
    classes = min(CLASSES, images)
    tree = workdir / "imagefolder"
    for c in range(classes):
        (tree / f"c{c:03d}").mkdir(parents=True)
    for i in range(images):
        os.link(source / f"{i % len(distinct):06d}.jpg", tree / f"c{i % classes:03d}" / f"{i:07d}.jpg")
    with MDSWriter(out=str(workdir / "mds"), columns={"x": "bytes", "y": "int"}, size_limit=1 << 26) as mds:
        for i in range(images):
            mds.write({"x": distinct[i % len(distinct)], "y": i % classes})
    (workdir / "mds" / "classes.json").write_text(
        json.dumps({"classes": [f"c{c:03d}" for c in range(classes)]})
    )
    tars = workdir / "wds"
    tars.mkdir()
    per_shard = -(-images // shards)
    for s in range(0, images, per_shard):
        with tarfile.open(tars / f"{s // per_shard:05d}.tar", "w") as tar:
            for i in range(s, min(s + per_shard, images)):
                for suffix, data in (
                    ("jpg", distinct[i % len(distinct)]),
                    ("cls", str(i % classes).encode()),
                ):
                    member = tarfile.TarInfo(f"{i:07d}.{suffix}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))


def write_litdata(workdir: Path) -> None:
    """LitData's chunks of the ImageFolder tree's images, by its BinaryWriter (in the reference venv)."""
    from litdata.streaming.writer import BinaryWriter

    files = sorted((workdir / "imagefolder").glob("*/*.jpg"), key=lambda path: path.name)
    writer = BinaryWriter(str(workdir / "litdata"), chunk_bytes="64MB")
    for index, path in enumerate(files):
        writer.add_item(index, {"x": path.read_bytes(), "y": int(path.parent.name[1:])})
    writer.done()
    writer.merge()


# -- the measuring process (one loader, one worker count) ---------------------------------------------


def augmentation() -> Callable[[Any], Any]:
    """PIL image -> ``uint8`` tensor (3, 224, 224): RandomResizedCrop(224), horizontal flip, to tensor."""
    import_torchvision()
    from torchvision.transforms import v2

    return v2.Compose(
        [v2.RandomResizedCrop(CROP, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor()]
    )


def decode(data: bytes) -> Any:
    """A JPEG's bytes as a PIL image in RGB."""
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def make_loader(name: str, workdir: Path, workers: int, batch: int, pin: bool) -> Any:
    """The loader ``name`` over its copy of the images: batches ``[uint8 images (B, 3, 224, 224), labels]``.

    Each augments with :func:`augmentation` in its workers.
    """
    from torch.utils.data import DataLoader

    augment = augmentation()
    options: dict[str, Any] = {"batch_size": batch, "num_workers": workers, "pin_memory": pin}
    if name == "imagefolder":
        folder = import_torchvision().datasets.ImageFolder(str(workdir / "imagefolder"), transform=augment)
        return DataLoader(folder, shuffle=True, **options)
    if name == "mosaicml":
        import streaming
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()

        class MosaicImages(streaming.StreamingDataset):  # type: ignore[misc]
            def __getitem__(self, index: int) -> tuple[Any, int]:
                sample = super().__getitem__(index)
                return augment(decode(sample["x"])), sample["y"]

        dataset = MosaicImages(local=str(workdir / "mds"), shuffle=True, batch_size=batch)
        return DataLoader(dataset, **options)
    if name == "litdata":
        import litdata

        class LitImages(litdata.StreamingDataset):  # type: ignore[misc]
            def __getitem__(self, index: Any) -> tuple[Any, int]:
                sample = super().__getitem__(index)
                return augment(decode(sample["x"])), sample["y"]

        return litdata.StreamingDataLoader(LitImages(str(workdir / "litdata"), shuffle=True), **options)
    if name == "webdataset":
        import webdataset

        urls = [str(path) for path in sorted((workdir / "wds").glob("*.tar"))]
        pipeline = (
            webdataset.WebDataset(urls, shardshuffle=len(urls), empty_check=False)
            .shuffle(SHUFFLE_BUFFER)
            .map(lambda sample: (augment(decode(sample["jpg"])), int(sample["cls"])))
        )
        return DataLoader(pipeline, **options)
    from shardflow.dataset import StreamingDataLoader, StreamingImageFolder

    problem = row_problem(name)
    if problem is not None:
        raise RuntimeError(problem)
    fast = "-fast-" in name or name == GPU_DECODE
    transform = augment if fast else PerSample(augment)
    extra: dict[str, Any] = {"decode_device": "cuda"} if name == GPU_DECODE else {}
    folder = StreamingImageFolder(
        local=str(workdir / "mds"), shuffle=True, batch_size=batch, transform=transform, **extra
    )
    if name == GPU_DECODE:  # decoded in the training process, straight onto the GPU: nothing to pin
        return StreamingDataLoader(folder, worker_kind="thread", **{**options, "pin_memory": False})
    return StreamingDataLoader(folder, worker_kind=name.rsplit("-", 1)[1], **options)


class PerSample:
    """A transform behind a plain callable, which no fast path recognises: it runs image by image."""

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> Any:
        return self.transform(image)


def fast_path_problem() -> str | None:
    """Why shardflow's JPEG fast path cannot take :func:`augmentation` here; None when it can."""
    try:
        from shardflow.dataset.images import fast_plan
    except ImportError as exc:
        return f"this shardflow has no JPEG fast path ({exc})"
    if fast_plan(augmentation()) is None:
        return f"shardflow's JPEG fast path does not recognise {augmentation()!r}"
    return None


def gpu_decode_problem() -> str | None:
    """Why the fast path cannot decode on the GPU here (no CUDA, no ``crop_batch``); None when it can."""
    import torch

    problem = fast_path_problem()
    if problem is not None:
        return problem
    try:
        from shardflow.dataset.images import crop_batch  # noqa: F401 - shipped with decode_device
    except ImportError:
        return "this shardflow's fast path does not decode on the GPU"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} here has no CUDA"
    return None


def row_problem(name: str) -> str | None:
    """Why the shardflow row ``name`` cannot run here; None when it can (or it needs nothing special)."""
    if name == GPU_DECODE:
        return gpu_decode_problem()
    return fast_path_problem() if "-fast-" in name else None


class ResNetStep:
    """One ResNet-50 training step per batch on ``device`` (the GPU; ``cpu`` to try the code path):
    channels_last, bf16 autocast, SGD."""

    def __init__(self, device: str) -> None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"no CUDA device for the training step in {sys.executable} (torch {torch.__version__})"
            )
        self.torch = torch
        self.device = torch.device(device)
        models = import_torchvision().models
        self.model = models.resnet50(num_classes=1000).to(self.device, memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.mean = torch.tensor([123.7, 116.3, 103.5], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor([58.4, 57.1, 57.4], device=self.device).view(1, 3, 1, 1)

    def __call__(self, images: Any, labels: Any) -> None:
        torch = self.torch
        x = images.to(self.device, non_blocking=True).to(memory_format=torch.channels_last)
        x = (x.float() - self.mean) / self.std
        y = labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def drain(batches: Iterator[Any], seconds: float, warmup: int, step: ResNetStep | None) -> dict[str, Any]:
    """Consume batches; the time to the first, and the rate for ``seconds`` after ``warmup`` more (or to
    the end of the epoch). The clock waits for the GPU when a step or the batches run there."""
    started = time.perf_counter()
    head = next(batches)
    if tuple(head[0].shape[1:]) != (3, CROP, CROP) or str(head[0].dtype) != "torch.uint8":
        raise RuntimeError(
            f"a batch of {tuple(head[0].shape)} {head[0].dtype}, not (B, 3, {CROP}, {CROP}) uint8"
        )
    synchronize = step.synchronize if step is not None else None
    if head[0].is_cuda:
        import torch

        synchronize = torch.cuda.synchronize
        synchronize()
    first = time.perf_counter() - started
    seen, ended, steady = 0, True, 0.0
    for index, (images, labels) in enumerate(itertools.chain([head], batches)):
        if step is not None:
            step(images, labels)
        if index == warmup:
            if synchronize is not None:
                synchronize()
            steady = time.perf_counter()
        elif index > warmup:
            seen += len(images)
            if time.perf_counter() - steady >= seconds:
                ended = False
                break
    if synchronize is not None:
        synchronize()
    elapsed = time.perf_counter() - steady
    if seen == 0:
        raise RuntimeError(f"the epoch ended within the {warmup} warm-up batches: pass more --images")
    return {"rate": seen / elapsed, "first_batch_s": first, "seconds": elapsed, "epoch_ended": ended}


def measure(
    name: str, workdir: Path, workers: int, batch: int, seconds: float, train: str | None
) -> dict[str, Any]:
    """One row's cell, in this (fresh) process."""
    import torch  # noqa: F401 - imported before any timing: imports are not what is measured

    step = None if train is None else ResNetStep(train)
    if name == GPU_ALONE:
        assert step is not None
        images = torch.randint(0, 256, (batch, 3, CROP, CROP), dtype=torch.uint8)
        labels = torch.randint(0, 1000, (batch,))
        on_gpu = (images.to(step.device), labels.to(step.device))
        return drain(iter(lambda: on_gpu, None), seconds, TRAIN_WARMUP, step)
    loader = make_loader(name, workdir, workers, batch, pin=train == "cuda")
    return drain(iter(loader), seconds, max(workers, TRAIN_WARMUP if train else 1), step)


# -- the driver ---------------------------------------------------------------------------------------


def run_cell(
    python: str, name: str, workdir: Path, workers: int, args: argparse.Namespace, train: bool
) -> dict[str, Any] | None:
    """One cell in a fresh process; None (and the error logged) when it failed."""
    command = [python, __file__, "--measure", name, "--folder", str(workdir), "--workers", str(workers)]
    command += ["--batch-size", str(args.batch_size), "--seconds", str(args.seconds)]
    if train:
        command += ["--train", "resnet50", "--train-device", args.train_device]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 300)
    if done.returncode != 0:
        logger.error("%s with %d workers failed:\n%s", name, workers, done.stderr[-2000:])
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["epoch_ended"]:
        logger.warning(
            "%s x%d: the epoch ended after %.1f s, before --seconds: its rate is over that time",
            name,
            workers,
            result["seconds"],
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=8000, help="images in the dataset (default 8000)")
    parser.add_argument("--unique", type=int, default=400, help="distinct images generated (default 400)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="loader workers (default 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing window per cell (default 6)")
    parser.add_argument("--only", nargs="+", choices=LOADERS, help="these loaders only")
    parser.add_argument(
        "--fast-path", choices=["auto", "require", "off"], default="auto", help="shardflow's fast-path rows"
    )
    parser.add_argument(
        "--train", choices=["resnet50"], help="also feed a ResNet-50 step on the GPU (needs CUDA)"
    )
    parser.add_argument(
        "--train-device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="cpu: only to try the training code path",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--write-litdata", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.write_litdata:
        write_litdata(Path(args.folder))
    elif args.measure:
        result = measure(
            args.measure,
            Path(args.folder),
            args.workers[0],
            args.batch_size,
            args.seconds,
            args.train_device if args.train else None,
        )
        print(json.dumps(result), flush=True)
    else:
        run_all(args)


def pythons_for(loaders: list[str]) -> dict[str, str | None]:
    """The python of each loader: this one, or the reference venv's (None where it is absent)."""
    reference: str | None = None
    if any(name in IN_REFERENCE_VENV for name in loaders):
        sys.path.insert(0, str(Path(__file__).parent))
        from _reference import reference_python

        reference = reference_python()
        if reference is None:
            logger.warning(
                "no reference venv (bash ../shared/reference/setup.sh): no mosaicml or litdata rows"
            )
    return {name: reference if name in IN_REFERENCE_VENV else sys.executable for name in loaders}


def run_all(args: argparse.Namespace) -> None:
    """Write the datasets, measure every loader at every worker count, print the table."""
    loaders = list(args.only or LOADERS)
    if args.fast_path == "off":
        loaders = [name for name in loaders if "-fast-" not in name and name != GPU_DECODE]
    problem = fast_path_problem() if any("-fast-" in name for name in loaders) else None
    if problem is not None:
        if args.fast_path == "require":
            sys.exit(f"--fast-path require: {problem}")
        logger.warning("no fast-path rows: %s", problem)
    absent = {name: why for name in loaders if name in OURS and (why := row_problem(name)) is not None}
    if GPU_DECODE in absent:
        logger.warning("no %s row: %s", GPU_DECODE, absent[GPU_DECODE])
    if args.train and args.train_device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit(f"--train {args.train} needs CUDA, and torch {torch.__version__} here has none")
    pythons = pythons_for(loaders)
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="images-bench-"))
    try:
        started = time.perf_counter()
        write_datasets(workdir, args.images, args.unique, shards=max(16, 4 * max(args.workers)))
        litdata_python = pythons.get("litdata")
        if litdata_python:
            subprocess.run(
                [litdata_python, __file__, "--write-litdata", "--folder", str(workdir)], check=True
            )
        logger.info("%d images written in every format in %.0f s", args.images, time.perf_counter() - started)
        summary = table(args, loaders, pythons, absent, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\n{args.images:,} images ({min(args.unique, args.images)} distinct, repeated), batch "
        f"{args.batch_size}, {args.seconds:g} s per cell, each in a fresh process; 1-minute load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; {os.cpu_count()} CPUs."
    )
    for line in summary:
        print(line)


def table(
    args: argparse.Namespace,
    loaders: list[str],
    pythons: dict[str, str | None],
    absent: dict[str, str],
    workdir: Path,
) -> list[str]:
    """Measure and print the table's rows, one per loader and worker count (and training mode); return a
    line per worker count comparing shardflow's fastest row with the fastest peer's."""
    modes = [False, True] if args.train else [False]
    summary: list[str] = []
    print(
        "| loader | workers | images/s | vs fastest peer | first batch s |"
        + (" into ResNet-50 images/s |" if args.train else "")
    )
    print("| --- | ---: | ---: | ---: | ---: |" + (" ---: |" if args.train else ""))
    if args.train:
        alone = run_cell(sys.executable, GPU_ALONE, workdir, 0, args, True)
        rate = "error" if alone is None else f"{alone['rate']:,.0f}"
        print(f"| ResNet-50 alone (batch on the GPU) | - | - | - | - | {rate} |", flush=True)
    for workers in args.workers:
        found: dict[str, dict[bool, dict[str, Any] | None]] = {}
        for name in loaders:
            python = pythons[name]
            if python is None or name in absent:
                continue
            found[name] = {train: run_cell(python, name, workdir, workers, args, train) for train in modes}
        rates: dict[str, float] = {
            name: result["rate"] for name, cells in found.items() if (result := cells[False]) is not None
        }
        peer_rates = {name: rate for name, rate in rates.items() if name in PEERS}
        fastest = max(peer_rates.values(), default=None)
        for name in loaders:
            cells = found.get(name)
            if cells is None:
                why = "absent (no reference venv)" if pythons[name] is None else "absent (no fast path)"
                if name == GPU_DECODE and pythons[name] is not None:
                    why = "absent (no CUDA)" if "CUDA" in absent[name] else "absent (no GPU decoding)"
                print(f"| {name} | {workers} | {why} | - | - |" + (" - |" if args.train else ""))
                continue
            plain = cells[False]
            rate = "error" if plain is None else f"{plain['rate']:,.0f}"
            ratio = f"{plain['rate'] / fastest:.2f}x" if plain and fastest else "-"
            first = "-" if plain is None else f"{plain['first_batch_s']:.2f}"
            row = f"| {name} | {workers} | {rate} | {ratio} | {first} |"
            if args.train:
                fed = cells[True]
                row += " error |" if fed is None else f" {fed['rate']:,.0f} |"
            print(row, flush=True)
        ours = {name: rate for name, rate in rates.items() if name in OURS}
        if ours and fastest:
            best = max(ours, key=ours.__getitem__)
            peer = max(peer_rates, key=peer_rates.__getitem__)
            summary.append(
                f"- {workers} workers: shardflow's fastest, {best}, {ours[best]:,.0f} images/s, is "
                f"{ours[best] / fastest:.2f}x the fastest peer, {peer} ({fastest:,.0f} images/s)"
            )
    return summary


if __name__ == "__main__":
    main()
