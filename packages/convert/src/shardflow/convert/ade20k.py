"""ade20k: ADE20K scene parsing (ADEChallengeData2016) into MDS ``{uid: bytes, x: jpeg, y: png}``.

The input is the extracted ``ADEChallengeData2016`` folder: ``images/training/ADE_train_<uid>.jpg`` with
``annotations/training/ADE_train_<uid>.png``, and ``images/validation/ADE_val_<uid>.jpg`` with
``annotations/validation/ADE_val_<uid>.png``. Both splits are converted, into the ``train/`` and
``val/`` sub-folders of ``--out`` (as mosaicml-streaming's converter does); ``--split`` converts one of
them. One sample per image, in file name order: ``uid`` (the name's number, e.g. ``b"00000001"``),
``x`` the image's bytes and ``y`` its segmentation mask's bytes, both as stored (read back as PIL
images). As the reference does, the training split leaves out the four images listed in
:data:`EXCLUDED` (20,206 training and 2,000 validation samples from the full dataset). An image without
its mask is an error; an image or mask whose structure shows it truncated or not an image is logged and
skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from shardflow.convert import _cli
from shardflow.convert._images import read_image
from shardflow.convert._plan import Segment, Unit
from shardflow.convert._run import Options, Plan, SplitConverter, Summary, convert_each, split_converters
from shardflow.convert.errors import InputError

__all__ = ["ADE20K", "ade20k_to_mds", "main", "SPLITS", "COLUMNS", "EXCLUDED"]

SPLITS = {"train": "training", "val": "validation"}
"""Split name to the sub-folder of ``images/`` and ``annotations/`` that holds it."""
COLUMNS = {"uid": "bytes", "x": "jpeg", "y": "png"}
"""The columns mosaicml-streaming's ADE20K converter writes, which its ``StreamingADE20K`` reads."""
EXCLUDED = {"train": ("00003020", "00001701", "00013508", "00008455")}
"""The uids the reference's converter leaves out, by split."""


@dataclass
class ADE20K(SplitConverter):
    """Converts one split (``train`` or ``val``) of the ADEChallengeData2016 folder ``root``."""

    name = "ade20k"
    splits = tuple(SPLITS)

    def __post_init__(self) -> None:
        self._bytes = 0  # of the sample read last

    def plan(self) -> Plan:
        self.check_split()
        images = os.path.join(self.root, "images", SPLITS[self.split])
        masks = os.path.join(self.root, "annotations", SPLITS[self.split])
        for folder in (images, masks):
            if not os.path.isdir(folder):
                raise InputError(
                    f"ade20k: {folder} is not a folder: give the ADEChallengeData2016 folder (images/ and "
                    "annotations/, each with training/ and validation/)"
                )
        prefix = f"ADE_{self.split}_"
        names = sorted(n for n in os.listdir(images) if n.startswith(prefix) and n.endswith(".jpg"))
        if not names:
            raise InputError(f"ade20k: {images} holds no {prefix}<uid>.jpg images")
        excluded = EXCLUDED.get(self.split, ())
        units = []
        for name in names:
            uid = name[len(prefix) : -len(".jpg")]
            if uid not in excluded:
                units.append(
                    Unit(os.path.join(images, name), 1, info=[uid, os.path.join(masks, name[:-4] + ".png")])
                )
        missing = [unit.info[1] for unit in units if not os.path.isfile(unit.info[1])]
        if missing:
            raise InputError(
                f"ade20k: {len(missing)} image(s) of {images} lack their mask; missing: "
                + ", ".join(missing[:3])
                + (", ..." if len(missing) > 3 else "")
            )
        return Plan(units, dict(COLUMNS), samples=len(units), inputs=[unit.info[1] for unit in units])

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        uid, mask = segment.unit.info
        image = read_image(segment.unit.name, "ade20k", skipped)
        target = read_image(mask, "ade20k", skipped) if image is not None else None
        self._bytes = len(image or b"") + len(target or b"")
        if image is not None and target is not None:
            yield {"uid": uid.encode(), "x": image, "y": target}

    def where(self, segment: Segment, produced: int) -> str:
        return segment.unit.name

    def tally(self, segment: Segment, produced: int) -> tuple[str, dict[str, int]]:
        """Counted per split folder of ``images/``."""
        return os.path.dirname(segment.unit.name), {"images": 1, "bytes": self._bytes}


def ade20k_to_mds(root: str, options: Options, *, split: str | None = None) -> dict[str, Summary]:
    """Convert the ADEChallengeData2016 folder ``root`` into MDS datasets ``<options.out>/train`` and
    ``<options.out>/val``, or only ``<options.out>/<split>``; returns each split's summary."""
    return convert_each(split_converters(ADE20K, root, split), options)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.ade20k ROOT --out OUT [--split val]``."""
    root = "the ADEChallengeData2016 folder: images/ and annotations/"
    return _cli.split_main(ADE20K, __doc__ or "", root, argv)


if __name__ == "__main__":
    raise SystemExit(main())
