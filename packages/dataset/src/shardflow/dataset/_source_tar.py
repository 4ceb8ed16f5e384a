"""The WebDataset source: a folder of ``.tar`` files, each a shard, indexed from its headers alone."""

from __future__ import annotations

from typing import Any

from shardflow.dataset.sources import Source, SourceFolder
from shardflow.format.webdataset import tar_entry

__all__ = ["WebDatasetSource", "TAR_SUFFIXES"]

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class WebDatasetSource(Source):
    """WebDataset tars: every ``.tar`` of the folder (in name order) is a shard whose samples are its
    members grouped by key, as the webdataset library groups them. Building the index reads each tar's
    headers through ranged reads (no download). ``.tar.gz`` files are refused: they cannot be read at
    random (decompress them to ``.tar``)."""

    name = "webdataset"

    def detect(self, folder: SourceFolder) -> bool:
        return any(file.name.endswith(TAR_SUFFIXES) for file in folder.files())

    def build(self, folder: SourceFolder) -> list[dict[str, Any]]:
        tars = [file for file in folder.files() if file.name.endswith(TAR_SUFFIXES)]
        return folder.map(
            lambda file: tar_entry(
                file.name, file.size, folder.reader(file.name), url=folder.describe(file.name),
                name=folder.describe(file.name),
            ),
            tars,
        )  # fmt: skip
