"""Locate the python of the mosaicml-streaming reference venv for side-by-side benchmarks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["reference_python"]

SETUP = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "setup.sh"


def reference_python() -> str | None:
    """The reference venv's python: $SHARDFLOW_REFERENCE_PYTHON, else ../shared/reference/setup.sh's."""
    explicit = os.environ.get("SHARDFLOW_REFERENCE_PYTHON")
    if explicit:
        return explicit
    if not SETUP.is_file():
        return None
    result = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return result.stdout.strip().splitlines()[-1]
