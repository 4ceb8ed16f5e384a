"""The ``parquet`` source: a folder (or prefix) of Parquet files, indexed from their footers."""

from __future__ import annotations

from typing import Any

from shardflow.dataset.errors import NoShardsError
from shardflow.dataset.sources import Source, SourceFolder
from shardflow.format._read_parquet import SHARD_BYTES, parquet_entries, read_parquet_footer

__all__ = ["ParquetSource"]


class ParquetSource(Source):
    """The ``.parquet`` files below a folder, in name order (other files are left out).

    Each file's footer is read with ranged reads (its last 64 KiB, more for a larger footer), all files
    in parallel; nothing else is read until a shard is fetched. A shard is a run of row groups of one file
    of at least ``shard_bytes`` (a file holding less is one shard, fetched whole); see
    ``shardflow.format._read_parquet`` for the columns and nulls.

    Args:
        shard_bytes: Row groups are joined until a shard holds this many compressed bytes.
    """

    name = "parquet"

    def __init__(self, shard_bytes: int = SHARD_BYTES) -> None:
        self.shard_bytes = shard_bytes

    def options(self) -> dict[str, Any]:
        return {"shard_bytes": self.shard_bytes}

    def detect(self, folder: SourceFolder) -> bool:
        return any(file.name.endswith(".parquet") for file in folder.files())

    def build(self, folder: SourceFolder) -> list[dict[str, Any]]:
        files = [file for file in folder.files() if file.name.endswith(".parquet")]
        if not files:
            raise NoShardsError(f"{folder.describe()} holds no .parquet file")
        footers = folder.map(
            lambda file: read_parquet_footer(file.name, file.size, folder.reader(file.name)), files
        )
        return parquet_entries(footers, self.shard_bytes)
