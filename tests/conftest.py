"""Shared test fixtures: where the repository and the read-only reference data live."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository: fixtures, reference set-up, design notes (read-only)."""
    if not SHARED_DIR.is_dir():
        pytest.fail(f"{SHARED_DIR} is missing: clone the repository beside the shared/ folder")
    return SHARED_DIR


@pytest.fixture(scope="session")
def reference_python(shared_dir: Path) -> Path:
    """A python with mosaicml-streaming 0.13.0: $SHARDFLOW_REFERENCE_PYTHON, else built by
    ``../shared/reference/setup.sh`` on first use and reused (never skipped: a failure fails the test)."""
    explicit = os.environ.get("SHARDFLOW_REFERENCE_PYTHON")
    if explicit:
        return Path(explicit)
    setup = shared_dir / "reference" / "setup.sh"
    result = subprocess.run(["bash", str(setup)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"{setup} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0); os.pwrite(fd, str(os.getpid()).encode(), 0)
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_lock() -> Iterator[Callable[[Path], int]]:
    """``hold(path)``: another process takes an exclusive ``flock`` on ``path`` (writing its pid into it, as
    shardflow's lock holders do) and keeps it until the test ends; returns that process's pid."""
    holders: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append(holder)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        return holder.pid

    yield hold
    for holder in holders:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
