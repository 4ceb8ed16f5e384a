"""LitData folders for the tests: written by ``litdata.optimize`` in the reference venv
(``_write_litdata.py``), and a deep equality to compare what shardflow reads with what LitData reads."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

__all__ = ["SAMPLES", "WRITER", "same", "write_litdata_folders"]

WRITER = Path(__file__).with_name("_write_litdata.py")
SAMPLES = 60


def write_litdata_folders(
    python: Path, out: Path, samples: int = SAMPLES, variants: tuple[str, ...] = ()
) -> Path:
    """``_write_litdata.py`` run by ``python`` (every variant, or ``variants``); skips the test when that
    python has no litdata."""
    probe = subprocess.run([str(python), "-c", "import litdata"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{python} has no litdata (the reference venv brings litdata 0.2.76)")
    result = subprocess.run(
        [str(python), str(WRITER), str(out), str(samples), *variants],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def same(a: Any, b: Any) -> bool:
    """Deep equality that tells types apart and compares arrays and tensors by dtype and values."""
    if isinstance(b, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in b)
    if isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if type(b).__name__ == "Tensor":
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())
    return type(a) is type(b) and a == b
