"""imagefolder: a class-per-folder image tree (the ImageNet layout) into MDS ``{x: bytes, y: int}``.

``root/<class>/<...>/<image>``: classes are the sorted names of ``root``'s folders, ``y`` is the index of
a class in that list, and ``x`` is each image file's bytes exactly as stored (never re-encoded). The class
names go to ``classes.json`` beside ``index.json``.

Every image is checked before it is written; those that fail are logged with their path and skipped, and
counted in the summary. The default check (``quick``) looks at the file's bytes: JPEG starts with
``FF D8 FF`` and ends with ``FF D9`` (trailing ``00``/``FF`` padding allowed), PNG has its signature, an
``IHDR`` chunk first and an ``IEND`` chunk last, GIF its header and ``3B`` trailer, BMP, WebP and TIFF
their magic numbers and a size or offset within the file; any other content is opened with Pillow's
``verify()``. ``--verify`` (``full``) adds Pillow's ``verify()`` for every image (it reads the headers
and, for PNG, the chunks' checksums; for JPEG it does not notice a truncated file, which the structural
check does); ``--no-verify`` (``none``) checks nothing.
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

__all__ = ["ImageFolder", "imagefolder_to_mds", "main", "CLASSES_NAME", "EXTENSIONS", "CHECKS", "looks_valid"]

logger = logging.getLogger(__name__)

CLASSES_NAME = "classes.json"
"""Beside ``index.json``: ``{"classes": [name of class 0, name of class 1, ...]}``."""

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

CHECKS = ("quick", "full", "none")
"""How images are checked: their bytes' structure (Pillow for unknown kinds), Pillow's ``verify()``, not."""


@dataclass
class ImageFolder(Converter):
    """Converts ``root``: one folder per class, images below it (any depth)."""

    root: str
    extensions: tuple[str, ...] = EXTENSIONS
    check: str = "quick"
    name = "imagefolder"

    def __post_init__(self) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"imagefolder: check={self.check!r}: give one of {', '.join(CHECKS)}")
        self._bytes = 0  # of the image read last

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
        if self.check == "full":
            require("PIL.Image", "image", "imagefolder (checking images)", "Pillow")
        return Plan(units, {"x": "bytes", "y": "int"}, {CLASSES_NAME: {"classes": classes}}, len(units))

    def config(self) -> dict[str, Any]:
        return {"root": os.path.abspath(self.root), "check": self.check, "extensions": list(self.extensions)}

    def samples(
        self, segment: Segment, columns: dict[str, str], skipped: list[str]
    ) -> Iterator[dict[str, Any]]:
        path = segment.unit.name
        try:
            data = _read(path)
        except OSError as err:
            raise InputError(f"imagefolder: cannot read {path}: {err}") from None
        self._bytes = len(data)
        if self.check != "none" and not _is_image(data, path, skipped, self.check == "full"):
            return
        yield {"x": data, "y": segment.unit.info}

    def where(self, segment: Segment, produced: int) -> str:
        return segment.unit.name

    def tally(self, segment: Segment, produced: int) -> tuple[str, dict[str, int]]:
        """Counted per tree (``root``), not per image file."""
        return self.root, {"images": 1, "bytes": self._bytes}


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


_PADDING = b"\x00\xff"  # bytes some writers leave after an image's end marker
_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def looks_valid(data: bytes) -> bool | None:
    """Whether ``data`` is a whole image by its structure; None when its kind is not one checked here.

    Cheap (no decoding): it catches truncated files and files of another kind named as images, not
    corrupt pixel data inside an otherwise whole file.
    """
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):  # JPEG: SOI, a marker; EOI last
        return data.rstrip(_PADDING).endswith(b"\xff\xd9")
    if head.startswith(_PNG):  # PNG: signature, IHDR first, IEND last
        return head[8:16] == b"\x00\x00\x00\rIHDR" and data.rstrip(b"\x00").endswith(_PNG_END)
    if head.startswith((b"GIF87a", b"GIF89a")):  # GIF: header, 3B trailer
        return len(data) > 13 and data.rstrip(b"\x00").endswith(b";")
    if head.startswith(b"BM") and len(data) >= 26:  # BMP: the recorded size (0: unset) and pixels' offset
        size = int.from_bytes(data[2:6], "little")
        return len(data) >= size and 14 <= int.from_bytes(data[10:14], "little") < len(data)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":  # WebP: the RIFF size covers the file
        return len(data) >= 8 + int.from_bytes(data[4:8], "little") >= 20
    if head.startswith(b"II*\x00"):  # TIFF: the first IFD is inside the file
        return 8 <= int.from_bytes(data[4:8], "little") < len(data)
    if head.startswith(b"MM\x00*"):
        return 8 <= int.from_bytes(data[4:8], "big") < len(data)
    return None


def _is_image(data: bytes, path: str, skipped: list[str], full: bool) -> bool:
    """Whether ``data`` is an image by :func:`looks_valid` (Pillow's ``verify()`` for unknown kinds, and
    for every image when ``full``); if not, log and record ``path`` as skipped."""
    quick = looks_valid(data)
    if quick is False:
        logger.warning("imagefolder: skipping %s: not a readable image (truncated or malformed)", path)
        skipped.append(path)
        return False
    if quick and not full:
        return True
    require("PIL.Image", "image", "imagefolder (checking images)", "Pillow")
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


def imagefolder_to_mds(root: str, options: Options, *, check: str = "quick") -> Summary:
    """Convert the class-per-folder tree ``root`` into an MDS dataset at ``options.out``.

    ``check``: ``quick`` (each file's structure), ``full`` (that and Pillow's ``verify()``) or ``none``.
    """
    return convert(ImageFolder(root, check=check), options)


def _parser() -> argparse.ArgumentParser:
    cli = _cli.parser("imagefolder", __doc__ or "")
    cli.add_argument("root", help="the tree's root folder: root/<class>/<image>")
    checks = cli.add_mutually_exclusive_group()
    checks.add_argument(
        "--verify",
        dest="check",
        action="store_const",
        const="full",
        default="quick",
        help="also open each image with Pillow's verify() (default: check each file's structure, its "
        "magic number and end marker; Pillow only for kinds not known)",
    )
    checks.add_argument(
        "--no-verify", dest="check", action="store_const", const="none", help="do not check the images"
    )
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m shardflow.convert.imagefolder ROOT --out OUT``."""
    return _cli.main(_parser(), lambda args: ImageFolder(args.root, check=args.check), argv)


if __name__ == "__main__":
    raise SystemExit(main())
