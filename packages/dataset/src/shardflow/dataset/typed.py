"""Typed datasets for what shardflow-convert writes: images with labels (torchvision-style pairs) and text."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

from shardflow.dataset.dataset import StreamingDataset
from shardflow.dataset.errors import DatasetConfigError

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
    """

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
