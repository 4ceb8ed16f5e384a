"""GPU decoding on the JPEG fast path: ``decode_batch(device="cuda")`` and ``StreamingImageFolder``'s
``decode_device``.

Here, without a GPU: the crop-and-resize of decoded tensors (the GPU path's second half, which runs on any
device) against the CPU path, the errors, and that the CPU path imports neither torchvision nor CUDA. On a
host with CUDA and torchvision: the whole GPU path against the CPU path.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from shardflow.dataset import DatasetConfigError, StreamingDataLoader, StreamingImageFolder
from shardflow.dataset.images import (
    RESAMPLE,
    Compose,
    CropPlan,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    crop_batch,
    crop_params,
    decode_batch,
    resize_crop,
)

from .test_images_fast import CENTRAL, MIN_PSNR, full_decode_crop, jpeg, photo, psnr, write_image_folder


def _gpu_decoding() -> bool:
    """Whether CUDA and torchvision's ``decode_jpeg`` (its compiled image ops) are here."""
    if not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg

        decode_jpeg(torch.from_numpy(np.frombuffer(jpeg(np.zeros((8, 8, 3), np.uint8)), np.uint8).copy()))
    except (ImportError, RuntimeError):
        return False
    return True


needs_gpu = pytest.mark.skipif(not _gpu_decoding(), reason="needs CUDA and torchvision's decode_jpeg")
without_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    """Photograph-like JPEGs (4:2:0, 4:4:4, grayscale) of several sizes, and a PNG."""
    rng = np.random.default_rng(17)
    shapes = [(350, 400), (375, 500), (768, 1024), (500, 300), (240, 320)]
    out = [jpeg(photo(rng, h, w)) for h, w in shapes]
    out.append(jpeg(photo(rng, 300, 400, gray=True)))
    for kind, options in (("JPEG", {"quality": 95, "subsampling": 0}), ("PNG", {})):
        buffer = io.BytesIO()
        Image.fromarray(photo(rng, 260, 340)).save(buffer, kind, **options)
        out.append(buffer.getvalue())
    return out


def _pillow_tensors(images: list[bytes]) -> list[torch.Tensor]:
    return [
        torch.from_numpy(np.asarray(Image.open(io.BytesIO(d)).convert("RGB")).transpose(2, 0, 1).copy())
        for d in images
    ]


def _crops(images: list[bytes], seed: int) -> list[tuple[int, int, int, int]]:
    """The crops ``decode_batch`` and ``crop_batch`` draw from ``default_rng(seed)``."""
    sizes = [Image.open(io.BytesIO(d)).size for d in images]
    drawn = crop_params([h for _, h in sizes], [w for w, _ in sizes], rng=np.random.default_rng(seed))
    return [tuple(int(c[k]) for c in drawn) for k in range(len(images))]  # type: ignore[misc]


# -- the crop and resize of decoded tensors (any device) ------------------------------------------------


@pytest.mark.parametrize("size", [(224, 224), (96, 128)])
def test_crop_batch_of_decoded_tensors_gives_the_cpu_paths_pixels(images: list[bytes], size: tuple) -> None:
    ours = crop_batch(_pillow_tensors(images), CropPlan(size), rng=np.random.default_rng(5))
    cpu = decode_batch(images, CropPlan(size), rng=np.random.default_rng(5), pin=False)
    assert ours.shape == cpu.shape == (len(images), 3, *size) and ours.dtype == torch.uint8
    values = [psnr(a, b) for a, b in zip(ours, cpu, strict=True)]
    assert np.mean(values) >= MIN_PSNR and min(values) >= MIN_PSNR - 5, values
    # Against a full decode, crop and Pillow resize of the same crops (torch's antialiased bilinear: Pillow's)
    for k, crop in enumerate(_crops(images, 5)):
        full = full_decode_crop(images[k], crop, size)
        assert psnr(ours[k].permute(1, 2, 0).numpy(), full) >= 45, k
    flipped = crop_batch(_pillow_tensors(images), CropPlan(size, flip=1.0), rng=np.random.default_rng(5))
    assert torch.equal(flipped, ours.flip(-1))


@pytest.mark.parametrize("name", ["bicubic", "nearest", "lanczos"])
def test_resize_crop_follows_pillows_filters(images: list[bytes], name: str) -> None:
    crop, size = (40, 30, 200, 260), (112, 144)
    decoded = _pillow_tensors(images[:1])[0]
    ours = resize_crop(decoded, crop, size, RESAMPLE[name]).permute(1, 2, 0).numpy()
    top, left, h, w = crop
    pillow = Image.open(io.BytesIO(images[0])).convert("RGB").crop((left, top, left + w, top + h))
    theirs = np.asarray(pillow.resize(size[::-1], RESAMPLE[name]))
    assert psnr(ours, theirs) >= MIN_PSNR, name  # lanczos: resized bilinear, still close


def test_crop_batch_normalises(images: list[bytes]) -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    plan = CropPlan((64, 64), to_float=True, mean=mean, std=std)
    batch = crop_batch(_pillow_tensors(images), plan, rng=np.random.default_rng(2))
    plain = crop_batch(_pillow_tensors(images), CropPlan((64, 64)), rng=np.random.default_rng(2))
    assert batch.dtype == torch.float32 and torch.allclose(batch, Normalize(mean, std)(plain), atol=1e-6)
    assert crop_batch([], CropPlan((8, 8))).shape == (0, 3, 8, 8)


# -- errors and imports -------------------------------------------------------------------------------


@without_cuda
def test_decoding_on_cuda_without_cuda_is_refused(images: list[bytes]) -> None:
    with pytest.raises(DatasetConfigError, match=r"device='cuda' needs a CUDA device.*is_available"):
        decode_batch(images, CropPlan((32, 32)), device="cuda")


def test_devices_other_than_cpu_and_cuda_are_refused(images: list[bytes]) -> None:
    with pytest.raises(DatasetConfigError, match="'cpu' \\(Pillow\\) or 'cuda' \\(nvJPEG\\), not 'meta'"):
        decode_batch(images, CropPlan((32, 32)), device="meta")
    with pytest.raises(DatasetConfigError, match="device='gpu' is not a torch device"):
        decode_batch(images, CropPlan((32, 32)), device="gpu")


def test_the_cpu_path_imports_neither_torchvision_nor_cuda(images: list[bytes], tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(images[0])
    script = f"""
import sys, numpy, torch
import shardflow.dataset, shardflow.dataset.images as images
data = open({str(tmp_path / "a.jpg")!r}, "rb").read()
batch = images.decode_batch([data] * 3, images.CropPlan((32, 32), flip=0.5), pin=False)
assert batch.shape == (3, 3, 32, 32) and batch.device.type == "cpu"
print("torchvision" in sys.modules, torch.cuda.is_initialized())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


# -- the image folder ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 JPEGs of 2 classes, as shardflow.convert.imagefolder writes them."""
    rng = np.random.default_rng(23)
    images = [(photo(rng, 150 + 10 * k, 200), k % 2) for k in range(16)]
    return write_image_folder(tmp_path_factory.mktemp("gpu-images") / "mds", images, ["a", "b"])


def _loader(
    folder: Path, cache: Path, device: str, transform: Any = None, **loader: Any
) -> StreamingDataLoader:
    transform = transform or Compose([RandomResizedCrop(**CENTRAL), RandomHorizontalFlip(1.0)])
    dataset = StreamingImageFolder(
        remote=str(folder),
        local=str(cache),
        shuffle=True,
        shuffle_seed=4,
        batch_size=8,
        transform=transform,
        decode_device=device,
    )
    return StreamingDataLoader(dataset, batch_size=8, **loader)


def test_image_folder_decode_device_is_checked(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetConfigError, match="decode_device='mps'.*not 'mps'"):
        StreamingImageFolder(
            local=str(folder), transform=Compose([RandomResizedCrop(8)]), decode_device="mps"
        )
    with pytest.raises(DatasetConfigError, match="decode_device='cuda' decodes on the JPEG fast path"):
        StreamingImageFolder(local=str(folder), transform=lambda image: image, decode_device="cuda")
    process = _loader(folder, tmp_path / "p", "cuda", num_workers=1)
    with pytest.raises(
        DatasetConfigError, match="worker process: use StreamingDataLoader\\(num_workers=0\\)"
    ):
        next(iter(process))


@without_cuda
def test_image_folder_on_cuda_without_cuda_is_refused(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetConfigError, match="decode_device='cuda' needs a CUDA device"):
        next(iter(_loader(folder, tmp_path, "cuda", num_workers=2, worker_kind="thread")))


# -- on a GPU host --------------------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("size", [(224, 224), (96, 128)])
def test_gpu_decode_batch_gives_the_cpu_paths_pixels(images: list[bytes], size: tuple) -> None:
    for plan in (
        CropPlan(size, flip=0.5),
        CropPlan(size, flip=0.5, to_float=True, mean=(0.5,) * 3, std=(0.25,) * 3),
    ):
        gpu = decode_batch(images, plan, rng=np.random.default_rng(9), device="cuda")
        cpu = decode_batch(images, plan, rng=np.random.default_rng(9), pin=False)
        assert gpu.device.type == "cuda" and gpu.shape == cpu.shape and gpu.dtype == cpu.dtype
        scale = 255 / 4 if plan.to_float else 1  # back to grey levels
        values = [psnr(a * scale, b * scale) for a, b in zip(gpu.cpu(), cpu, strict=True)]
        assert np.mean(values) >= MIN_PSNR, values


@needs_gpu
@pytest.mark.parametrize(
    "loader", [{"num_workers": 2, "worker_kind": "thread", "pin_memory": True}, {"num_workers": 0}]
)
def test_gpu_image_folder_gives_the_cpu_paths_batches(folder: Path, tmp_path: Path, loader: dict) -> None:
    for transform in (None, Compose([RandomResizedCrop(40), RandomHorizontalFlip()])):
        torch.manual_seed(0)
        gpu = list(_loader(folder, tmp_path / "gpu", "cuda", transform, **loader))
        torch.manual_seed(0)
        cpu = list(_loader(folder, tmp_path / "cpu", "cpu", transform, **loader))
        assert len(gpu) == len(cpu) == 2
        for (images, labels), (ref_images, ref_labels) in zip(gpu, cpu, strict=True):
            assert images.device.type == "cuda" and labels.device.type == "cpu"
            assert torch.equal(labels, ref_labels)
            # The same seeds draw the same crops on both paths, so the pixels agree.
            assert psnr(images.cpu(), ref_images) >= MIN_PSNR
