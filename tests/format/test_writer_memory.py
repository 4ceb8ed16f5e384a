"""Writing a 1 GiB shard streams through files: the writer's memory does not grow with the shard, compressed
or not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shardflow.format import LocalDataset

# Writes 16,000 samples of 64 KiB (1000 MiB) into one shard, hashed and maybe compressed, then reports its
# peak RSS in KiB.
# VmHWM is this process's own peak; ru_maxrss is not: Linux carries the parent's over fork and exec.
CHILD = """
import sys
import numpy as np
from shardflow.format import MDSWriter
tokens = np.arange(32768, dtype=np.uint16)
compression = sys.argv[2] if len(sys.argv) > 2 else None
with MDSWriter(out=sys.argv[1], columns={"id": "int", "tokens": "ndarray:uint16:32768"},
               size_limit=1 << 30, hashes=["sha1"], compression=compression) as writer:
    for i in range(16_000):
        writer.write({"id": i, "tokens": tokens})
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


@pytest.mark.slow
@pytest.mark.parametrize("compression", [None, "zstd"])
def test_peak_rss_while_writing_a_1gib_shard(tmp_path: Path, compression: str | None) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), *([compression] if compression else [])],
        capture_output=True, text=True, timeout=120, check=True,
    )
    peak_mib = int(result.stdout.split()[-1]) / 1024  # VmHWM is in KiB
    shards = json.loads((tmp_path / "index.json").read_text())["shards"]
    assert [shard["samples"] for shard in shards] == [16_000]
    assert shards[0]["raw_data"]["bytes"] > 1_000 * 2**20
    stored = shards[0]["zip_data" if compression else "raw_data"]
    assert stored["bytes"] == (tmp_path / stored["basename"]).stat().st_size
    assert peak_mib < 200, f"peak RSS {peak_mib:.0f} MiB while writing a 1 GiB shard ({compression=})"
    if compression:
        with LocalDataset(tmp_path, validate_hash="sha1") as dataset:
            assert dataset[15_999]["id"] == 15_999 and int(dataset[123]["tokens"][-1]) == 32767
