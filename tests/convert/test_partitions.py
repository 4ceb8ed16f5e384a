"""Default partitions follow the input's size; the closing summary gives a readable duration."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest

from shardflow.convert import imagefolder, jsonl
from shardflow.convert._plan import Unit
from shardflow.convert._run import Options, Plan, Summary, default_partitions, format_seconds


def _images(root: Path, count: int) -> int:
    """``count`` small JPEGs in two class folders; returns their total bytes."""
    from PIL import Image

    total = 0
    for k in range(count):
        folder = root / ("a" if k % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (k % 256, 0, 0)).save(buffer, "JPEG")
        (folder / f"{k:03d}.jpg").write_bytes(buffer.getvalue())
        total += len(buffer.getvalue())
    return total


def _shard_samples(out: Path) -> list[int]:
    return [shard["samples"] for shard in json.loads((out / "index.json").read_text())["shards"]]


def test_a_small_image_folder_is_one_partition_and_one_shard(tmp_path: Path, caplog) -> None:
    _images(tmp_path / "in", 100)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert imagefolder.main([str(tmp_path / "in"), "--out", str(out), "--workers", "2"]) == 0
    assert _shard_samples(out) == [100]
    assert len(list(out.glob("part.*/index.json"))) == 1
    summary = next(m for m in caplog.messages if m.startswith("imagefolder: 100 samples in 1 shards"))
    assert not re.search(r"in 0\.0 s", summary), summary
    assert re.search(r" in \d+(\.\d+)? m?s \(", summary), summary


def test_partitions_grow_with_the_input_up_to_four_per_worker(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": k, "text": "x" * 90}) + "\n" for k in range(2000)))  # ~220 kB
    out = tmp_path / "out"
    assert jsonl.main([str(path), "--out", str(out), "--workers", "2", "--size-limit", "100kb"]) == 0
    assert len(list(out.glob("part.*/index.json"))) == 3  # ceil(220 kB / 100 kB), under 4 x 2
    assert sum(_shard_samples(out)) == 2000


@pytest.mark.parametrize(
    ("stored", "workers", "limit", "expected"),
    [(10, 2, 1000, 1), (2500, 2, 1000, 3), (10**6, 2, 1000, 8), (10**6, 3, None, 12), (0, 1, 1000, 1)],
)
def test_default_partitions(
    tmp_path: Path, stored: int, workers: int, limit: int | None, expected: int
) -> None:
    path = tmp_path / "input"
    path.write_bytes(b"x" * stored)
    plan = Plan([Unit(str(path), 1)], {"x": "bytes"})
    assert default_partitions(plan, Options(out="o", workers=workers, size_limit=limit)) == expected


def test_unknown_input_size_takes_four_per_worker() -> None:
    plan = Plan([Unit("/nonexistent/file", 1)], {"x": "bytes"})
    assert default_partitions(plan, Options(out="o", workers=2)) == 8


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0004, "0 ms"), (0.0123, "12 ms"), (0.345, "0.34 s"), (4.25, "4.2 s"), (93.4, "93 s")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_summary_of_a_fast_conversion() -> None:
    line = Summary(100, 1, 2_000_000, 0.012, [], 1, 0).describe("imagefolder", "out").splitlines()[0]
    assert "in 12 ms (8,333 samples/s)" in line, line
