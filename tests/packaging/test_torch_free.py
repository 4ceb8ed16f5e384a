"""The node cache (``shardflow.dataset.cache``) and the ``shardflow cache`` commands work where torch cannot
be imported: in a fresh interpreter whose import system refuses torch, a shard is filled into a real cache
folder, reported on and cleaned, through the package and through the command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from shardflow.format import MDSWriter

# Runs in a fresh interpreter: argv[1] is the remote dataset folder, argv[2] the cache folder to fill.
SCRIPT = r"""
import contextlib, io, json, os, subprocess, sys
from pathlib import Path


class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} is made unimportable here")
        return None


sys.meta_path.insert(0, NoTorch())
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("torch imported despite the blocker")

from shardflow.dataset.cache import NodeCache, Origin, cache_clean, cache_status, open_cached
from shardflow.format import read_shards
from shardflow.storage import from_url

remote, root = sys.argv[1], Path(sys.argv[2])
store = from_url(remote)
store.download("index.json", root / "index.json")
shards = read_shards(root)
cache = NodeCache([root], limit=10**9, timeout=30)
cache.announce()
origin = Origin(root, remote, "v1", store.download)
reader = open_cached(origin, shards[0], cache)
first = reader.get(0)["id"]
reader.close()
child = subprocess.Popen([sys.executable, "-c", "pass"])
child.wait()
(root / f".{shards[1].basename}.{child.pid}-deadbeef.tmp").write_bytes(b"partial")

status = cache_status(root)
from shardflow._cli import main

with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(["cache", "status", str(root), "--json"])
command = json.loads(out.getvalue())
with contextlib.redirect_stdout(io.StringIO()) as out:
    human = main(["cache", "clean", str(root), "--dry-run"])
clean = cache_clean(root, remove_shards=True)
print(json.dumps({
    "first": first,
    "status": status,
    "command": [code, command],
    "human": [human, out.getvalue()],
    "clean": clean,
    "left": sorted(p.name for p in root.iterdir() if p.is_file()),
    "torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch"),
}))
"""


def test_cache_and_its_commands_never_import_torch(tmp_path: Path) -> None:
    remote, local = tmp_path / "remote", tmp_path / "local"
    with MDSWriter(out=str(remote), columns={"id": "int", "x": "ndarray:uint8:64"}, size_limit=1024) as w:
        for i in range(40):
            w.write({"id": i, "x": np.full(64, i, np.uint8)})
    local.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(remote), str(local)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["torch"] == [] and report["first"] == 0
    (index,) = report["status"]["indexes"]
    assert index["shards_downloaded"] == 1 and index["shards_present"] == 1 and index["shards_listed"] > 1
    assert index["limit"]["bytes"] == 10**9 and index["limit"]["pid_alive"]  # the script itself
    (temp,) = report["status"]["temporary_files"]
    assert temp["stale"] and not temp["pid_alive"]
    code, command = report["command"]
    assert code == 0 and command["indexes"] == report["status"]["indexes"]
    human_code, human = report["human"]
    assert human_code == 0 and "would remove  1 temporary file" in human
    kinds = sorted(item["kind"] for item in report["clean"]["removed"])
    assert kinds.count("shard") == 1 and kinds.count("entry") == 1 and "temporary" in kinds
    assert report["left"] == ["index.json"]  # the shard and the stale temporary file are gone
