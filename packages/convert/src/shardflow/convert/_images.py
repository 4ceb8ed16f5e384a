"""Image files of the starter datasets (COCO, ADE20K): read as stored, skipped when malformed."""

from __future__ import annotations

import logging

from shardflow.convert.errors import InputError
from shardflow.convert.imagefolder import looks_valid

__all__ = ["read_image"]

logger = logging.getLogger(__name__)


def read_image(path: str, converter: str, skipped: list[str]) -> bytes | None:
    """The bytes of the image file at ``path``, or None (logged, and ``path`` appended to ``skipped``) when
    its structure shows it truncated or not an image (:func:`~shardflow.convert.imagefolder.looks_valid`).

    Raises:
        InputError: The file cannot be read; the message names ``converter`` and the file.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as err:
        raise InputError(f"{converter}: cannot read {path}: {err}") from None
    if looks_valid(data) is False:
        logger.warning("%s: skipping %s: not a readable image (truncated or malformed)", converter, path)
        skipped.append(path)
        return None
    return data
