"""coco: COCO 2017 detection (images, boxes, labels) into MDS, in the reference converter's columns.

Columns: ``{img: jpeg, img_id: int, htot: int, wtot: int, bbox_sizes: ndarray:float32, bbox_labels:
ndarray:int64}``.

The input is COCO's folder as published: ``annotations/instances_train2017.json`` and
``annotations/instances_val2017.json`` beside the image folders ``train2017/`` and ``val2017/``. Both
splits are converted, into the ``train/`` and ``val/`` sub-folders of ``--out`` (as mosaicml-streaming's
converter does); ``--split`` converts one of them. One sample per image that has at least one annotation,
in the order of the annotation file's ``images`` list (the others are left out, as the reference does):

- ``img``: the image file's bytes as stored (column encoding ``jpeg``: read back as a PIL image);
- ``img_id``: the image's COCO id; ``htot``, ``wtot``: its height and width from the annotation file;
- ``bbox_sizes``: ``float32`` array ``(boxes, 4)``, each COCO box ``[left, top, width, height]`` as
  ``(left / W, top / H, (left + width) / W, (top + height) / H)``;
- ``bbox_labels``: ``int64`` array ``(boxes,)``, each box's category as its 1-based position in the
  file's ``categories`` list (0 is the background).

The category names, background first, go to ``classes.json`` beside ``index.json``. Each image file is
checked by its structure before it is written (a truncated or non-image file is logged and skipped).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardflow.convert import _cli
from shardflow.convert._images import read_image
from shardflow.convert._plan import Segment, Unit
from shardflow.convert._run import Options, Plan, SplitConverter, Summary, convert_each, split_converters
from shardflow.convert.errors import InputError

__all__ = ["COCO", "coco_to_mds", "main", "SPLITS", "COLUMNS", "annotations_path"]

SPLITS = ("train", "val")
COLUMNS = {
    "img": "jpeg",
    "img_id": "int",
    "htot": "int",
    "wtot": "int",
    "bbox_sizes": "ndarray:float32",
    "bbox_labels": "ndarray:int64",
}
"""The columns mosaicml-streaming's COCO converter writes, which its ``StreamingCOCO`` reads."""


def annotations_path(root: str, split: str) -> str:
    """``root/annotations/instances_<split>2017.json``."""
    return os.path.join(root, "annotations", f"instances_{split}2017.json")


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise InputError(
            f"coco: {path} is missing: give COCO's folder (annotations/instances_<split>2017.json beside "
            "<split>2017/)"
        ) from None
    except (OSError, ValueError) as err:
        raise InputError(f"coco: {path} is not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or not all(key in data for key in ("images", "annotations", "categories")):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InputError(f"coco: {path} lacks 'images', 'annotations' or 'categories' (found {found})")
    return data


def _images(path: str, data: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    """The annotated images of an annotation file, in its order, as ``[file name, id, height, width,
    boxes, labels]``; and the class names (background first)."""
    try:
        labels = {category["id"]: k + 1 for k, category in enumerate(data["categories"])}
        classes = ["background"] + [str(category["name"]) for category in data["categories"]]
        images: dict[Any, list[Any]] = {}
        for image in data["images"]:
            if image["id"] in images:
                raise InputError(f"coco: {path}: image id {image['id']} is listed twice")
            images[image["id"]] = [image["file_name"], image["id"], image["height"], image["width"], [], []]
        for k, note in enumerate(data["annotations"]):
            entry = images.get(note["image_id"])
            if entry is None:
                raise InputError(
                    f"coco: {path}: annotation {k} names image id {note['image_id']}, not listed"
                )
            if note["category_id"] not in labels:
                raise InputError(
                    f"coco: {path}: annotation {k} names category {note['category_id']}, not listed"
                )
            entry[4].append([float(value) for value in note["bbox"]])
            entry[5].append(labels[note["category_id"]])
    except (KeyError, TypeError) as err:
        raise InputError(f"coco: {path}: an entry lacks a field or has the wrong kind ({err!r})") from None
    return [entry for entry in images.values() if entry[4]], classes


@dataclass
class COCO(SplitConverter):
    """Converts one split (``train`` or ``val``) of the COCO 2017 folder ``root``."""

    name = "coco"
    splits = SPLITS

    def __post_init__(self) -> None:
        self._bytes = 0  # of the image read last

    def plan(self) -> Plan:
        self.check_split()
        folder = os.path.join(self.root, f"{self.split}2017")
        notes = annotations_path(self.root, self.split)
        data = _load(notes)
        if not os.path.isdir(folder):
            raise InputError(
                f"coco: {folder} is not a folder: the {self.split} images go there, beside {notes}"
            )
        images, classes = _images(notes, data)
        if not images:
            raise InputError(f"coco: {notes} has no image with an annotation")
        units = [Unit(os.path.join(folder, entry[0]), 1, info=entry[1:]) for entry in images]
        missing = [unit.name for unit in units if not os.path.isfile(unit.name)]
        if missing:
            raise InputError(
                f"coco: {len(missing)} image(s) that {notes} lists are missing: {', '.join(missing[:3])}"
                + (", ..." if len(missing) > 3 else "")
            )
        return Plan(units, dict(COLUMNS), {"classes.json": {"classes": classes}}, len(units), [notes])

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        data = read_image(segment.unit.name, "coco", skipped)
        self._bytes = len(data) if data is not None else 0
        if data is None:
            return
        image_id, height, width, boxes, labels = segment.unit.info
        box = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        sizes = np.stack(
            [
                box[:, 0] / width,
                box[:, 1] / height,
                (box[:, 0] + box[:, 2]) / width,
                (box[:, 1] + box[:, 3]) / height,
            ],
            axis=1,
        )
        yield {
            "img": data,
            "img_id": image_id,
            "htot": height,
            "wtot": width,
            "bbox_sizes": sizes.astype(np.float32),
            "bbox_labels": np.array(labels, dtype=np.int64),
        }

    def where(self, segment: Segment, produced: int) -> str:
        return segment.unit.name

    def tally(self, segment: Segment, produced: int) -> tuple[str, dict[str, int]]:
        """Counted per image folder."""
        return os.path.dirname(segment.unit.name), {"images": 1, "bytes": self._bytes}


def coco_to_mds(root: str, options: Options, *, split: str | None = None) -> dict[str, Summary]:
    """Convert COCO 2017's folder ``root`` into MDS datasets ``<options.out>/train`` and
    ``<options.out>/val``, or only ``<options.out>/<split>``; returns each split's summary."""
    return convert_each(split_converters(COCO, root, split), options)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.coco ROOT --out OUT [--split val]``."""
    root = "COCO's folder: annotations/instances_<split>2017.json and <split>2017/"
    return _cli.split_main(COCO, __doc__ or "", root, argv)


if __name__ == "__main__":
    raise SystemExit(main())
