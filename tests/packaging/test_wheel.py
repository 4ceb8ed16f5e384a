"""A wheel of shardflow-format alone installs into an empty venv and writes and reads a dataset."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

ROUND_TRIP = """
import sys
from shardflow.format import LocalDataset, MDSWriter
out = sys.argv[1]
columns = {"id": "int", "text": "str", "tokens": "ndarray:uint16:4"}
import numpy as np
with MDSWriter(out=out, columns=columns, compression="zstd", hashes=["sha1"]) as writer:
    for i in range(100):
        writer.write({"id": i, "text": f"row {i}", "tokens": np.arange(4, dtype=np.uint16) + i})
dataset = LocalDataset(out)
assert len(dataset) == 100, len(dataset)
sample = dataset[42]
assert sample["id"] == 42 and sample["text"] == "row 42" and sample["tokens"].tolist() == [42, 43, 44, 45]
mods = set(sys.modules)
assert not {"torch", "numba", "PIL", "boto3"} & mods, {"torch", "numba", "PIL", "boto3"} & mods
print("ok")
"""


@pytest.mark.slow
def test_format_wheel_alone_writes_and_reads(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
         str(REPO / "packages" / "format")],
        check=True,
    )
    (wheel,) = wheels.glob("shardflow_format-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True)
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout
    names = {line.split("==")[0].lower() for line in installed.split()}
    assert names - {"pip", "setuptools"} == {"shardflow-format", "numpy", "zstandard"}, names
    result = subprocess.run(
        [str(python), "-c", ROUND_TRIP, str(tmp_path / "dataset")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
