"""The folder a writer fills: refuse or clear an existing dataset, or load it to append to."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from shardflow.format._atomic import TEMP_NAME, remove_quietly
from shardflow.format.errors import FormatError, IndexFormatError
from shardflow.format.index import INDEX_BASENAME, read_index, shard_files

__all__ = ["SHARD_NAME", "prepare_new", "load_existing"]

logger = logging.getLogger(__name__)

# Shard files as the writers name them: shard.00012.mds, shard.00003.json.meta.zstd, ...
SHARD_NAME = re.compile(r"^shard\.\d{5,}\.(mds|json|csv|tsv|xsv)(\.meta)?(\.[a-z0-9]+)?$")


def prepare_new(folder: Path, exist_ok: bool) -> None:
    """Make ``folder`` ready for a new dataset.

    Args:
        folder: The dataset folder; created if absent.
        exist_ok: When the folder is not empty, remove the dataset there (its ``index.json``, the files
            that index names directly in the folder, files named like shards, and temporary files left by
            a killed writer) instead of raising. Other files are left alone.

    Raises:
        FileExistsError: The folder is not empty and ``exist_ok`` is false.
    """
    if folder.is_dir() and any(folder.iterdir()):
        if not exist_ok:
            raise FileExistsError(
                f"{folder} is not empty: pass exist_ok=True to replace the dataset there, "
                "mode='append' to add samples to it, or choose another folder"
            )
        _remove_dataset(folder)
    folder.mkdir(parents=True, exist_ok=True)


def _remove_dataset(folder: Path) -> None:
    """Remove the dataset in ``folder``: its index first, so that no index ever names a missing shard."""
    index_path = folder / INDEX_BASENAME
    named: list[str] = []
    try:
        named = [name for shard in read_index(index_path)["shards"] for name in shard_files(shard)]
    except FileNotFoundError:
        pass
    except IndexFormatError as err:
        logger.warning("replacing a dataset whose index is unreadable: %s", err)
    remove_quietly(index_path)
    for name in named:
        if "/" not in name:  # Files of merged partitions belong to their own datasets.
            remove_quietly(folder / name)
    for path in folder.iterdir():
        if path.is_file() and (SHARD_NAME.match(path.name) or TEMP_NAME.match(path.name)):
            path.unlink()
    logger.warning("exist_ok=True: replaced the dataset in %s", folder)


def load_existing(folder: Path, fmt: str, columns: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The shards of the dataset in ``folder`` that new samples will be appended to.

    Args:
        folder: The dataset folder.
        fmt: The appending writer's format (``mds``, ``json``, ``csv``, ...).
        columns: The writer's column fields of a shard entry (e.g. ``column_names`` and
            ``column_encodings``); every existing shard must have the same values.

    Returns:
        The existing shard entries, or ``None`` when ``folder`` holds no ``index.json``.

    Raises:
        FormatError: An existing shard has another format or other columns; the message shows both.
        IndexFormatError: The existing index is invalid.
    """
    if not (folder / INDEX_BASENAME).is_file():
        return None
    shards = read_index(folder)["shards"]
    wanted = {"format": fmt, **columns}
    for number, shard in enumerate(shards):
        found = {key: shard.get(key) for key in wanted}
        if found != wanted:
            raise FormatError(
                f"cannot append to {folder}: its shard {number} has {found}, but this writer has {wanted}; "
                "append with the dataset's format and columns, or write a new dataset"
            )
    return shards
