"""Typed datasets for what shardflow-convert writes: images with labels (torchvision-style pairs) and text."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import default_collate, get_worker_info

from shardflow.dataset.dataset import StreamingDataset
from shardflow.dataset.errors import DatasetConfigError
from shardflow.dataset.images import CropPlan, checked_device, decode_batch, fast_plan, seeded_rng

__all__ = ["StreamingImageFolder", "StreamingImageNet", "StreamingCIFAR10", "StreamingText", "StreamingC4"]

CLASSES_NAME = "classes.json"

Transform = Callable[[Any], Any]


def _pil_image() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise DatasetConfigError(
            "decoding images needs Pillow: pip install 'shardflow-dataset[image]' (or pip install Pillow)"
        ) from exc
    return Image


class _Pairs(StreamingDataset):
    """Samples ``{x, y}`` read as ``(image, target)`` pairs with torchvision's ``transform`` arguments."""

    def __init__(
        self, *, transform: Transform | None = None, target_transform: Transform | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        for name in ("x", "y"):
            if name not in self.shards[0].columns:
                raise DatasetConfigError(
                    f"{type(self).__name__} reads samples {{x, y}}, but {self.streams[0].describe()} has "
                    f"columns {sorted(self.shards[0].columns)}: use StreamingDataset, or a dataset written "
                    "by shardflow.convert.imagefolder / cifar10"
                )
        self.transform = transform
        self.target_transform = target_transform
        self.classes: list[str] = self._classes()
        self.class_to_idx = {name: k for k, name in enumerate(self.classes)}

    def _classes(self) -> list[str]:
        """The class names the converter recorded beside the index (empty when there are none)."""
        stream = self.streams[0]
        path = stream.fetch_file(CLASSES_NAME)
        if path is None:
            return []
        try:
            classes = json.loads(path.read_text())["classes"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetConfigError(f"{path} is not {{'classes': [names]}}: {exc}") from exc
        return [str(name) for name in classes]

    def _image(self, value: Any) -> Any:
        raise NotImplementedError

    def get_item(self, sample_id: int) -> tuple[Any, Any]:
        """``(image, target)`` of a sample, through ``transform`` and ``target_transform``."""
        sample = super().get_item(sample_id)
        image, target = self._image(sample["x"]), sample["y"]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


class StreamingImageFolder(_Pairs):
    """An image-folder dataset (``shardflow.convert.imagefolder``): ``(PIL image in RGB, class index)``.

    ``classes`` and ``class_to_idx`` come from the ``classes.json`` the converter wrote. Takes
    :class:`StreamingDataset`'s arguments, plus ``transform`` and ``target_transform`` as torchvision's
    datasets do (torchvision itself is not needed). Needs Pillow.

    When ``transform`` is a pipeline the JPEG fast path recognises (a random resized crop, a flip, to a
    tensor, a normalisation, torchvision's or ``shardflow.dataset.images``': see
    :func:`shardflow.dataset.images.fast_plan`), a :class:`StreamingDataLoader` with a ``batch_size`` (no
    ``collate_fn``) reads whole batches: each decoded at the scale its crops need, straight into one
    ``(B, 3, H, W)`` tensor, ``decode_threads`` images at a time (1 suits ``worker_kind="thread"``, whose
    workers already decode in parallel). Its batches are ``[images, targets]``, as the per-sample path's.

    ``decode_device="cuda"`` (or ``"cuda:N"``) decodes those batches on the GPU instead (nvJPEG through
    torchvision's ``decode_jpeg``, the crops cut there: see :func:`shardflow.dataset.images.decode_batch`),
    and the images come on that device. CUDA does not work in forked DataLoader worker processes, so it
    decodes in the training process: with ``num_workers=0`` or ``worker_kind="thread"`` (process workers are
    refused). It needs a recognised ``transform``; CUDA and torchvision are checked when decoding starts.
    """

    def __init__(
        self, *, decode_threads: int = 1, decode_device: str | torch.device = "cpu", **kwargs: Any
    ) -> None:
        device = checked_device(decode_device, "decode_device", ready=False)
        super().__init__(**kwargs)
        self.decode_threads = decode_threads
        self.decode_device = device
        if device.type == "cuda" and self._plan() is None:
            raise DatasetConfigError(
                f"decode_device={decode_device!r} decodes on the JPEG fast path, which does not take "
                f"transform={self.transform!r} (see shardflow.dataset.images.fast_plan): decode on 'cpu'"
            )

    def _plan(self) -> CropPlan | None:
        """The fast path's plan for ``transform``, or None (then samples go one by one)."""
        if self.shards[0].columns.get("x") != "bytes":
            return None
        return fast_plan(self.transform)

    @property
    def supports_batch_reads(self) -> bool:
        """Whether ``transform`` runs on the JPEG fast path (see the class doc)."""
        return self._plan() is not None

    def read_batches(
        self, chunks: Iterator[NDArray[np.int64]], batch_size: int, drop_last: bool, spans: bool = False
    ) -> Iterator[Any]:
        """``[images, targets]`` batches, the images decoded through the fast path in this worker."""
        plan = self._plan()
        if plan is None:
            raise DatasetConfigError(f"transform={self.transform!r} does not run on the JPEG fast path")
        if self.decode_device.type == "cuda":
            if get_worker_info() is not None:
                raise DatasetConfigError(
                    f"decode_device='{self.decode_device}' decodes in the training process (CUDA does not "
                    "work in forked DataLoader worker processes), and this is a worker process: use "
                    "StreamingDataLoader(num_workers=0) or worker_kind='thread', or decode_device='cpu'"
                )
            checked_device(self.decode_device, "decode_device")
        rng = seeded_rng()  # drawn now, in the thread that plans the epoch, so that seeds set the crops
        return self._decoded(super().read_batches(chunks, batch_size, drop_last), plan, rng)

    def _decoded(
        self, batches: Iterator[dict[str, Any]], plan: CropPlan, rng: np.random.Generator
    ) -> Iterator[Any]:
        try:
            for batch in batches:
                images = decode_batch(
                    batch["x"], plan, rng=rng, threads=self.decode_threads, device=self.decode_device
                )
                targets = batch["y"]
                if self.target_transform is not None:
                    targets = default_collate([self.target_transform(y) for y in targets.tolist()])
                yield [images, targets]
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def _image(self, value: Any) -> Any:
        image = _pil_image().open(io.BytesIO(value))
        return image.convert("RGB")


StreamingImageNet = StreamingImageFolder
"""ImageNet converted with ``shardflow.convert.imagefolder``."""


class StreamingCIFAR10(_Pairs):
    """CIFAR-10 (``shardflow.convert.cifar10``): ``(PIL image 32x32 RGB, class index)``; needs Pillow."""

    def _image(self, value: Any) -> Any:
        return _pil_image().fromarray(value)


class StreamingText(StreamingDataset):
    """A text dataset (``shardflow.convert.jsonl``, C4/Pile style): each sample's text column.

    Args:
        text_column: The column holding the text.
        transform: Applied to the text (e.g. a tokenizer); its result is the sample.
        **kwargs: :class:`StreamingDataset`'s arguments.
    """

    def __init__(
        self, *, text_column: str = "text", transform: Transform | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if text_column not in self.shards[0].columns:
            raise DatasetConfigError(
                f"text_column={text_column!r} is not a column of {self.streams[0].describe()}: it has "
                f"{sorted(self.shards[0].columns)}"
            )
        self.text_column = text_column
        self.transform = transform

    def get_item(self, sample_id: int) -> Any:
        """The sample's text, through ``transform``."""
        text = super().get_item(sample_id)[self.text_column]
        return self.transform(text) if self.transform is not None else text


StreamingC4 = StreamingText
"""C4 (or any JSONL corpus) converted with ``shardflow.convert.jsonl``."""
