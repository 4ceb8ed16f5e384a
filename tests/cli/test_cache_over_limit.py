"""``shardflow cache status`` flags a cache folder that holds more than its cache_limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from shardflow.format import MDSWriter


def status(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "shardflow", "cache", "status", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_a_folder_over_its_limit_is_flagged(tmp_path: Path) -> None:
    from shardflow.dataset import StreamingDataset

    remote, local = tmp_path / "remote", tmp_path / "local"
    with MDSWriter(out=str(remote), columns={"id": "int", "x": "ndarray:uint8:900"}, size_limit=8192) as w:
        for i in range(200):
            w.write({"id": i, "x": np.full(900, i % 256, np.uint8)})
    unlimited = StreamingDataset(remote=str(remote), local=str(local), batch_size=1)
    assert [unlimited[i]["id"] for i in range(200)] == list(range(200))  # every shard downloaded
    downloaded = sum(p.stat().st_size for p in local.glob("shard.*.mds"))

    within = json.loads(status(str(local), "--json").stdout)
    assert within["over_limit"] == [] and within["indexes"][0]["over_limit_bytes"] is None

    limit = downloaded // 2  # a later dataset sets a smaller limit on the folder, and reads nothing yet
    StreamingDataset(remote=str(remote), local=str(local), batch_size=1, cache_limit=limit, predownload=1)
    report = json.loads(status(str(local), "--json").stdout)
    (index,) = report["indexes"]
    assert report["over_limit"] == [index["folder"]]
    assert index["over_limit_bytes"] == index["bytes_downloaded"] - limit > 0
    human = status(str(local)).stdout
    assert "OVER LIMIT  1 cache folder above their cache_limit" in human
    assert f"OVER its cache_limit by {index['over_limit_bytes'] / 1024:.1f} KiB" in human
    assert os.listdir(local / ".shardflow-cache")
