"""The JPEG fast path: torchvision's random resized crop, decoded at the smallest scale the crop needs, a
batch at a time into one ``uint8`` tensor.

A crop is drawn as torchvision's ``RandomResizedCrop.get_params`` draws it (the same ranges and procedure:
ten tries of an area and a log-uniform aspect ratio, then the central fallback). The JPEG is then decoded
by Pillow at 1/2, 1/4 or 1/8 scale when the crop still has at least the output's pixels at that scale
(``Image.draft``: libjpeg-turbo scales in the DCT domain, so fewer pixels are ever made), and resized
straight from the crop's box to the output size (no intermediate crop), into its place in a preallocated
``(B, 3, H, W)`` batch. Pillow releases the GIL while it decodes and resizes, so loader threads (or
``threads``) decode in parallel. Nothing here imports torchvision: its transform objects are recognised
by their class names and read through their attributes.

On a CUDA device (``decode_batch(..., device="cuda")``) the batch's JPEGs are decoded whole by nvJPEG, in
one call of torchvision's ``decode_jpeg``, and each crop is cut and resized on the GPU by torch's
antialiased ``interpolate`` (:func:`resize_crop`, which works on any device); torchvision and CUDA are
imported only there.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from shardflow.dataset.errors import DatasetConfigError

__all__ = [
    "Compose",
    "CropPlan",
    "Normalize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "checked_device",
    "crop_batch",
    "crop_params",
    "decode_batch",
    "decode_crop",
    "fast_plan",
    "resize_crop",
    "seeded_rng",
]

logger = logging.getLogger(__name__)

ATTEMPTS = 10
"""Tries at an area and aspect ratio that fit the image before the central fallback (torchvision's)."""

RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
"""Pillow's resampling filters by torchvision's ``InterpolationMode`` values."""

INTERPOLATE = {
    RESAMPLE["nearest"]: "nearest-exact",
    RESAMPLE["bilinear"]: "bilinear",
    RESAMPLE["bicubic"]: "bicubic",
}
"""torch's ``interpolate`` modes for the Pillow filters it has (antialiased, as Pillow's, but for nearest);
the others (box, hamming, lanczos) resize bilinear on tensors."""

JPEG_START = b"\xff\xd8\xff"
"""The first bytes of every JPEG file (start of image, then a marker)."""


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise DatasetConfigError(
            "decoding images needs Pillow: pip install 'shardflow-dataset[image]' (or pip install Pillow)"
        ) from exc
    return Image


def seeded_rng() -> np.random.Generator:
    """A numpy generator seeded from torch's global one (so ``torch.manual_seed`` and DataLoader workers'
    seeds govern it, as they govern torchvision's transforms)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` from torchvision's ``size``: an int, or a sequence of one or two ints."""
    values = [size] if isinstance(size, int) else list(size)
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in values):
        raise ValueError(f"size={size!r} must be a positive int or a sequence of one or two positive ints")
    return int(values[0]), int(values[1])


def _range(name: str, value: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not 0 < low <= high:
        raise ValueError(f"{name}={tuple(value)!r} must be (low, high) with 0 < low <= high")
    return low, high


def crop_params(
    heights: NDArray[np.integer] | Sequence[int],
    widths: NDArray[np.integer] | Sequence[int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    rng: np.random.Generator | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Random resized crops of images of these sizes, drawn as torchvision's ``RandomResizedCrop`` draws them.

    For each image, up to :data:`ATTEMPTS` tries of an area (a uniform fraction ``scale`` of the image's)
    and an aspect ratio (log-uniform in ``ratio``), rounded to whole pixels; the first that fits is placed
    uniformly at random, and when none fits the crop is the central one of the image's aspect clamped to
    ``ratio``.

    Returns:
        ``(top, left, height, width)`` arrays, one entry per image.
    """
    rng = seeded_rng() if rng is None else rng
    heights = np.asarray(heights, np.int64)
    widths = np.asarray(widths, np.int64)
    count = len(heights)
    areas = (heights * widths).astype(np.float64)[:, None]
    target = areas * rng.uniform(scale[0], scale[1], (count, ATTEMPTS))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), (count, ATTEMPTS)))
    w = np.rint(np.sqrt(target * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= widths[:, None]) & (h > 0) & (h <= heights[:, None])
    first = fits.argmax(axis=1)
    found = fits[np.arange(count), first]
    # The fallback: the whole image, narrowed or shortened to the nearest allowed aspect ratio.
    image_ratio = widths / heights
    narrow, wide = image_ratio < ratio[0], image_ratio > ratio[1]
    fallback_w = np.where(wide, np.rint(heights * ratio[1]).astype(np.int64), widths)
    fallback_h = np.where(narrow, np.rint(widths / ratio[0]).astype(np.int64), heights)
    height = np.where(found, h[np.arange(count), first], fallback_h)
    width = np.where(found, w[np.arange(count), first], fallback_w)
    u_top, u_left = rng.random(count), rng.random(count)
    top = np.where(found, (u_top * (heights - height + 1)).astype(np.int64), (heights - height) // 2)
    left = np.where(found, (u_left * (widths - width + 1)).astype(np.int64), (widths - width) // 2)
    return top, left, height, width


def decode_crop(
    data: bytes | Any,
    crop: tuple[int, int, int, int],
    size: tuple[int, int],
    resample: int = RESAMPLE["bilinear"],
) -> NDArray[np.uint8]:
    """The crop ``(top, left, height, width)`` of a JPEG resized to ``size`` ``(height, width)``, as an
    ``(height, width, 3)`` RGB array, decoded at the smallest DCT scale (1, 1/2, 1/4, 1/8) that keeps at
    least ``size`` pixels across the crop. ``data`` is the file's bytes or a Pillow image not yet loaded
    (any other format is decoded whole)."""
    image = _pil().open(io.BytesIO(data)) if isinstance(data, (bytes, bytearray, memoryview)) else data
    top, left, height, width = (int(v) for v in crop)
    out_h, out_w = size
    full_w, full_h = image.size
    if image.format == "JPEG":
        image.draft("RGB", (math.ceil(full_w * out_w / width), math.ceil(full_h * out_h / height)))
    fx, fy = image.size[0] / full_w, image.size[1] / full_h
    if image.mode != "RGB":
        image = image.convert("RGB")
    box = (left * fx, top * fy, (left + width) * fx, (top + height) * fy)
    return np.asarray(image.resize((out_w, out_h), resample, box=box))


@dataclass(frozen=True)
class CropPlan:
    """What the fast path does to each image: a random resized crop to ``size`` ``(height, width)`` with
    ``scale``, ``ratio`` and Pillow filter ``resample``, a horizontal flip with probability ``flip``; the
    batch is ``uint8`` unless ``to_float`` (``/ 255`` to ``float32``), then normalised by ``mean`` and
    ``std`` when given."""

    size: tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    resample: int = RESAMPLE["bilinear"]
    flip: float = 0.0
    to_float: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def draw(
        self, heights: Sequence[int], widths: Sequence[int], rng: np.random.Generator
    ) -> tuple[list[tuple[int, int, int, int]], NDArray[np.bool_]]:
        """The crops ``(top, left, height, width)`` and flips of images of these sizes, in the one order
        every decoding path draws them (so the same ``rng`` state gives the same crops on any device)."""
        top, left, height, width = crop_params(heights, widths, self.scale, self.ratio, rng)
        flips = rng.random(len(heights)) < self.flip
        return list(zip(top.tolist(), left.tolist(), height.tolist(), width.tolist(), strict=True)), flips

    def finish(self, batch: torch.Tensor) -> torch.Tensor:
        """A ``uint8`` batch (or image) made ``float32`` and normalised as the plan says."""
        if not self.to_float:
            return batch
        out = batch.to(torch.float32).div_(255)
        if self.mean is not None and self.std is not None:
            shape = (-1, 1, 1)
            mean = torch.tensor(self.mean, dtype=torch.float32, device=out.device).view(shape)
            std = torch.tensor(self.std, dtype=torch.float32, device=out.device).view(shape)
            out.sub_(mean).div_(std)
        return out


def _as_plan(plan: CropPlan | Callable[[Any], Any]) -> CropPlan:
    """``plan``, or the plan of a transform that :func:`fast_plan` recognises."""
    if isinstance(plan, CropPlan):
        return plan
    recognised = fast_plan(plan)
    if recognised is None:
        raise DatasetConfigError(
            f"{plan!r} is not a transform the fast path recognises (see "
            "shardflow.dataset.images.fast_plan): apply it per sample instead"
        )
    return recognised


def resize_crop(
    image: torch.Tensor,
    crop: tuple[int, int, int, int],
    size: tuple[int, int],
    resample: int = RESAMPLE["bilinear"],
    flip: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The crop ``(top, left, height, width)`` of a decoded ``(3, H, W)`` ``uint8`` image, resized to
    ``size`` ``(height, width)`` (and mirrored with ``flip``) on the image's device: a ``uint8``
    ``(3, height, width)`` tensor, written into ``out`` when given.

    torch's ``interpolate`` stands in for Pillow's filter ``resample``: bilinear and bicubic antialiased as
    Pillow's (within a grey level or so: torch computes in floats, Pillow in fixed point), nearest as
    ``nearest-exact``; box, hamming and lanczos, which torch lacks, resize bilinear.
    """
    top, left, height, width = (int(v) for v in crop)
    region = image[None, :, top : top + height, left : left + width].to(torch.float32)
    mode = INTERPOLATE.get(resample, "bilinear")
    resized = F.interpolate(region, size=size, mode=mode, antialias=mode != "nearest-exact")[0]
    resized = resized.round_().clamp_(0, 255)
    if flip:
        resized = resized.flip(-1)
    if out is None:
        return resized.to(torch.uint8)
    return out.copy_(resized)


def crop_batch(
    images: Sequence[torch.Tensor],
    plan: CropPlan | Callable[[Any], Any],
    *,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """Decoded ``(3, H, W)`` ``uint8`` images, all on one device (any), through ``plan``: a
    ``(B, 3, H, W)`` batch on that device, each image's crop and flip drawn as :func:`decode_batch` draws
    them (the same ``rng`` state gives the same crops) and cut by :func:`resize_crop`."""
    plan = _as_plan(plan)
    rng = seeded_rng() if rng is None else rng
    heights, widths = [image.shape[-2] for image in images], [image.shape[-1] for image in images]
    crops, flips = plan.draw(heights, widths, rng)
    device = images[0].device if len(images) else torch.device("cpu")
    batch = torch.empty((len(images), 3, *plan.size), dtype=torch.uint8, device=device)
    for k, image in enumerate(images):
        resize_crop(image, crops[k], plan.size, plan.resample, bool(flips[k]), out=batch[k])
    return plan.finish(batch)


def checked_device(device: str | torch.device, argument: str = "device", ready: bool = True) -> torch.device:
    """``device`` as a torch device where images can be decoded: ``cpu``, or ``cuda`` when (unless not
    ``ready``: the name only) this torch has such a device and torchvision is installed (for nvJPEG); else
    a :class:`DatasetConfigError` naming ``argument`` and what is missing. CUDA is not initialised."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DatasetConfigError(f"{argument}={str(device)!r} is not a torch device: {exc}") from exc
    if resolved.type == "cpu" or resolved.type == "cuda" and not ready:
        return resolved
    if resolved.type != "cuda":
        raise DatasetConfigError(
            f"{argument}={str(device)!r}: images decode on 'cpu' (Pillow) or 'cuda' (nvJPEG), not "
            f"{resolved.type!r}"
        )
    if not torch.cuda.is_available():
        raise DatasetConfigError(
            f"{argument}={str(device)!r} needs a CUDA device, and torch {torch.__version__} here has none "
            "(torch.cuda.is_available() is False): decode on 'cpu'"
        )
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise DatasetConfigError(
            f"{argument}={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if importlib.util.find_spec("torchvision") is None:
        raise DatasetConfigError(
            f"{argument}={str(device)!r} decodes with torchvision's decode_jpeg (nvJPEG), and torchvision is "
            "not installed: pip install the torchvision build that matches torch, or decode on 'cpu'"
        )
    return resolved


def _pillow_tensor(data: bytes) -> torch.Tensor:
    """An image's bytes decoded whole by Pillow: a ``(3, H, W)`` ``uint8`` RGB tensor."""
    image = _pil().open(io.BytesIO(data)).convert("RGB")
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)))


def _decode_on_gpu(jpegs: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """Each image as a ``(3, H, W)`` ``uint8`` RGB tensor on CUDA ``device``: the JPEGs by nvJPEG in one
    batched call of torchvision's ``decode_jpeg``; other formats, or a batch nvJPEG refuses (say a CMYK
    JPEG), by Pillow, then copied over."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except (ImportError, RuntimeError) as exc:
        raise DatasetConfigError(f"decoding on {device} needs torchvision's decode_jpeg: {exc}") from exc
    decoded: dict[int, torch.Tensor] = {}
    at = [k for k, data in enumerate(jpegs) if bytes(data[: len(JPEG_START)]) == JPEG_START]
    if at:
        encoded = [torch.from_numpy(np.frombuffer(jpegs[k], np.uint8).copy()) for k in at]
        try:
            decoded.update(zip(at, decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device), strict=True))
        except RuntimeError as exc:
            logger.warning("nvJPEG did not decode a batch (%s): Pillow decodes it", exc)
    return [decoded[k] if k in decoded else _pillow_tensor(data).to(device) for k, data in enumerate(jpegs)]


def decode_batch(
    jpegs: Sequence[bytes],
    plan: CropPlan | Callable[[Any], Any],
    *,
    rng: np.random.Generator | None = None,
    threads: int = 1,
    pin: bool | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """The JPEGs through ``plan`` (a :class:`CropPlan`, or a transform that :func:`fast_plan` recognises):
    a ``(B, 3, H, W)`` tensor, ``uint8`` unless the plan normalises.

    Args:
        jpegs: The encoded images (other formats Pillow reads work too, decoded whole).
        plan: The crop, flip and normalisation.
        rng: Draws the crops and flips; by default one seeded from torch's global generator.
        threads: Images decoded at once (Pillow releases the GIL); 1 in loader threads that already
            decode in parallel.
        pin: Allocate the batch in pinned memory; by default when CUDA is available and this is not a
            DataLoader worker process (the loader pins there, with ``pin_memory``).
        device: ``"cpu"``: Pillow decodes each crop at a reduced scale, as the module doc says. A CUDA
            device: nvJPEG decodes the batch whole (torchvision's ``decode_jpeg``), then
            :func:`crop_batch` cuts the same crops and flips on the GPU, and the batch stays there (then
            ``threads`` and ``pin`` do not apply). Needs CUDA and torchvision; call it in the process that
            trains (CUDA does not work in forked DataLoader workers).
    """
    plan = _as_plan(plan)
    rng = seeded_rng() if rng is None else rng
    where = checked_device(device)
    if where.type == "cuda":
        return crop_batch(_decode_on_gpu(jpegs, where), plan, rng=rng)
    if pin is None:
        pin = torch.cuda.is_available() and torch.utils.data.get_worker_info() is None
    pil = _pil()
    images = [pil.open(io.BytesIO(data)) for data in jpegs]
    crops, flips = plan.draw([image.size[1] for image in images], [image.size[0] for image in images], rng)
    batch = torch.empty((len(images), 3, *plan.size), dtype=torch.uint8, pin_memory=bool(pin))
    target = batch.numpy()

    def fill(k: int) -> None:
        pixels = decode_crop(images[k], crops[k], plan.size, plan.resample)
        target[k] = (pixels[:, ::-1] if flips[k] else pixels).transpose(2, 0, 1)

    if threads > 1 and len(images) > 1:
        with ThreadPoolExecutor(min(threads, len(images)), thread_name_prefix="shardflow-decode") as pool:
            list(pool.map(fill, range(len(images))))
    else:
        for k in range(len(images)):
            fill(k)
    return plan.finish(batch)


# -- transforms ---------------------------------------------------------------------------------------


class RandomResizedCrop:
    """torchvision's ``RandomResizedCrop`` for Pillow images: a crop drawn by :func:`crop_params`, resized
    to ``size`` (an int or ``(height, width)``) with ``interpolation`` (a name or torchvision's
    ``InterpolationMode``)."""

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: Any = "bilinear",
    ) -> None:
        self.size = _pair(size)
        self.scale = _range("scale", scale)
        self.ratio = _range("ratio", ratio)
        name = str(getattr(interpolation, "value", interpolation)).lower()
        if name not in RESAMPLE:
            raise ValueError(f"interpolation={interpolation!r} is not one of {sorted(RESAMPLE)}")
        self.interpolation = name

    def __call__(self, image: Any) -> Any:
        top, left, height, width = (
            int(v[0]) for v in crop_params([image.height], [image.width], self.scale, self.ratio)
        )
        box = (left, top, left + width, top + height)
        return image.resize((self.size[1], self.size[0]), RESAMPLE[self.interpolation], box=box)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    """torchvision's ``RandomHorizontalFlip``: mirrors a Pillow image (or a ``(..., W)`` tensor) with
    probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p={p!r} must be a probability, 0 to 1")
        self.p = float(p)

    def __call__(self, image: Any) -> Any:
        if not torch.rand(1).item() < self.p:
            return image
        if isinstance(image, torch.Tensor):
            return image.flip(-1)
        return image.transpose(_pil().Transpose.FLIP_LEFT_RIGHT)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """torchvision's ``Normalize`` on an image tensor ``(C, H, W)`` or batch: a ``uint8`` one is first made
    ``float32`` in ``[0, 1]`` (as ``ToDtype(torch.float32, scale=True)``), then ``(x - mean) / std`` per
    channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        if len(self.mean) != len(self.std) or not all(s > 0 for s in self.std):
            raise ValueError(f"mean={mean!r} and std={std!r} must be as long, with every std > 0")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype == torch.uint8:
            image = image.to(torch.float32).div_(255)
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=image.dtype).view(shape)
        std = torch.tensor(self.std, dtype=image.dtype).view(shape)
        return (image - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


class Compose:
    """An image pipeline the fast path runs a batch at a time: one :class:`RandomResizedCrop`, at most one
    :class:`RandomHorizontalFlip` (before or after it), and optionally a :class:`Normalize` last.

    Called on a Pillow image (the per-sample path), it crops and flips the image, makes it a ``uint8``
    ``(3, H, W)`` tensor (as torchvision's ``PILToTensor``) and normalises it when asked (then
    ``float32``): the same, image by image, as :func:`decode_batch` makes a batch.
    """

    def __init__(self, transforms: Sequence[Any]) -> None:
        self.transforms = list(transforms)
        crops = [t for t in self.transforms if isinstance(t, RandomResizedCrop)]
        flips = [t for t in self.transforms if isinstance(t, RandomHorizontalFlip)]
        norms = [t for t in self.transforms if isinstance(t, Normalize)]
        counted = len(crops) + len(flips) + len(norms) == len(self.transforms)
        norm_last = not norms or self.transforms[-1] is norms[0]
        if not counted or len(crops) != 1 or len(flips) > 1 or len(norms) > 1 or not norm_last:
            raise ValueError(
                f"Compose({self.transforms!r}): shardflow.dataset.images.Compose takes one "
                "RandomResizedCrop, at most one RandomHorizontalFlip and at most one Normalize (last); for "
                "other transforms use torchvision's Compose or a function (they run per sample)"
            )
        crop = crops[0]
        self.plan = CropPlan(
            crop.size,
            crop.scale,
            crop.ratio,
            RESAMPLE[crop.interpolation],
            flips[0].p if flips else 0.0,
            bool(norms),
            norms[0].mean if norms else None,
            norms[0].std if norms else None,
        )

    def __call__(self, image: Any) -> torch.Tensor:
        for step in self.transforms:
            if not isinstance(step, Normalize):
                image = step(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        pixels = torch.from_numpy(np.ascontiguousarray(np.asarray(image, np.uint8).transpose(2, 0, 1)))
        return self.plan.finish(pixels)

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


# -- recognising pipelines ------------------------------------------------------------------------------


def _torchvision_name(step: Any) -> str | None:
    """The class name of a torchvision transform (``transforms`` or ``transforms.v2``), else None."""
    cls = type(step)
    return cls.__name__ if cls.__module__.startswith("torchvision.transforms") else None


def _scales_to_float(name: str | None, step: Any) -> bool:
    """Whether a torchvision step makes a ``uint8`` image ``float32`` in ``[0, 1]``."""
    if name == "ToDtype":
        return step.dtype is torch.float32 and bool(step.scale)
    return name == "ConvertImageDtype" and step.dtype is torch.float32


def _torchvision_plan(steps: Sequence[Any]) -> CropPlan | None:
    """The plan of a torchvision ``Compose``'s steps on a Pillow image, when each is one the fast path
    does (a crop and a flip on the image, to a tensor, to ``float32``, a normalisation): else None."""
    fields: dict[str, Any] = {}
    stage = "image"  # then "uint8", "float", "normalised"
    for step in steps:
        name = _torchvision_name(step)
        if stage == "image" and name == "RandomResizedCrop" and "size" not in fields:
            interpolation = str(getattr(step.interpolation, "value", step.interpolation)).lower()
            if interpolation not in RESAMPLE:
                return None
            fields.update(
                size=_pair(tuple(step.size)),
                scale=_range("scale", step.scale),
                ratio=_range("ratio", step.ratio),
                resample=RESAMPLE[interpolation],
            )
        elif stage == "image" and name == "RandomHorizontalFlip" and "flip" not in fields:
            fields["flip"] = float(step.p)
        elif stage == "image" and name in ("PILToTensor", "ToImage"):
            stage = "uint8"
        elif stage == "image" and name == "ToTensor" or stage == "uint8" and _scales_to_float(name, step):
            stage, fields["to_float"] = "float", True
        elif stage == "float" and name == "Normalize":
            fields.update(mean=tuple(map(float, step.mean)), std=tuple(map(float, step.std)))
            stage = "normalised"
        else:
            return None
    if "size" not in fields or stage == "image":
        return None
    return CropPlan(**fields)


def fast_plan(transform: Any) -> CropPlan | None:
    """The :class:`CropPlan` of ``transform`` when the fast path can run it a batch at a time with the
    per-sample result (up to decoding at a reduced scale), else None.

    Recognised: this module's :class:`Compose`, and torchvision's ``Compose`` (``transforms`` or
    ``transforms.v2``) of ``RandomResizedCrop`` (any size, scale, ratio; a Pillow interpolation) and at most
    one ``RandomHorizontalFlip``, then ``PILToTensor`` or ``ToImage`` (``uint8``) or ``ToTensor``, then
    optionally ``ToDtype(torch.float32, scale=True)`` or ``ConvertImageDtype(torch.float32)``, then
    optionally ``Normalize``.
    """
    if isinstance(transform, Compose):
        return transform.plan
    if _torchvision_name(transform) == "Compose":
        return _torchvision_plan(list(transform.transforms))
    return None
