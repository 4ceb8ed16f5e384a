"""The image benchmarks' smoke runs: each script runs end to end on tiny inputs and prints its table.

Only loaders of this environment run (no reference venv): the point is that the scripts do not rot, not
their numbers.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

# Found, not imported: the CUDA wheel of torchvision beside the CPU torch cannot be imported as it is (the
# benchmark knows how), and this process need not pay for it.
needs_torchvision = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None, reason="images_bench.py needs torchvision"
)


def run_script(script: str, args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """``benchmarks/<script>`` with its temporary folders in ``tmp``; fails with its output on an error."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        env=env, cwd=BENCHMARKS.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The markdown table's rows by their first cell (header and rule left out)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and not cells[0].startswith("---") and cells[0] not in ("loader", "shuffle"):
            rows[cells[0]] = cells[1:]
    return rows


@needs_torchvision
def test_images_bench_smoke(tmp_path: Path) -> None:
    loaders = ["imagefolder", "shardflow-thread", "shardflow-fast-thread"]
    args = ["--images", "48", "--unique", "3", "--seconds", "1", "--batch-size", "8", "--only", *loaders]
    done = run_script("images_bench.py", args, tmp_path)
    rows = table_rows(done.stdout)
    assert sorted(rows) == sorted(loaders), done.stdout
    for name in loaders:
        rate = rows[name][1]
        assert re.fullmatch(r"[\d,]+", rate) or (
            name == "shardflow-fast-thread" and "no fast path" in rate
        ), rate
    # The generated JPEGs are about ImageNet's size.
    sizes = re.search(r"quality 90: (\d+) KB on average", done.stderr)
    assert sizes is not None and 90 <= int(sizes.group(1)) <= 150, done.stderr
    assert not any(tmp_path.glob("images-bench-*")), "the run left its datasets behind"


def test_convergence_smoke(tmp_path: Path) -> None:
    args = ["--seeds", "0", "--epochs", "1", "--samples", "300", "--test", "100", "--small-block", "100"]
    done = run_script("convergence.py", args, tmp_path)
    rows = table_rows(done.stdout)
    assert sorted(rows) == sorted(["shardflow default", "py1e block 100", "no shuffle", "random permutation"])
    for cells in rows.values():
        assert 0 <= float(cells[0]) <= 100, cells
    assert "- shardflow default:" in done.stdout and "- no shuffle:" in done.stdout, done.stdout
