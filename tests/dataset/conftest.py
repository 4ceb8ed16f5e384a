"""Datasets written once per session for the dataset tests: MDS (plain and zstd), JSONL and CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shardflow.format import CSVWriter, JSONWriter, MDSWriter

TOKENS = {"id": "int", "tokens": "ndarray:uint16:8", "text": "str"}


def token_sample(i: int) -> dict:
    """Sample ``i`` of the token datasets: every value derives from ``i``."""
    return {"id": i, "tokens": np.arange(i, i + 8, dtype=np.uint16), "text": f"sample {i}"}


def write_tokens(folder: Path, count: int, compression: str | None = None, size_limit: int = 4096) -> Path:
    """An MDS dataset of ``count`` token samples in shards of about ``size_limit`` bytes."""
    with MDSWriter(
        out=str(folder),
        columns=TOKENS,
        compression=compression,
        size_limit=size_limit,
        hashes=["sha1", "xxh64"],
    ) as writer:
        for i in range(count):
            writer.write(token_sample(i))
    return folder


@pytest.fixture(scope="session")
def tokens_remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 samples, uncompressed, about 25 shards."""
    return write_tokens(tmp_path_factory.mktemp("tokens") / "remote", 1000)


@pytest.fixture(scope="session")
def zstd_remote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 samples, zstd, about 25 shards."""
    return write_tokens(tmp_path_factory.mktemp("zstd") / "remote", 1000, compression="zstd")


@pytest.fixture(scope="session")
def text_remotes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 300 samples ``{id, text}`` as JSONL and as CSV."""
    base = tmp_path_factory.mktemp("text")
    columns = {"id": "int", "text": "str"}
    with JSONWriter(out=str(base / "jsonl"), columns=columns, size_limit=2048) as writer:
        for i in range(300):
            writer.write({"id": i, "text": f"line {i}"})
    with CSVWriter(out=str(base / "csv"), columns=columns, size_limit=2048) as writer:
        for i in range(300):
            writer.write({"id": i, "text": f"line {i}"})
    return {"jsonl": base / "jsonl", "csv": base / "csv"}
