"""The ``files`` source: every file of a folder (or prefix) is a sample ``{"path", "bytes"}``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shardflow.dataset.errors import NoShardsError
from shardflow.dataset.sources import Source, SourceFolder
from shardflow.format._read_plain import PACK_BYTES, PACK_FILES, files_entries

__all__ = ["PlainFiles"]


class PlainFiles(Source):
    """The files below a folder, in name order, one sample each: ``{"path", "bytes"}`` (``path``
    relative to the folder), plus ``label`` (int) and ``label_name`` with ``labels``. Never detected:
    ask for it with ``Stream(..., format="files")`` or ``format=PlainFiles(...)``.

    The folder is listed once and the listing cached as the stream's index; files are fetched in packs
    (consecutive files, up to ``pack_bytes`` or ``pack_files``), each one cached file.

    Args:
        labels: Label each file by its parent folder: ``label`` is that folder's position among the
            sorted parent folders, ``label_name`` its name.
        extensions: Keep only files whose names end with one of these (e.g. ``(".jpg", ".png")``);
            None keeps every file. Names with a part starting with ``.`` or ``_`` are always left out.
        pack_bytes: A pack closes once it holds this many bytes ...
        pack_files: ... or this many files.
    """

    name = "files"

    def __init__(
        self,
        labels: bool = False,
        extensions: Sequence[str] | None = None,
        pack_bytes: int = PACK_BYTES,
        pack_files: int = PACK_FILES,
    ) -> None:
        self.labels = labels
        self.extensions = tuple(extensions) if extensions is not None else None
        self.pack_bytes = pack_bytes
        self.pack_files = pack_files

    def options(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "extensions": list(self.extensions) if self.extensions is not None else None,
            "pack_bytes": self.pack_bytes,
            "pack_files": self.pack_files,
        }

    def build(self, folder: SourceFolder) -> list[dict[str, Any]]:
        files = [
            (file.name, file.size)
            for file in folder.files()
            if self.extensions is None
            or file.name.lower().endswith(tuple(e.lower() for e in self.extensions))
        ]
        if not files:
            raise NoShardsError(f"{folder.describe()} holds no file to read (extensions={self.extensions!r})")
        return files_entries(files, self.labels, self.pack_bytes, self.pack_files)
