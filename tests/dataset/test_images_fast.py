"""The JPEG fast path (shardflow.dataset.images): torchvision's crop distribution, pixels close to a full
decode, and the typed image datasets giving the per-sample path's results a batch at a time.

The crop distribution is compared with torchvision's own sampler (both sides drawn here) by two-sample
chi-square tests on equal-count bins, each at significance ``ALPHA``; pixels by PSNR against a full decode
and resize of the same crop, over photograph-like JPEGs (smooth colour fields, soft edges, light grain).
"""

from __future__ import annotations

import importlib
import io
import json
import math
import sys
import types
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from shardflow.dataset import StreamingDataLoader, StreamingImageFolder
from shardflow.dataset.images import (
    Compose,
    CropPlan,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    crop_params,
    decode_batch,
    decode_crop,
    fast_plan,
)
from shardflow.format import MDSWriter

ALPHA = 1e-3
"""Significance of each distribution test (the seeds are fixed, so a run's outcome is too)."""

MIN_PSNR = 30.0
"""Least mean PSNR (dB) of the fast path's pixels against a full decode and resize of the same crop."""

DRAWS = 100_000


def _torchvision() -> types.ModuleType:
    """torchvision (``benchmarks/_torchvision.py``: importable beside the CPU torch); skipped where absent."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from _torchvision import import_torchvision

    try:
        torchvision = import_torchvision()
    except ImportError:
        pytest.skip("torchvision is not installed")
    importlib.import_module("torchvision.transforms.v2")
    return torchvision


def photo(rng: np.random.Generator, height: int, width: int, gray: bool = False) -> np.ndarray:
    """A photograph-like picture: low-frequency colour waves, soft-edged discs, light sensor grain."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.zeros((height, width, 3), np.float32)
    for _ in range(6):
        fy, fx = rng.uniform(0.5, 6, 2) / np.array([height, width])
        wave = np.sin(2 * np.pi * (fy * y + fx * x) + rng.uniform(0, 2 * np.pi))
        out += wave[..., None] * rng.uniform(-40, 40, 3).astype(np.float32)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(10, min(height, width) / 2)
        edge = np.clip((np.hypot(y - cy, x - cx) - r) / 3, -30, 30)
        out += (1 / (1 + np.exp(edge)))[..., None] * rng.uniform(-60, 60, 3).astype(np.float32)
    out += rng.normal(0, 4, out.shape).astype(np.float32)
    pixels = np.clip(out + 128, 0, 255).astype(np.uint8)
    return pixels.mean(axis=2).astype(np.uint8) if gray else pixels


def jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    error = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * math.log10(255**2 / max(error, 1e-12))


def full_decode_crop(data: bytes, crop: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The reference: decode everything, crop, resize (bilinear), as torchvision's ``resized_crop`` on PIL."""
    top, left, height, width = crop
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(image.crop((left, top, left + width, top + height)).resize(size[::-1], Image.BILINEAR))


# -- the crop distribution -----------------------------------------------------------------------------


def chi_square_same(a: np.ndarray, b: np.ndarray, bins: int = 40) -> tuple[float, float]:
    """Two-sample chi-square statistic of equal-size samples ``a`` and ``b`` over bins of about equal
    pooled count, and its critical value at ``ALPHA`` (Wilson-Hilferty's chi-square quantile)."""
    pooled = np.concatenate([a, b])
    edges = np.unique(np.quantile(pooled, np.linspace(0, 1, bins + 1)))
    edges[-1] = np.inf
    count_a = np.histogram(a, edges)[0].astype(np.float64)
    count_b = np.histogram(b, edges)[0].astype(np.float64)
    used = count_a + count_b > 0
    statistic = float(np.sum((count_a[used] - count_b[used]) ** 2 / (count_a[used] + count_b[used])))
    dof = int(used.sum()) - 1
    z = NormalDist().inv_cdf(1 - ALPHA)
    critical = dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3
    return statistic, critical


def _features(
    height: int, width: int, top: np.ndarray, left: np.ndarray, h: np.ndarray, w: np.ndarray
) -> dict:
    """What the tests compare: each crop's area fraction, log aspect ratio and place within its room."""
    return {
        "scale": h * w / (height * width),
        "log aspect": np.log(w / h),
        "top": (top + 0.5) / (height - h + 1),
        "left": (left + 0.5) / (width - w + 1),
    }


@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio", "draws"),
    [
        (350, 400, (0.08, 1.0), (3 / 4, 4 / 3), DRAWS),  # ImageNet-like: the fallback is rare
        (60, 400, (0.08, 1.0), (3 / 4, 4 / 3), DRAWS // 10),  # a wide strip: the fallback is frequent
        (300, 200, (0.3, 0.9), (0.5, 1.2), DRAWS // 10),  # other ranges
    ],
)
def test_crop_distribution_is_torchvisions(
    height: int, width: int, scale: tuple, ratio: tuple, draws: int
) -> None:
    tv = _torchvision()
    get_params = tv.transforms.RandomResizedCrop.get_params
    torch.manual_seed(0)
    image = torch.empty(3, height, width, dtype=torch.uint8)
    theirs = np.array([get_params(image, list(scale), list(ratio)) for _ in range(draws)], np.int64).T
    ours = crop_params(np.full(draws, height), np.full(draws, width), scale, ratio, np.random.default_rng(1))
    theirs_f, ours_f = _features(height, width, *theirs), _features(height, width, *ours)
    for name in theirs_f:
        statistic, critical = chi_square_same(ours_f[name], theirs_f[name])
        assert statistic < critical, (
            f"{name}: chi-square {statistic:.1f} >= {critical:.1f} ({height}x{width})"
        )
    # The fallback's share (crops not placed at random) agrees within sampling error too.
    fallback = [
        np.mean((h == height) & (w < width) | (w == width) & (h < height)) for _, _, h, w in (theirs, ours)
    ]
    spread = math.sqrt(2 * max(np.mean(fallback), 1 / draws) / draws)
    assert abs(fallback[0] - fallback[1]) < NormalDist().inv_cdf(1 - ALPHA) * spread


# -- the pixels ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    """Photograph-like JPEGs of several sizes and kinds (4:2:0 and 4:4:4 colour, grayscale, a PNG)."""
    rng = np.random.default_rng(7)
    shapes = [(350, 400), (375, 500), (480, 640), (768, 1024), (500, 300), (900, 600), (240, 320), (600, 800)]
    out = [jpeg(photo(rng, h, w)) for h, w in shapes]
    out.append(jpeg(photo(rng, 480, 640, gray=True)))
    buffer = io.BytesIO()
    Image.fromarray(photo(rng, 480, 640)).save(buffer, "JPEG", quality=95, subsampling=0)
    out.append(buffer.getvalue())
    return out


@pytest.mark.parametrize("size", [(224, 224), (96, 128)])
def test_reduced_scale_decode_is_close_to_a_full_decode(jpegs: list[bytes], size: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    values, reduced = [], []
    for data in jpegs:
        width, height = Image.open(io.BytesIO(data)).size
        for top, left, h, w in zip(*crop_params([height] * 8, [width] * 8, rng=rng), strict=True):
            crop = (int(top), int(left), int(h), int(w))
            fast = decode_crop(data, crop, size)
            assert fast.shape == (*size, 3) and fast.dtype == np.uint8
            values.append(psnr(fast, full_decode_crop(data, crop, size)))
            if h >= 2 * size[0] and w >= 2 * size[1]:  # decoded at 1/2 scale or less
                reduced.append(values[-1])
    assert np.mean(values) >= MIN_PSNR, f"mean PSNR {np.mean(values):.1f} dB"
    assert reduced and np.mean(reduced) >= MIN_PSNR, f"reduced-scale crops: {reduced}"


def test_decode_batch_is_the_crops_flipped_and_normalised(jpegs: list[bytes]) -> None:
    plan = CropPlan((64, 80))
    batch = decode_batch(jpegs, plan, rng=np.random.default_rng(5), threads=2, pin=False)
    assert batch.shape == (len(jpegs), 3, 64, 80) and batch.dtype == torch.uint8 and batch.is_contiguous()
    # The same draws give the same crops; a flip with p=1 mirrors every image.
    flipped = decode_batch(jpegs, CropPlan((64, 80), flip=1.0), rng=np.random.default_rng(5))
    assert torch.equal(flipped, batch.flip(-1))
    # Every image is its crop, decoded alone.
    crops = crop_params(
        *zip(*[Image.open(io.BytesIO(d)).size[::-1] for d in jpegs], strict=True),
        rng=np.random.default_rng(5),
    )
    for k, data in enumerate(jpegs):
        alone = decode_crop(data, tuple(int(c[k]) for c in crops), (64, 80))
        assert np.array_equal(batch[k].permute(1, 2, 0).numpy(), alone)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    normalised = decode_batch(
        jpegs, CropPlan((64, 80), to_float=True, mean=mean, std=std), rng=np.random.default_rng(5)
    )
    expected = Normalize(mean, std)(batch)
    assert normalised.dtype == torch.float32 and torch.allclose(normalised, expected, atol=1e-6)


# -- recognising transforms --------------------------------------------------------------------------


def test_own_transforms_make_a_plan_and_refuse_what_they_cannot_batch() -> None:
    pipeline = Compose(
        [RandomHorizontalFlip(0.25), RandomResizedCrop(160, scale=(0.2, 1)), Normalize([0.5] * 3, [0.2] * 3)]
    )
    assert fast_plan(pipeline) == CropPlan(
        (160, 160), (0.2, 1.0), (3 / 4, 4 / 3), 2, 0.25, True, (0.5,) * 3, (0.2,) * 3
    )
    assert fast_plan(RandomResizedCrop(160)) is None  # alone it gives PIL images, not tensors
    assert fast_plan(lambda image: image) is None
    with pytest.raises(ValueError, match="one RandomResizedCrop"):
        Compose([RandomHorizontalFlip()])
    with pytest.raises(ValueError, match="Normalize \\(last\\)"):
        Compose([RandomResizedCrop(8), Normalize([0], [1]), RandomHorizontalFlip()])
    with pytest.raises(ValueError, match="scale="):
        RandomResizedCrop(8, scale=(0.9, 0.1))


def test_torchvision_pipelines_are_recognised() -> None:
    tv = _torchvision()
    v1, v2 = tv.transforms, tv.transforms.v2
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    crop = (224, 224), (0.08, 1.0), (3 / 4, 4 / 3), 2
    assert fast_plan(
        v2.Compose([v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), v2.PILToTensor()])
    ) == (CropPlan(*crop, 0.5))
    normalised = CropPlan(*crop, 0.5, True, tuple(mean), tuple(std))
    assert (
        fast_plan(
            v2.Compose(
                [
                    v2.RandomResizedCrop(224, antialias=True),
                    v2.RandomHorizontalFlip(),
                    v2.ToImage(),
                    v2.ToDtype(torch.float32, scale=True),
                    v2.Normalize(mean, std),
                ]
            )
        )
        == normalised
    )
    v1_pipeline = v1.Compose(
        [v1.RandomResizedCrop(224), v1.RandomHorizontalFlip(), v1.ToTensor(), v1.Normalize(mean, std)]
    )
    assert fast_plan(v1_pipeline) == normalised
    bicubic = v2.RandomResizedCrop((96, 128), scale=(0.5, 1), interpolation=v2.InterpolationMode.BICUBIC)
    assert fast_plan(v2.Compose([bicubic, v2.PILToTensor()])) == CropPlan((96, 128), (0.5, 1.0), crop[2], 3)
    for other in (
        v2.Compose([v2.RandomResizedCrop(224), v2.ColorJitter(0.4), v2.PILToTensor()]),  # a step it lacks
        v2.Compose([v2.RandomResizedCrop(224), v2.RandomHorizontalFlip()]),  # ends as a PIL image
        v2.Compose([v2.Resize(256), v2.CenterCrop(224), v2.PILToTensor()]),
        v2.Compose([v2.RandomResizedCrop(224), v2.PILToTensor(), v2.ToDtype(torch.float32)]),  # unscaled
        v2.RandomResizedCrop(224),
    ):
        assert fast_plan(other) is None, other


# -- the typed datasets ----------------------------------------------------------------------------


CLASSES = ["a", "b", "c"]


def write_image_folder(out: Path, images: list[tuple[np.ndarray, int]], classes: list[str]) -> Path:
    """``(pixels, class)`` pairs as shardflow.convert.imagefolder writes them (JPEG bytes and labels)."""
    with MDSWriter(out=str(out), columns={"x": "bytes", "y": "int"}, size_limit=200_000) as writer:
        for pixels, label in images:
            writer.write({"x": jpeg(pixels), "y": label})
    (out / "classes.json").write_text(json.dumps({"classes": classes}))
    return out


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image-folder dataset: 30 JPEGs of 3 classes."""
    rng = np.random.default_rng(11)
    sizes = [(150, 200) if k % 3 else (210, 160) for k in range(30)]
    images = [(photo(rng, h, w, gray=k == 7), k % 3) for k, (h, w) in enumerate(sizes)]
    return write_image_folder(tmp_path_factory.mktemp("images") / "mds", images, CLASSES)


def _batches(folder: Path, cache: Path, transform: Any, **loader: Any) -> list[Any]:
    dataset = StreamingImageFolder(
        remote=str(folder), local=str(cache), shuffle=True, shuffle_seed=4, batch_size=8, transform=transform
    )
    return list(StreamingDataLoader(dataset, batch_size=8, **loader))


def _same_up_to_psnr(fast: list[Any], slow: list[Any]) -> None:
    assert len(fast) == len(slow) == 4
    for (images, labels), (ref_images, ref_labels) in zip(fast, slow, strict=True):
        assert torch.equal(labels, ref_labels)
        assert images.shape == ref_images.shape and images.dtype == ref_images.dtype
        assert psnr(images, ref_images) >= MIN_PSNR
    # Decoded at a reduced scale: the pixels differ, so the fast path did run.
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(fast, slow, strict=True))


# A crop that draws nothing at random (the central square: no area and aspect fit), a certain flip.
CENTRAL = {"size": 48, "scale": (1.0, 1.0), "ratio": (1.0, 1.0)}


@pytest.mark.parametrize(
    "loader",
    [{"num_workers": 2, "worker_kind": "thread"}, {"num_workers": 0}, {"num_workers": 1}],
    ids=["threads", "in-process", "process"],
)
def test_image_folder_fast_path_gives_the_per_sample_results(
    image_folder: Path, tmp_path: Path, loader: dict
) -> None:
    transform = Compose([RandomResizedCrop(**CENTRAL), RandomHorizontalFlip(1.0)])
    probe = StreamingImageFolder(local=str(image_folder), transform=transform)
    assert probe.supports_batch_reads and probe.classes == CLASSES
    fast = _batches(image_folder, tmp_path / "fast", transform, **loader)
    slow = _batches(image_folder, tmp_path / "slow", transform, batch_reads=False, **loader)
    _same_up_to_psnr(fast, slow)
    assert sorted(torch.cat([labels for _, labels in fast]).tolist()) == sorted([k % 3 for k in range(30)])


def test_image_folder_fast_path_with_torchvision_transforms(image_folder: Path, tmp_path: Path) -> None:
    v2 = _torchvision().transforms.v2
    transform = v2.Compose([v2.RandomResizedCrop(**CENTRAL), v2.RandomHorizontalFlip(1.0), v2.PILToTensor()])
    fast = _batches(image_folder, tmp_path / "fast", transform, num_workers=2, worker_kind="thread")
    slow = _batches(
        image_folder, tmp_path / "slow", transform, batch_reads=False, num_workers=2, worker_kind="thread"
    )
    _same_up_to_psnr(fast, slow)


def test_image_folder_fast_path_normalises_and_maps_targets(image_folder: Path, tmp_path: Path) -> None:
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    transform = Compose([RandomResizedCrop(**CENTRAL), Normalize(mean, std)])
    dataset = StreamingImageFolder(
        local=str(image_folder), batch_size=10, transform=transform, target_transform=lambda y: 10 * y
    )
    (images, labels), *_ = StreamingDataLoader(dataset, batch_size=10)
    assert images.dtype == torch.float32 and images.shape == (10, 3, 48, 48)
    per_sample = torch.stack([dataset[k][0] for k in range(10)])
    assert torch.equal(labels, torch.tensor([10 * (k % 3) for k in range(10)]))
    unnormalise = torch.tensor(std).view(3, 1, 1) * 255, torch.tensor(mean).view(3, 1, 1) * 255
    assert (
        psnr(images * unnormalise[0] + unnormalise[1], per_sample * unnormalise[0] + unnormalise[1])
        >= MIN_PSNR
    )


def test_image_folder_random_crops_on_the_fast_path(image_folder: Path, tmp_path: Path) -> None:
    transform = Compose([RandomResizedCrop(32), RandomHorizontalFlip()])
    torch.manual_seed(0)
    first = _batches(image_folder, tmp_path / "a", transform, num_workers=2, worker_kind="thread")
    torch.manual_seed(0)
    again = _batches(image_folder, tmp_path / "b", transform, num_workers=2, worker_kind="thread")
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again, strict=True))  # seeded by torch
    assert all(images.shape == (8 if k < 3 else 6, 3, 32, 32) for k, (images, _) in enumerate(first))


def test_unrecognised_transforms_take_the_per_sample_path(image_folder: Path, tmp_path: Path) -> None:
    def transform(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(image.resize((20, 10)))).permute(2, 0, 1)

    dataset = StreamingImageFolder(local=str(image_folder), transform=transform)
    assert not dataset.supports_batch_reads
    batches = _batches(image_folder, tmp_path, transform, num_workers=2, worker_kind="thread")
    images = torch.cat([images for images, _ in batches])
    assert images.shape == (30, 3, 10, 20)
    expected = {dataset[k][1]: [] for k in range(3)}
    for k in range(30):
        expected[dataset[k][1]].append(dataset[k][0])
    labels = torch.cat([labels for _, labels in batches]).tolist()
    for image, label in zip(images, labels, strict=True):
        assert any(torch.equal(image, ref) for ref in expected[label])
