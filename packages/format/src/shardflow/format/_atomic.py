"""Temporary names beside their final file, and atomic publication by rename."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

__all__ = ["TEMP_NAME", "temp_path", "write_atomic", "remove_quietly"]

# ".<final name>.<pid>-<8 hex>.tmp": hidden, and recognisable as ours when a killed writer left one behind.
# Must equal the other package's TEMP_NAME (format/_atomic, storage/_io): tests/packaging/test_temp_names.py
TEMP_NAME = re.compile(r"^\..+\.\d+-[0-9a-f]{8}\.tmp$")


def temp_path(final: Path, tag: str = "") -> Path:
    """A fresh temporary path in ``final``'s folder, so that a rename onto ``final`` is atomic.

    Args:
        final: The path the file will be published under.
        tag: An optional word that tells several temporary files of one final name apart.

    Returns:
        A path matching :data:`TEMP_NAME` that no other writer uses.
    """
    middle = f"{final.name}.{tag}" if tag else final.name
    return final.with_name(f".{middle}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def write_atomic(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` through a temporary file and a rename: readers see all of it or none.

    Args:
        final: Destination path.
        data: The whole file content.
    """
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as out:
            out.write(data)
        os.replace(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise


def remove_quietly(path: Path) -> None:
    """Remove ``path`` if it exists; a file that is already gone is not an error."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
