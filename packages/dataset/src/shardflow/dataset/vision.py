"""Typed datasets for the vision starter datasets: COCO detection and ADE20K segmentation.

They read what ``shardflow.convert.coco`` / ``ade20k`` write, and what mosaicml-streaming's converters
write (the same columns), and yield what the reference's ``StreamingCOCO`` / ``StreamingADE20K`` yield.
Images are decoded by their column encodings (``jpeg``, ``png``), which need Pillow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shardflow.dataset.dataset import StreamingDataset
from shardflow.dataset.errors import DatasetConfigError
from shardflow.dataset.typed import Transform

__all__ = ["StreamingCOCO", "StreamingADE20K"]

BoxesTransform = Callable[[Any, tuple[int, int], Any, Any], tuple[Any, tuple[int, int], Any, Any]]
"""``(image, (height, width), boxes, labels)`` to the same four, transformed."""


def _require_columns(dataset: StreamingDataset, names: tuple[str, ...], converter: str) -> None:
    """Raise unless the first shard of ``dataset`` has every column of ``names``."""
    have = dataset.shards[0].columns
    missing = [name for name in names if name not in have]
    if missing:
        raise DatasetConfigError(
            f"{type(dataset).__name__} reads columns {list(names)}, but {dataset.streams[0].describe()} has "
            f"{sorted(have)} (no {missing}): use StreamingDataset, or a dataset written by "
            f"shardflow.convert.{converter}"
        )


class StreamingCOCO(StreamingDataset):
    """COCO (``shardflow.convert.coco``): ``(image, img_id, (htot, wtot), bbox_sizes, bbox_labels)``.

    The image is a PIL image in RGB; ``bbox_sizes`` a ``float32`` array ``(boxes, 4)`` of
    ``(left, top, right, bottom)`` as fractions of the width and height; ``bbox_labels`` an ``int64``
    array ``(boxes,)`` of 1-based category positions.

    Args:
        transform: Called as ``transform(image, (htot, wtot), bbox_sizes, bbox_labels)``; returns those
            four, transformed (the reference's signature).
        **kwargs: :class:`StreamingDataset`'s arguments.
    """

    def __init__(self, *, transform: BoxesTransform | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _require_columns(self, ("img", "img_id", "htot", "wtot", "bbox_sizes", "bbox_labels"), "coco")
        self.transform = transform

    def get_item(self, sample_id: int) -> tuple[Any, int, tuple[int, int], Any, Any]:
        """The sample's image, id, size, boxes and labels, through ``transform``."""
        sample = super().get_item(sample_id)
        image, size = sample["img"].convert("RGB"), (sample["htot"], sample["wtot"])
        boxes, labels = sample["bbox_sizes"], sample["bbox_labels"]
        if self.transform is not None:
            image, size, boxes, labels = self.transform(image, size, boxes, labels)
        return image, sample["img_id"], size, boxes, labels


class StreamingADE20K(StreamingDataset):
    """ADE20K (``shardflow.convert.ade20k``): ``(image, mask)``, both PIL images as stored.

    Args:
        joint_transform: Called as ``joint_transform((image, mask))``, before the others; returns both.
        transform: Applied to the image.
        target_transform: Applied to the mask.
        **kwargs: :class:`StreamingDataset`'s arguments.
    """

    def __init__(
        self,
        *,
        joint_transform: Transform | None = None,
        transform: Transform | None = None,
        target_transform: Transform | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _require_columns(self, ("x", "y"), "ade20k")
        self.joint_transform = joint_transform
        self.transform = transform
        self.target_transform = target_transform

    def get_item(self, sample_id: int) -> tuple[Any, Any]:
        """The sample's image and mask, through the transforms."""
        sample = super().get_item(sample_id)
        image, mask = sample["x"], sample["y"]
        if self.joint_transform is not None:
            image, mask = self.joint_transform((image, mask))
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            mask = self.target_transform(mask)
        return image, mask
