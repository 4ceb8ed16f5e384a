"""imagefolder: a class-per-folder image tree (the ImageNet layout) into MDS ``{x: bytes, y: int}``.

``root/<class>/<...>/<image>``: classes are the sorted names of ``root``'s folders, ``y`` is the index of
a class in that list, and ``x`` is each image file's bytes exactly as stored (never re-encoded). The class
names go to ``classes.json`` beside ``index.json``. Every image is checked with Pillow's ``verify()``;
those that fail are logged with their path and skipped, and counted in the summary.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardflow.convert import _cli
from shardflow.convert._deps import require
from shardflow.convert._plan import Segment, Unit
from shardflow.convert._run import Converter, Options, Plan, Summary, convert
from shardflow.convert.errors import InputError

__all__ = ["ImageFolder", "imagefolder_to_mds", "main", "CLASSES_NAME", "EXTENSIONS"]

logger = logging.getLogger(__name__)

CLASSES_NAME = "classes.json"
"""Beside ``index.json``: ``{"classes": [name of class 0, name of class 1, ...]}``."""

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class ImageFolder(Converter):
    """Converts ``root``: one folder per class, images below it (any depth)."""

    root: str
    extensions: tuple[str, ...] = EXTENSIONS
    verify: bool = True
    name = "imagefolder"

    def plan(self) -> Plan:
        root = Path(self.root)
        if not root.is_dir():
            raise InputError(f"imagefolder: {root} is not a folder: give the root of a class-per-folder tree")
        classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        if not classes:
            raise InputError(f"imagefolder: {root} has no class folders: expected {root}/<class>/<image>")
        units = []
        suffixes = tuple(ext.lower() for ext in self.extensions)
        for label, name in enumerate(classes):
            for path in sorted(_files(root / name)):
                if path.lower().endswith(suffixes):
                    units.append(Unit(path, 1, info=label))
        if not units:
            raise InputError(f"imagefolder: no images ({', '.join(suffixes)}) under {root}")
        if self.verify:
            require("PIL.Image", "image", "imagefolder (checking images)", "Pillow")
        return Plan(units, {"x": "bytes", "y": "int"}, {CLASSES_NAME: {"classes": classes}}, len(units))

    def config(self) -> dict[str, Any]:
        return {"root": os.path.abspath(self.root), "verify": self.verify}

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        path = segment.unit.name
        try:
            data = _read(path)
        except OSError as err:
            raise InputError(f"imagefolder: cannot read {path}: {err}") from None
        if self.verify and not _is_image(data, path, skipped):
            return
        yield {"x": data, "y": segment.unit.info}

    def where(self, segment: Segment, produced: int) -> str:
        return segment.unit.name


def _read(path: str) -> bytes:
    """The bytes of the file at ``path`` (fewer layers than ``open().read()``: this runs per image)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        parts: list[bytes] = []
        while chunk := os.read(fd, size + 1 if not parts else 1 << 20):
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def _files(folder: Path) -> Iterator[str]:
    """Every file under ``folder`` (hidden ones excluded), following no symlinked folders."""
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith("."):
                yield os.path.join(top, name)


def _is_image(data: bytes, path: str, skipped: list[str]) -> bool:
    """Whether Pillow accepts ``data``; if not, log and record ``path`` as skipped."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as err:  # Pillow raises many kinds (UnidentifiedImageError, SyntaxError, OSError...)
        logger.warning(
            "imagefolder: skipping %s: not a readable image (%s: %s)", path, type(err).__name__, err
        )
        skipped.append(path)
        return False
    return True


def imagefolder_to_mds(root: str, options: Options, *, verify: bool = True) -> Summary:
    """Convert the class-per-folder tree ``root`` into an MDS dataset at ``options.out``."""
    return convert(ImageFolder(root, verify=verify), options)


def _parser() -> argparse.ArgumentParser:
    cli = _cli.parser("imagefolder", __doc__ or "")
    cli.add_argument("root", help="the tree's root folder: root/<class>/<image>")
    cli.add_argument(
        "--no-verify", action="store_true", help="do not open each image with Pillow to check it"
    )
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.imagefolder ROOT --out OUT``."""
    return _cli.main(_parser(), lambda args: ImageFolder(args.root, verify=not args.no_verify), argv)


if __name__ == "__main__":
    raise SystemExit(main())
