"""The LitData source: a folder written by ``litdata.optimize``, its ``index.json`` read as shard entries."""

from __future__ import annotations

import json
from typing import Any

from shardflow.dataset.sources import Source, SourceFolder
from shardflow.format.errors import IndexFormatError
from shardflow.format.litdata import is_litdata_index, litdata_entries

__all__ = ["LitDataSource"]

_INDEX = "index.json"


class LitDataSource(Source):
    """LitData optimised folders: its ``index.json`` (``chunks`` and ``config``, not MDS's ``shards``) lists
    the chunk files, each a shard read directly; nothing is converted."""

    name = "litdata"

    def _index(self, folder: SourceFolder) -> Any:
        size = next((file.size for file in folder.files() if file.name == _INDEX), None)
        if size is None:
            return None
        data = folder.read(_INDEX, 0, size)
        try:
            return json.loads(data)
        except ValueError:
            raise IndexFormatError(
                f"{folder.describe(_INDEX)}: not valid JSON: the file is corrupt or truncated"
            ) from None

    def detect(self, folder: SourceFolder) -> bool:
        return is_litdata_index(self._index(folder))

    def build(self, folder: SourceFolder) -> list[dict[str, Any]]:
        sizes = {file.name: file.size for file in folder.files()}
        return litdata_entries(self._index(folder), folder.describe(_INDEX), sizes)
